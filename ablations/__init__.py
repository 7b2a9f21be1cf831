"""Ablation studies: a study file (one change, arms × seeds, a metric, optionally a ladder of model
sizes) → a plan of `train_gpt.py` runs → launches (local, torchrun, Slurm array) → a report with plots.

    python -m ablations run ablations/studies/rotary_off.toml      # runs not yet done, arms interleaved
    python -m ablations report ablations/studies/rotary_off.toml   # table, p-values, PNGs

See ablations/README.md for the file format.
"""
