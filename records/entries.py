"""Record entries: build one from run logs, check it, write it, and render the tables.

An entry is a folder `<root>/<YYYY-MM-DD>_<slug>/` with the runs' logs (.txt and, for ours, .json) and
`record.json`. Every figure in record.json is recomputed from the logs beside it by `build_entry`, so
`check` can rebuild each entry and compare it with what is stored, field by field.
"""
from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import re
import shutil
from pathlib import Path

from data.atomic import atomic_write

from . import schema, stats
from .logs import MODDED, parse_log

PACKAGE = Path(__file__).resolve().parent
ENTRY_NAME = re.compile(r"^\d{4}-\d{2}-\d{2}_[A-Za-z0-9][A-Za-z0-9._-]*$")
BEGIN = "<!-- BEGIN GENERATED TABLES: `python -m records table` rewrites this part; do not edit by hand -->"
END = "<!-- END GENERATED TABLES -->"
class EntryError(ValueError):
    """An entry that cannot be made or does not hold; the message lists every reason."""


def operational(key: str) -> bool:
    """May differ between the runs of one entry (its role says so: seed, run names, checkpoints, diagnostics)."""
    return key in schema.keys_where("record_runs_may_differ")


def load_tracks(root: Path) -> dict:
    """Per-track rules from <root>/tracks.json (else the package's): {"time": {"p_threshold": 0.01}, ...}."""
    path = root / "tracks.json" if (root / "tracks.json").exists() else PACKAGE / "tracks.json"
    return json.loads(path.read_text())


def distinct(logs: list[dict], key: str) -> dict:
    """{value: [log names]} of one summary field over the runs."""
    seen: dict = {}
    for log in logs:
        seen.setdefault(log[key], []).append(Path(log["file"]).name)
    return seen


def repeated_runs(logs: list[dict]) -> list[str]:
    """One run given twice (under two file names) would make its t-test meaningless: refuse a repeated run id,
    seed or validation curve."""
    problems = []
    for key, what in (("run_id", "run id"), ("seed", "seed")):
        for value, names in distinct([log for log in logs if log[key] is not None], key).items():
            if len(names) > 1:
                problems.append(f"{', '.join(names)} share the {what} {value!r}: each run of an entry must be "
                                f"its own run")
    curves: dict = {}
    for log in logs:
        curves.setdefault(json.dumps(log["val_history"]), []).append(Path(log["file"]).name)
    problems += [f"{', '.join(names)} have identical validation curves: the same run given twice"
                 for names in curves.values() if len(names) > 1]
    return problems


def shared_config(logs: list[dict]) -> tuple[dict, list[str]]:
    """The config every run shares (operational keys dropped), and the keys on which runs differ."""
    first = {k: v for k, v in logs[0]["config"].items() if not operational(k)}
    differ = sorted({k for log in logs[1:] for k in set(first) | set(log["config"])
                     if not operational(k) and log["config"].get(k) != first.get(k)})
    return first, differ


def build_entry(logs: list[dict], *, date: str, author: str, description: str, track: str, tracks: dict,
                target: float | None = None, imported: bool = False) -> dict:
    """The record.json of these parsed runs; raises EntryError listing every reason it cannot stand.

    Runs must be complete and share format, code hash, hardware and config (seeds aside). Unless
    imported, the mean val loss must be below the target with p < the track's p_threshold.
    """
    problems = []
    if track not in tracks:
        raise EntryError(f"unknown track {track!r}; tracks are {', '.join(tracks)} (records/tracks.json)")
    if not description.strip() or "\n" in description:
        problems.append("the description must be one non-empty line")
    if imported and any(log["format"] != MODDED for log in logs):
        problems.append("import is for public modded-nanogpt logs; make entries of this repo's runs with add")
    if len(logs) < 2 and not imported:
        problems.append(f"{len(logs)} run given; a record needs at least 2 (3 or more advised) for its t-test")
    for log in logs:
        problems += [f"{Path(log['file']).name}: {p}" for p in log["problems"]]
    problems += repeated_runs(logs)
    for key, what in (("format", "log format"), ("code_hash", "code hash"), ("hardware", "hardware")):
        values = distinct(logs, key)
        if len(values) > 1:
            listed = "; ".join(f"{str(v)[:16]}: {', '.join(names)}" for v, names in values.items())
            problems.append(f"runs differ in {what} ({listed}); every run of an entry must use the same one")
    config, differ = shared_config(logs)
    if differ:
        problems.append(f"runs differ in config keys {', '.join(differ)}; only seeds and operational keys may differ")
    targets = distinct(logs, "target_val_loss")
    if target is None:
        if len(targets) > 1:
            problems.append(f"runs have different targets {sorted(targets)}; give --target")
        target = next(iter(targets))
    if problems:
        raise EntryError("\n".join(problems))
    losses = [log["final_val_loss"] for log in logs]
    times = [log["train_time_ms"] for log in logs]
    steps = [log["steps"] for log in logs]
    threshold, p = tracks[track]["p_threshold"], stats.p_below(losses, target)
    if not imported and (p is None or p >= threshold):
        problems.append(f"mean val loss {stats.mean_std(losses)['mean']:.4f} over {len(logs)} runs is not below the "
                        f"target {target} with p < {threshold} (one-sided t-test p = {p}); "
                        f"add runs or improve the change")
    if track == "steps" and not imported and any(x > target for x in losses):
        problems.append("a steps-track entry needs every run to reach the target (runs stop there)")
    if problems:
        raise EntryError("\n".join(problems))
    tokens = [log["tokens"] for log in logs if log.get("tokens") is not None]
    return {
        "date": date, "author": author, "description": description,
        "track": {"name": track, "preset": logs[0]["preset"], "target_val_loss": target, "p_threshold": threshold},
        "hardware": logs[0]["hardware"], "format": logs[0]["format"], "imported": imported,
        "code_hash": logs[0]["code_hash"], "git_commit": logs[0]["git_commit"], "preset": logs[0]["preset"],
        "config": config,
        "runs": [{"log": Path(log["file"]).name, "run_id": log["run_id"], "seed": log["seed"],
                  "final_val_loss": log["final_val_loss"], "train_time_ms": log["train_time_ms"],
                  "steps": log["steps"], "tokens": log["tokens"], "git_commit": log["git_commit"]} for log in logs],
        "val_loss": stats.mean_std(losses),
        "train_time_ms": {**stats.mean_std(times), "ci95": stats.ci95(times)},
        "steps": stats.mean_std(steps),
        "p_value": p,
        "tokens_seen": stats.mean_std(tokens)["mean"] if tokens else None,
    }


