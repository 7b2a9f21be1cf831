"""Study files → a plan of runs.

A study names a base (a trainer preset or a record entry), overrides common to every run, two or
more arms (each a set of config changes; the first, or the one named by `baseline`, is the
reference), seeds, a metric, and optionally a ladder of model sizes. Every run is one
`train_gpt.py` command line. Its id is `<hash>-s<seed>`, where the hash covers the preset and every
`--key=value` that changes results, so a finished run is recognised when the study is run again.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import re
import runpy
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from optimizers import schedule as scaling
from records import schema
from runtime.config import Valid

REPO = Path(__file__).resolve().parents[1]
METRICS = {"val_loss_at_step": "step", "val_loss_at_time": "seconds", "time_to_target": "target",
           "steps_to_target": "target"}
STUDY_KEYS = ("name", "description", "base", "overrides", "arms", "baseline", "seeds", "metric", "also", "ladder")
LADDER_KEYS = ("rungs", "lr_rule", "base_batch_tokens", "warmup_steps", "cooldown_steps")
NAME = re.compile(r"[\w.-]+")


class StudyError(ValueError):
    """A study file that cannot be planned; the message names the file, the field and the fix."""


def closest(name: str, choices) -> str:
    match = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def canonical(value):
    """A config value in one spelling: integral floats become ints (0.0 → 0), so hashes agree."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def cli_value(value) -> str:
    """The text of --key=value: booleans as true/false, numbers as Python writes them."""
    return str(value).lower() if isinstance(value, bool) else str(value)


@dataclass(frozen=True)
class Metric:
    """What a run scores (lower is better): val loss at a step (None: the final one), val loss at a
    train-time budget in seconds, or the seconds or steps of training until val loss ≤ target (the first
    validation at or below it: its resolution is val_every)."""

    kind: str
    step: int | None = None
    seconds: float | None = None
    target: float | None = None

    def label(self) -> str:
        if self.kind == "val_loss_at_step":
            return "final val loss" if self.step is None else f"val loss at step {self.step}"
        if self.kind == "val_loss_at_time":
            return f"val loss at {self.seconds:g} s of training"
        if self.kind == "steps_to_target":
            return f"steps to val loss ≤ {self.target:g}"
        return f"train time to val loss ≤ {self.target:g} (s)"


