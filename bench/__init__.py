"""Benchmarks that print what they measured, on which device, with which command."""