def steps_track_problems(entry: dict, name: str, entries: list[tuple[Path, dict]]) -> list[str]:
    """A steps-track entry may change only the optimizer and schedule of the oldest one of its preset and target."""
    if entry["track"]["name"] != "steps":
        return []
    same = sorted((e["date"], p.name, e) for p, e in entries
                  if e["track"]["name"] == "steps" and track_key(e) == track_key(entry))
    if not same or same[0][1] == name:
        return []
    reference, ref = same[0][2]["config"], same[0][1]
    changed = sorted(k for k in set(reference) & set(entry["config"])
                     if k not in schema.keys_where("steps_track_free") and reference[k] != entry["config"][k])
    return [f"{name}: the steps track fixes architecture, data and batch, but it changes {', '.join(changed)} "
            f"from {ref}"] if changed else []


def slugify(text: str) -> str:
    words = re.findall(r"[a-z0-9]+", text.lower())
    return "-".join(words[:6]) or "entry"


def write_entry(root: Path, entry: dict, log_files: list[Path], slug: str) -> Path:
    """Copy the logs and write record.json into <root>/<date>_<slug>/, built aside and renamed into place."""
    final = root / f"{entry['date']}_{slug}"
    if not ENTRY_NAME.match(final.name):
        raise EntryError(f"entry name {final.name!r} must look like YYYY-MM-DD_slug (letters, digits, . _ -)")
    if final.exists():
        raise EntryError(f"{final} exists already; entries are never overwritten (pick another --slug)")
    names = [f.name for f in log_files]
    if len(set(names)) != len(names):
        raise EntryError(f"two logs share a file name ({', '.join(sorted(names))}); rename one")
    tmp = root / f".{final.name}.tmp{os.getpid()}"  # callers hold locked(root): no other writer meanwhile
    try:
        for txt in log_files:
            for f in (txt, txt.with_suffix(".json")):
                if f.exists():
                    atomic_write(tmp / f.name, f.read_bytes())
        atomic_write(tmp / "record.json", json.dumps(entry, indent=1) + "\n")
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