@dataclass(frozen=True)
class Run:
    """One planned trainer run: an arm at a seed (and a ladder rung)."""

    index: int
    arm: str
    seed: int
    rung: str | None
    preset: str
    config: dict

    @property
    def config_hash(self) -> str:
        """First 12 hex digits of sha256 over the preset and the result-changing config, keys sorted."""
        hashed = {k: v for k, v in self.config.items() if k not in unhashed_keys()}
        text = json.dumps({"preset": self.preset, "config": hashed}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def run_id(self) -> str:
        return f"{self.config_hash}-s{self.seed}"

    @property
    def label(self) -> str:
        rung = f" rung {self.rung}" if self.rung else ""
        return f"arm {self.arm}{rung} seed {self.seed}"

    def trainer_args(self) -> list[str]:
        """--preset and every --key=value of the run, seed and launcher keys excepted."""
        return [f"--preset={self.preset}", *(f"--{k}={cli_value(v)}" for k, v in sorted(self.config.items()))]


@dataclass
class Study:
    name: str
    description: str
    path: Path
    preset: str
    base_config: dict
    record: Path | None
    overrides: dict
    arms: dict[str, dict]
    baseline: str
    seeds: list[int]
    metric: Metric
    rungs: list[tuple[str, dict]] = field(default_factory=list)
    also: list[Metric] = field(default_factory=list)  # reported beside the metric, from the same runs

    @property
    def is_ladder(self) -> bool:
        return bool(self.rungs)

    def plan(self) -> list[Run]:
        """Every run, interleaved so arms progress together: for rung, for seed, for arm."""
        runs = []
        for rung, rung_config in self.rungs or [(None, {})]:
            for seed in self.seeds:
                for arm, changes in self.arms.items():
                    config = {**self.base_config, **self.overrides, **self.metric_config(), **rung_config, **changes}
                    config = {k: canonical(v) for k, v in config.items()}
                    runs.append(Run(len(runs), arm, seed, rung, self.preset, config))
        by_id: dict[str, Run] = {}
        for run in runs:
            twin = by_id.setdefault(run.run_id, run)
            if twin is not run:
                raise StudyError(f"{self.path}: arms {twin.arm!r} and {run.arm!r} give the same config"
                                 f"{' at rung ' + run.rung if run.rung else ''}; make each arm change something")
        return runs

    def metric_config(self) -> dict:
        """time_to_target and steps_to_target stop each run at the target; the loss metrics train every run to
        its last step (stop_at_target off) unless the overrides say otherwise."""
        if self.metric.kind in ("time_to_target", "steps_to_target"):
            return {"target_val_loss": self.metric.target, "stop_at_target": True}
        return {} if "stop_at_target" in self.overrides else {"stop_at_target": False}

    def changes(self, arm: str) -> str:
        """The arm's config changes as `key=value, ...` ('none' for an empty arm)."""
        return ", ".join(f"{k}={cli_value(v)}" for k, v in self.arms[arm].items()) or "none"


# ----------------------------------------------------------------------------------------------
# Reading a study file (TOML, or Python defining a STUDY dict).

def read_file(path: Path) -> dict:
    if not path.is_file():
        raise StudyError(f"no study file at {path}; shipped studies are in ablations/studies/")
    if path.suffix == ".toml":
        try:
            return tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise StudyError(f"{path}: not valid TOML: {e}") from None
        except UnicodeDecodeError as e:
            raise StudyError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
                             f"save the study file as UTF-8") from None
    if path.suffix == ".py":
        study = runpy.run_path(str(path)).get("STUDY")
        if not isinstance(study, dict):
            raise StudyError(f"{path}: a Python study file must define STUDY = {{...}} (a dict like the TOML tables)")
        return study
    raise StudyError(f"{path}: a study file is .toml or .py, not {path.suffix or 'extensionless'}")


def check_keys(where: str, table: dict, allowed) -> None:
    for key in table:
        if key not in allowed:
            raise StudyError(f"{where}: unknown field {key!r}{closest(key, allowed)}; fields: {', '.join(allowed)}")


def check_config_keys(where: str, config: dict) -> None:
    if not isinstance(config, dict):
        raise StudyError(f"{where} must be a table of config keys, got {config!r}")
    for key in config:
        if key in runner_keys():
            raise StudyError(f"{where}: {key!r} is set by the launcher for every run; remove it "
                             f"(seeds go in `seeds`, wandb in `python -m ablations run --wandb`)")
        if key == "preset":
            raise StudyError(f"{where}: the preset belongs in `base = {{preset = ...}}`")


def load_record(entry: str, where: str) -> tuple[Path, str, dict]:
    """A record entry's (record.json path, preset, config) for use as a study's base."""
    path = Path(entry)
    path = path if path.is_absolute() else REPO / path
    if path.is_dir():
        path = path / "record.json"
    if not path.is_file():
        raise StudyError(f"{where}: no record at {path}; give a folder under records/ that holds record.json")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise StudyError(f"{path}: not valid JSON ({e}); regenerate it with `python -m records add`") from None
    missing = [k for k, kind in (("preset", str), ("config", dict)) if not isinstance(record.get(k), kind)]
    if missing:
        raise StudyError(f"{path} lacks {' and '.join(missing)}, which a study's base needs; "
                         f"re-add the entry with a current `python -m records add`")
    config = {k: v for k, v in record["config"].items() if k not in runner_keys() | unhashed_keys()}
    return path, record["preset"], config


