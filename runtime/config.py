"""The config schema: each field of the trainer's Config declares its help text, its role and its
valid range once; parsing `--key=value`, the checks, `--help` and `--help=json` all derive from it.

A role answers every "may this key differ?" question in one place (ROLES below): on resume, between
the runs of one record entry, on the steps track, in an ablation's run hash, and which keys the
ablation launcher sets itself. `records/` and `ablations/` read the same table through
`python train_gpt.py --help=json`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import math
import re
from dataclasses import dataclass, field


class ConfigError(ValueError):
    """A bad command line or config value; the trainer prints it as one line and exits with status 2."""


@dataclass(frozen=True)
class Role:
    meaning: str
    on_resume: str            # "refuse": never, "force": only with --force_resume, "free": may differ
    record_runs_may_differ: bool
    steps_track_free: bool    # a steps-track entry may change it (the optimizer and its schedule)
    set_by_launcher: bool     # ablations set it for every run; a study may not
    hashed: bool              # part of an ablation run's id (it can change what the run computes)


ROLES = {
    "shape": Role("the model's tensor shapes: a checkpoint of another shape cannot be loaded", "refuse",
                  False, False, False, True),
    "recipe": Role("what is trained: model tricks that keep the shapes, the batch", "force", False, False, False, True),
    "optimizer": Role("optimizers and their hyperparameters", "force", False, True, False, True),
    "schedule": Role("steps, learning-rate schedule, validation cadence, stopping", "force", False, True, False, True),
    "data": Role("which tokens are read", "force", False, False, False, True),
    "eval": Role("how the score is measured: validation tokens and target", "force", False, False, False, True),
    "system": Role("how the same computation is run: device, compilation, micro-batching", "force",
                   False, True, False, True),
    "seed": Role("the random seed", "force", True, True, True, False),
    "run": Role("names and places one run: ids, folders, resume, logging destination", "free", True, True, True, False),
    "operational": Role("how a run is operated: checkpoint cadence, failure policy", "free", True, True, False, False),
    "diagnostic": Role("extra measurements and testing aids", "free", True, True, False, False),
}


@dataclass(frozen=True)
class Valid:
    """A valid range: numbers in [low, high] (None: unbounded; finite always), one of `choices`, or text
    matching the regular expression `pattern` (described in words by `meaning`)."""

    low: float | None = None
    high: float | None = None
    choices: tuple = ()
    pattern: str = ""
    meaning: str = ""

    def problem(self, value) -> str | None:
        if self.choices:
            return None if value in self.choices else f"one of {', '.join(map(str, self.choices))}"
        if self.pattern:
            return None if isinstance(value, str) and re.fullmatch(self.pattern, value) else self.meaning
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value) or (self.low is not None and value < self.low) or \
                    (self.high is not None and value > self.high):
                return self.describe()
        return None

    def describe(self) -> str:
        if self.choices:
            return " | ".join(map(str, self.choices))
        if self.pattern:
            return self.meaning
        low = "-inf" if self.low is None else number(self.low)
        high = "inf" if self.high is None else number(self.high)
        return f"finite, in [{low}, {high}]"


def number(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def at_least(low: float) -> Valid:
    return Valid(low=low)


def between(low: float, high: float) -> Valid:
    return Valid(low=low, high=high)


def one_of(*choices) -> Valid:
    return Valid(choices=choices)


def matching(pattern: str, meaning: str) -> Valid:
    return Valid(pattern=pattern, meaning=meaning)


ANY = Valid()
# a run id names files and folders (<log_dir>/<run_id>.txt, <checkpoint_dir>/<run_id>/): no separators, no '..'
RUN_ID = matching(r"(?:[A-Za-z0-9_-][A-Za-z0-9._-]{0,127})?",
                  "empty (a generated id) or up to 128 letters, digits, '.', '_' and '-', not starting with '.'")


def knob(default, help: str, role: str, valid: Valid = ANY):
    """A Config field with its help text, role (a key of ROLES) and valid range."""
    assert role in ROLES, role
    return field(default=default, metadata={"help": help, "role": role, "valid": valid})


def role_of(f: dataclasses.Field) -> str:
    return f.metadata["role"]


def keys_where(config_cls, predicate) -> set[str]:
    """Names of the fields whose Role satisfies predicate, e.g. keys_where(Config, lambda r: r.on_resume == "free")."""
    return {f.name for f in dataclasses.fields(config_cls) if predicate(ROLES[role_of(f)])}


def closest(name: str, choices) -> str:
    match = difflib.get_close_matches(name, list(choices), n=1)
    return f"; did you mean {match[0]!r}?" if match else ""


def parse_value(f: dataclasses.Field, text: str):
    kind = f.type
    if kind == "bool":
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"--{f.name} expects a bool (true/false), got {text!r}")
    try:
        return {"int": int, "float": float, "str": str}[kind](text)
    except ValueError:
        raise ConfigError(f"--{f.name} expects {'an' if kind == 'int' else 'a'} {kind}, got {text!r}") from None


def parse_assignments(key: str, text: str) -> dict:
    """'betas=0.9,0.99 eps=1e-8 nesterov=false' → {"betas": (0.9, 0.99), "eps": 1e-8, "nesterov": False}."""
    def value(v: str):
        if "," in v:
            return tuple(value(x) for x in v.split(","))
        if v.lower() in ("true", "false"):
            return v.lower() == "true"
        for kind in (int, float):
            with contextlib.suppress(ValueError):
                return kind(v)
        return v
    pairs = [item.partition("=") for item in text.split()]
    bad = [name for name, eq, v in pairs if not (name and eq and v)]
    if bad:
        raise ConfigError(f"--{key}={text!r}: write hyperparameters as 'name=value name=value' ({bad[0]!r} is not)")
    own = [name for name, _, _ in pairs if name in ("optimizer", "lr")]  # each has its own checked key
    if own:
        raise ConfigError(f"--{key} sets {own[0]}: use --{'opt' if own[0] == 'optimizer' else 'lr'}_{key[3:]}")
    return {name: value(v) for name, _, v in pairs}


def check_ranges(cfg) -> None:
    """Every value within its field's declared range (one line naming the key, the value and the range)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        wrong = f.metadata["valid"].problem(value)
        if wrong:
            raise ConfigError(f"--{f.name}={value!r} is out of range: it must be {wrong}")


