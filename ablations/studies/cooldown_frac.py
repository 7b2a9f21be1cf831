"""Cooldown fraction: how much of training should the learning rate spend decaying linearly to 0?

A Python study file defines STUDY, a dict with the same fields as a TOML study; here the arms are
generated from a list of fractions. The first arm (the preset's 0.4) is the baseline.
"""
FRACTIONS = (0.4, 0.0, 0.2, 0.6, 0.8)

STUDY = {
    "name": "cooldown_frac",
    "description": "Fraction of steps spent in the linear cooldown: " + ", ".join(f"{f:g}" for f in FRACTIONS) + ".",
    "base": {"preset": "tiny"},
    "seeds": [0, 1, 2],
    "metric": {"kind": "val_loss_at_step"},
    "arms": {f"cooldown_{f:g}": {"cooldown_frac": f} for f in FRACTIONS},
}