def ladder_rungs(where: str, ladder: dict, common: dict) -> list[tuple[str, dict]]:
    """Each rung's config: its own keys, the batch-size lr rule, and warmup/cooldown as fractions of its
    steps (num_iterations of the rung, else of `common`: the base config and overrides)."""
    if not isinstance(ladder, dict):
        raise StudyError(f"{where} must be a table: [ladder] with lr_rule, base_batch_tokens, rungs, ...")
    check_keys(where, ladder, LADDER_KEYS)
    rule = ladder.get("lr_rule", "none")
    if rule not in scaling.LR_RULES:
        raise StudyError(f"{where}: lr_rule {rule!r} is not one of {', '.join(scaling.LR_RULES)}")
    if rule != "none" and "base_batch_tokens" not in ladder:
        raise StudyError(f"{where}: lr_rule {rule!r} needs base_batch_tokens, the batch the learning rates "
                         f"were tuned at")
    rungs = ladder.get("rungs")
    if not isinstance(rungs, list) or not rungs or not all(isinstance(r, dict) for r in rungs):
        raise StudyError(f"{where}: `rungs` must be a non-empty list of tables like "
                         f"{{name = ..., n_layer = ..., model_dim = ...}}")
    out = []
    for i, rung in enumerate(rungs):
        rung = dict(rung)
        name = str(rung.pop("name", f"rung{i}"))
        check_config_keys(f"{where}.rungs[{i}]", rung)
        if rule != "none":
            rung.update(lr_scaling=rule, lr_base_batch_tokens=ladder["base_batch_tokens"])
        for length, frac in (("warmup_steps", "warmup_frac"), ("cooldown_steps", "cooldown_frac")):
            if length in ladder:
                steps = rung.get("num_iterations", common.get("num_iterations"))
                if not isinstance(steps, int) or steps < 1:
                    raise StudyError(f"{where}: {length} needs num_iterations (a positive integer) in the rung "
                                     f"{name!r} or in overrides")
                rung[frac] = min(ladder[length] / steps, 1.0)
        out.append((name, rung))
    if len({name for name, _ in out}) != len(out):
        raise StudyError(f"{where}: rung names must differ")
    return out


def parse_metric(where: str, table) -> Metric:
    if not isinstance(table, dict) or table.get("kind") not in METRICS:
        raise StudyError(f"{where}: `metric` needs kind = one of {', '.join(METRICS)}, e.g. "
                         f"metric = {{kind = \"val_loss_at_step\"}} (the final step)")
    kind, needed = table["kind"], METRICS[table["kind"]]
    check_keys(where, table, ("kind", needed))
    if needed not in table and kind != "val_loss_at_step":
        raise StudyError(f"{where}: metric {kind} needs `{needed}`")
    value = table.get(needed)
    number = (int,) if needed == "step" else (int, float)
    if value is not None and (isinstance(value, bool) or not isinstance(value, number) or value < 0):
        raise StudyError(f"{where}: `{needed}` must be a non-negative {'integer' if needed == 'step' else 'number'}, "
                         f"got {value!r}")
    return Metric(kind, **{needed: value})


