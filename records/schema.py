"""The trainer's config schema as its command line prints it (`python train_gpt.py --help=json`).

records/ and ablations/ never import the trainer: what each config key is for (its role, and what the
role allows) is read from here, so both agree with the trainer's own resume rules.
"""
from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAINER = REPO / "train_gpt.py"


class SchemaError(RuntimeError):
    """The trainer could not print its schema."""


@functools.cache
def trainer_schema() -> dict:
    """{"keys": {name: {type, default, role, valid, help}}, "roles": {role: {...}}, "presets": {...}}."""
    result = subprocess.run([sys.executable, str(TRAINER), "--help=json"], capture_output=True, text=True, cwd=REPO)
    try:
        schema = json.loads(result.stdout)
    except json.JSONDecodeError:
        schema = None
    if result.returncode or not isinstance(schema, dict) or "keys" not in schema:
        raise SchemaError(f"could not read the config schema from `python train_gpt.py --help=json` "
                          f"(exit {result.returncode}): {result.stderr.strip()[-500:]}")
    return schema


def keys_where(allowed: str, value=True) -> set[str]:
    """Config keys whose role has `allowed` == value, e.g. keys_where("record_runs_may_differ")."""
    schema = trainer_schema()
    return {k for k, spec in schema["keys"].items() if schema["roles"][spec["role"]][allowed] == value}