@contextlib.contextmanager
def locked(root: Path):
    """Hold an exclusive lock on the records folder (flock on the folder itself) while entries are created and
    the tables rewritten, so concurrent writers neither lose a table row nor race on one slug."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def load_entries(root: Path, problems: list[str] | None = None) -> list[tuple[Path, dict]]:
    """(folder, record.json) of every entry folder under root. An unreadable record.json raises EntryError,
    or, given a `problems` list, is noted there and skipped."""
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and ENTRY_NAME.match(p.name)):
        try:
            found.append((folder, json.loads((folder / "record.json").read_text())))
        except (OSError, json.JSONDecodeError) as e:
            message = f"{folder.name}: record.json cannot be read ({e}); restore it or remove the folder"
            if problems is None:
                raise EntryError(message) from None
            problems.append(message)
    return found


def track_key(entry: dict) -> tuple:
    return entry["track"]["name"], entry["track"]["preset"], entry["track"]["target_val_loss"]


def fmt(x, spec: str, none: str = "–") -> str:
    return none if x is None else format(x, spec)


def table_rows(track: str, group: list[tuple[Path, dict]]) -> list[str]:
    """Markdown rows, best first (mean time, or mean steps then time), newest first among equals."""
    def key(item):
        e = item[1]
        rank = (e["train_time_ms"]["mean"],) if track == "time" else (e["steps"]["mean"], e["train_time_ms"]["mean"])
        return (*rank, -int(e["date"].replace("-", "")), item[0].name)
    rows = []
    for rank, (folder, e) in enumerate(sorted(group, key=key), 1):
        t = e["train_time_ms"]
        half = (t["ci95"][1] - t["ci95"][0]) / 2000 if t["ci95"] else None
        time = f"{t['mean'] / 1000:.1f} s" + (f" ± {half:.1f}" if half is not None else "")
        loss = f"{e['val_loss']['mean']:.4f}" + (f" ± {e['val_loss']['std']:.4f}" if e["val_loss"]["std"] else "")
        steps = f"{e['steps']['mean']:.0f}" + (f" ± {e['steps']['std']:.0f}" if e["steps"]["std"] else "")
        described = e["description"].replace("|", "\\|") + (" (imported)" if e.get("imported") else "")
        lead = [str(rank), time] if track == "time" else [str(rank), steps, time]
        cells = [*lead, loss, fmt(e["p_value"], ".2g"), str(len(e["runs"])), e["hardware"], e["date"], described,
                 f"[{folder.name}]({folder.name}/)"]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def tables(entries: list[tuple[Path, dict]]) -> str:
    """The generated README part: one table per (track, preset, target)."""
    groups: dict[tuple, list] = {}
    for folder, e in entries:
        groups.setdefault(track_key(e), []).append((folder, e))
    if not groups:
        return "No entries yet.\n"
    out = []
    order = {"time": 0, "steps": 1}
    for track, preset, target in sorted(groups, key=lambda k: (order.get(k[0], 2), k[1], k[2])):
        what = "time to" if track == "time" else "fewest steps to"
        out.append(f"### Track `{track}`: {what} val loss ≤ {target}, preset `{preset}`\n")
        lead = "| # | time (95% CI) |" if track == "time" else "| # | steps | time (95% CI) |"
        head = f"{lead} val loss (mean ± std) | p | runs | hardware | date | description | entry |"
        out += [head, "|" + "---|" * (head.count("|") - 1)]
        out += table_rows(track, groups[(track, preset, target)])
        out.append("")
    return "\n".join(out)


def readme_parts(root: Path) -> tuple[str, str | None, str]:
    """(text before, generated part or None, text after) of <root>/README.md."""
    path = root / "README.md"
    text = path.read_text() if path.exists() else "# Records\n\n"
    if BEGIN not in text or END not in text:
        return text.rstrip("\n") + "\n\n", None, ""
    before, rest = text.split(BEGIN, 1)
    generated, after = rest.split(END, 1)
    return before, generated.strip("\n") + "\n", after


def write_table(root: Path) -> Path:
    before, _, after = readme_parts(root)
    body = tables(load_entries(root))
    return atomic_write(root / "README.md", f"{before}{BEGIN}\n\n{body.rstrip()}\n\n{END}{after or chr(10)}")


def check(root: Path) -> list[str]:
    """Every inconsistency under root: each entry rebuilt from its own logs must equal its record.json."""
    problems: list[str] = []
    entries, tracks = load_entries(root, problems), load_tracks(root)
    for folder, stored in entries:
        name = folder.name
        logs_here = sorted(p.name for p in folder.glob("*.txt"))
        listed = sorted(r.get("log", "?") for r in stored.get("runs", []))
        if logs_here != listed:
            problems.append(f"{name}: record.json lists {listed} but the folder holds {logs_here}")
            continue
        try:
            logs = [parse_log(folder / n, target=stored["track"]["target_val_loss"]) for n in listed]
            rebuilt = build_entry(logs, date=stored["date"], author=stored["author"],
                                  description=stored["description"], track=stored["track"]["name"], tracks=tracks,
                                  target=stored["track"]["target_val_loss"], imported=stored.get("imported", False))
        except (EntryError, ValueError, KeyError, TypeError) as e:
            problems += [f"{name}: {line}" for line in str(e).splitlines()]
            continue
        rebuilt = json.loads(json.dumps(rebuilt))
        for key in sorted(set(rebuilt) | set(stored)):
            if rebuilt.get(key) != stored.get(key):
                problems.append(f"{name}: record.json {key} = {stored.get(key)!r} "
                                f"but the logs give {rebuilt.get(key)!r}")
        if name[:10] != stored["date"]:
            problems.append(f"{name}: the folder's date differs from record.json's date {stored['date']}")
        problems += steps_track_problems(stored, name, entries)
    _, generated, _ = readme_parts(root)
    if generated is None:
        problems.append(f"{root}/README.md has no generated tables; run `python -m records table`")
    elif generated.strip() != tables(entries).strip():
        problems.append(f"{root}/README.md tables differ from the entries; run `python -m records table`")
    return problems


def resolve_runs(spec: str, root: Path) -> list[Path]:
    """Log .txt files of an entry name, a folder, a log file or a glob pattern."""
    for candidate in (Path(spec), root / spec):
        if candidate.is_dir():
            return sorted(candidate.glob("*.txt"))
        if candidate.is_file():
            return [candidate]
    found = sorted(Path(p) for p in glob.glob(spec) if p.endswith(".txt"))
    if not found:
        raise EntryError(f"{spec!r} is not an entry, folder, log file or glob of .txt logs")
    return found