def parse_overrides(config_cls, argv: list[str], presets: dict) -> tuple[str | None, dict]:
    """(--preset name or None, {key: value}) from --preset=NAME and --key=value arguments."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    preset, overrides = None, {}
    for arg in argv:
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}: use --key=value (see --help)")
        key, has_value, text = arg[2:].partition("=")
        if key == "preset":
            if text not in presets:
                raise ConfigError(f"unknown preset {text!r}{closest(text, presets)} (presets: {', '.join(presets)})")
            preset = text
            continue
        if key not in fields:
            raise ConfigError(f"unknown config key --{key}{closest(key, fields)} (see --help)")
        if not has_value and fields[key].type != "bool":
            raise ConfigError(f"--{key} needs a value: --{key}=VALUE")
        overrides[key] = parse_value(fields[key], text) if has_value else True
    return preset, overrides


def help_text(config_cls, doc: str, presets: dict) -> str:
    lines = [doc.strip(), "", f"presets: {', '.join(presets)}", "",
             "keys (--key=value; `--help=json` prints this schema as JSON):"]
    for f in dataclasses.fields(config_cls):
        lines.append(f"  --{f.name:<22} {f.type:<5} default {f.default!r:<14} [{role_of(f)}] {f.metadata['help']}")
    return "\n".join(lines)


def help_json(config_cls, presets: dict) -> str:
    """The schema as JSON: every key's type, default, role, valid range (in words, and as the fields of Valid)
    and help; the roles; the presets."""
    keys = {f.name: {"type": f.type, "default": f.default, "role": role_of(f), "valid": f.metadata["valid"].describe(),
                     "range": dataclasses.asdict(f.metadata["valid"]), "help": f.metadata["help"]}
            for f in dataclasses.fields(config_cls)}
    roles = {name: dataclasses.asdict(role) for name, role in ROLES.items()}
    return json.dumps({"keys": keys, "roles": roles, "presets": presets}, indent=1)