def load(path: str | Path) -> Study:
    """Parse and check a study file (no trainer involved; see `check_against_trainer`)."""
    path = Path(path)
    data = read_file(path)
    where = str(path)
    check_keys(where, data, STUDY_KEYS)
    name = str(data.get("name", path.stem))
    if not NAME.fullmatch(name):
        raise StudyError(f"{where}: name {name!r} names folders: use letters, digits, '.', '_' and '-' only")
    base = data.get("base", {})
    if not isinstance(base, dict) or len(base) != 1 or not ({"preset", "record"} & base.keys()):
        raise StudyError(f"{where}: `base` must be {{preset = \"tiny\"}} or {{record = \"records/<entry>\"}}")
    record, preset, base_config = None, base.get("preset"), {}
    if "record" in base:
        record, preset, base_config = load_record(base["record"], f"{where}: base")
    overrides = data.get("overrides", {})
    check_config_keys(f"{where}: overrides", overrides)
    arms = data.get("arms")
    if not isinstance(arms, dict) or len(arms) < 2:
        raise StudyError(f"{where}: `arms` needs at least two named tables, e.g. [arms.baseline] and [arms.variant]")
    for arm, changes in arms.items():
        check_config_keys(f"{where}: arm {arm!r}", changes)
    metric = parse_metric(f"{where}: metric", data.get("metric"))
    also = data.get("also", [])
    if not isinstance(also, list):
        raise StudyError(f"{where}: `also` is a list of metric tables, e.g. also = [{{kind = \"steps_to_target\", "
                         f"target = 1.8}}]")
    also = [parse_metric(f"{where}: also[{i}]", table) for i, table in enumerate(also)]
    if metric.kind in ("time_to_target", "steps_to_target") and \
            any("target_val_loss" in c for c in [overrides, *arms.values()]):
        raise StudyError(f"{where}: the metric's target sets target_val_loss for every run; "
                         f"remove it from overrides/arms")
    baseline = data.get("baseline", next(iter(arms)))
    if baseline not in arms:
        raise StudyError(f"{where}: baseline {baseline!r} is not an arm{closest(baseline, arms)}")
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds) or \
            not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise StudyError(f"{where}: `seeds` must be a list of distinct integers, e.g. seeds = [0, 1, 2]")
    ladder = data.get("ladder")
    rungs = ladder_rungs(f"{where}: ladder", ladder, {**base_config, **overrides}) if ladder is not None else []
    return Study(name=name, description=str(data.get("description", "")).strip(),
                 path=path, preset=preset, base_config=base_config, record=record, overrides=overrides,
                 arms=arms, baseline=baseline, seeds=seeds, metric=metric, rungs=rungs, also=also)


# ----------------------------------------------------------------------------------------------
# The trainer's schema (`train_gpt.py --help=json`): its keys, their roles, its presets.

def runner_keys() -> set[str]:
    """Keys the launcher sets for every run (seed, run id, folders, resume, wandb); a study may not set them."""
    return schema.keys_where("set_by_launcher")


def unhashed_keys() -> set[str]:
    """Keys that do not change what a run computes: passed on, but left out of the run's hash."""
    return schema.keys_where("hashed", False)


def trainer_keys() -> tuple[dict[str, dict], tuple[str, ...]]:
    """({key: {type, range, ...}}, presets) of the trainer's schema."""
    try:
        found = schema.trainer_schema()
    except schema.SchemaError as e:
        raise StudyError(str(e)) from None
    return found["keys"], tuple(found["presets"])


TYPE_CHECKS = {"bool": lambda v: isinstance(v, bool), "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
               "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
               "str": lambda v: isinstance(v, str)}


def check_against_trainer(study: Study, runs: list[Run]) -> None:
    """Every preset and key must exist in the trainer and every value have its type and lie in its valid range,
    before any run starts."""
    keys, presets = trainer_keys()
    if study.preset not in presets:
        raise StudyError(f"{study.path}: unknown preset {study.preset!r}{closest(study.preset, presets)}; "
                         f"presets: {', '.join(presets)}")
    for run in runs:
        for key, value in run.config.items():
            if key not in keys:
                raise StudyError(f"{study.path}: unknown config key {key!r}{closest(key, keys)} "
                                 f"(`python train_gpt.py --help` lists them)")
            kind, valid = keys[key]["type"], keys[key]["range"]
            if not TYPE_CHECKS[kind](value):
                raise StudyError(f"{study.path}: {key} = {value!r} should be of type {kind}")
            wrong = Valid(**{**valid, "choices": tuple(valid["choices"])}).problem(value)
            if wrong:
                raise StudyError(f"{study.path}: {key} = {value!r} is out of range (in arm {run.arm!r}): "
                                 f"it must be {wrong}")
