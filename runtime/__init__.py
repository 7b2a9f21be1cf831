"""Run machinery below the trainer: config schema, distributed setup, environment capture, the run log,
checkpoints, stop signals, and the spectral statistics the log records. Nothing here imports the trainer."""
