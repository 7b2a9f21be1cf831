"""Downstream evaluations of train_gpt.py checkpoints."""
