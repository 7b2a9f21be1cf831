"""The public speedrun's record history (github:KellerJordan/modded-nanogpt) as data: figures and links only.

`import_history(checkout)` reads a local checkout's two record tables and the logs they link, and
returns one table per track:
  track1       the main track, "train to val loss <= 3.28 on 8xH100 in the least time": the table under
               "World record history" in README.md, logs under records/track_1_short/
  track3_steps the step-count track ("optimization benchmark": fixed data, batch and architecture, the
               fewest steps to 3.28): the table under "Notable results history" in
               records/track_3_optimization/README.md, logs under records/track_3_optimization/results/

Which logs belong to a record: the README links one log (or a folder). A record's runs are the logs
beside the linked one that embed the same code (same `code_hash`, records/logs.py), so baseline runs
or other records' logs in the same folder are left out. A link to a README counts as a link to its
folder. A folder link takes the logs in it (or, when
it holds none, below it); if they embed more than one code, the row says so and takes none.

Per row: the README's figures (number, date, record time or steps to target), the link, and from the
logs: their count, each run's final val loss, train time and steps, the linked log's validation curve
([step, val loss, train time ms]), its steps, train time, ms/step (train time / steps), final val loss,
tokens (steps × the batch, where the code states it plainly: see tokens_per_step),
and over all the record's logs the mean final val loss and the one-sided t-test p-value of
"mean < 3.28" (records/stats.py). Rows whose logs cannot be read say why in `problems`.
No record names: records/README.md and docs/recipe.md describe them in this project's words.
"""
from __future__ import annotations

import datetime
import json
import re
import subprocess
from pathlib import Path

from data.atomic import atomic_write

from . import stats
from .logs import MODDED_TARGET, LogError, parse_log

PUBLIC_REPO = "KellerJordan/modded-nanogpt"
OUT = Path(__file__).resolve().parent / "public"
LOG_SUFFIXES = (".txt", ".log")
TRACKS = {
    "track1": {"readme": "README.md", "columns": ("#", "Record time", "Date", "Log"),
               "description": "main track: least time to val loss <= 3.28 on 8xH100"},
    "track3_steps": {"readme": "records/track_3_optimization/README.md",
                     "columns": ("#", "Steps to 3.28", "Evidence", "Date", "Log"),
                     "description": "step-count track: fewest steps to val loss <= 3.28 at fixed data, "
                                    "batch and architecture"},
}
LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)")
DURATION = re.compile(r"([\d.]+)\s*(seconds|minutes|hours)\b")
UNIT_S = {"seconds": 1, "minutes": 60, "hours": 3600}
EVIDENCE = re.compile(r"([\d.]+)\s*\(n=(\d+)\)\s*(\S*)")
PRODUCT = r"(\d+(?:\s*\*\s*\d+)*)"  # an integer or a product of integers, e.g. 8*64*1024
BATCH_RULES = (  # each: patterns whose values multiply to the tokens per step (see tokens_per_step)
    (re.compile(rf"^\s+batch_size\s*:\s*int\s*=\s*{PRODUCT}", re.M),
     re.compile(rf"^\s+sequence_length\s*:\s*int\s*=\s*{PRODUCT}", re.M)),
    (re.compile(rf"^batch_size\s*=\s*{PRODUCT}\s*$", re.M),),
)


class HistoryError(ValueError):
    """A checkout that is not the public speedrun's (or whose tables changed shape)."""


def split_row(line: str) -> list[str]:
    """Cells of a markdown table row (leading and trailing pipes optional)."""
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def find_table(text: str, columns: tuple[str, ...], where: str) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the first markdown table whose header has all `columns`."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        header = split_row(line)
        if "|" in line and all(c in header for c in columns):
            rows = []
            for row in lines[i + 2:]:
                if "|" not in row or not row.strip():
                    break
                rows.append(split_row(row))
            return header, rows
    raise HistoryError(f"{where}: no table with columns {', '.join(columns)}; is this a modded-nanogpt checkout?")


def parse_date(text: str) -> str | None:
    """ISO date from the READMEs' MM/DD/YY (track 1) or YYYY/MM/DD (track 3)."""
    for fmt in ("%m/%d/%y", "%Y/%m/%d", "%Y-%m-%d"):
        try:
            return datetime.datetime.strptime(text.strip(), fmt).date().isoformat()
        except ValueError:
            pass
    return None


def record_seconds(text: str) -> float | None:
    """'3.142 minutes' -> 188.52."""
    m = DURATION.search(text)
    return float(m.group(1)) * UNIT_S[m.group(2)] if m else None


def tokens_per_step(path: str | Path) -> int | None:
    """Tokens per step where the log's embedded code states a fixed batch in one of two plain forms:
    `batch_size : int = B` with `sequence_length : int = T` (records of 2024: B·T), or a module-level
    `batch_size = N` in tokens (the step-count track). None otherwise: later records set the batch in
    varied ways, some with a schedule over training, which this does not try to read."""
    text = Path(path).read_text(errors="replace")
    for patterns in BATCH_RULES:
        found = [p.findall(text) for p in patterns]
        if all(len(f) == 1 for f in found):
            product = 1
            for expression in (f[0] for f in found):
                for factor in expression.split("*"):
                    product *= int(factor)
            return product
    return None


def log_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in LOG_SUFFIXES)


def try_parse(path: Path) -> tuple[dict | None, str | None]:
    try:
        return parse_log(path, target=MODDED_TARGET), None
    except LogError as e:
        return None, str(e)


def record_logs(target: Path, root: Path) -> tuple[list[dict], list[str]]:
    """The parsed logs of one record (module docstring) and the problems met finding them."""
    def rel(p) -> str:
        return str(Path(p).relative_to(root))

    if target.is_file() and target.suffix not in LOG_SUFFIXES or target.name.lower() == "readme.md":
        target = target.parent  # a link to a record's README (or other notes): its folder's runs
    if target.is_file():
        anchor, error = try_parse(target)
        if anchor is None:
            return [], [f"{rel(target)}: {error.split(': ', 1)[-1]}"]
        runs = [anchor]
        if anchor["code_hash"] is not None:
            for sibling in log_files(target.parent):
                if sibling != target:
                    log, _ = try_parse(sibling)
                    if log is not None and log["code_hash"] == anchor["code_hash"]:
                        runs.append(log)
        return runs, []
    if not target.is_dir():
        return [], [f"{rel(target)}: the linked log is not in the checkout"]
    files = log_files(target) or sorted(p for p in target.rglob("*") if p.is_file() and p.suffix in LOG_SUFFIXES)
    logs = [log for log in (try_parse(f)[0] for f in files) if log is not None]
    if not logs:
        return [], [f"{rel(target)}: no readable run log in the linked folder"]
    codes = {log["code_hash"] for log in logs}
    if len(codes) > 1:
        folders = sorted({str(Path(log["file"]).parent.relative_to(target)) for log in logs})
        return [], [f"{rel(target)}: the folder holds runs of {len(codes)} different codes (in {', '.join(folders)}); "
                    f"no single set of record runs"]
    return logs, []


def log_figures(runs: list[dict], root: Path) -> dict:
    """Figures of the linked log (the first run) and, over all runs, the val-loss mean and p-value."""
    first = runs[0]
    losses = [r["final_val_loss"] for r in runs]
    train_ms = first["train_time_ms"]
    per_step = tokens_per_step(first["file"])
    row = {"logs": len(runs),
           "runs": [{"file": str(Path(r["file"]).relative_to(root)), "final_val_loss": r["final_val_loss"],
                     "train_time_s": None if r["train_time_ms"] is None else round(r["train_time_ms"] / 1000, 3),
                     "steps": r["steps"]} for r in runs],
           "val_history": [[step, loss, None if ms is None else round(ms)] for step, loss, ms in first["val_history"]],
           "steps": first["steps"], "tokens": per_step * first["steps"] if per_step and first["steps"] else None,
           "train_time_s": None if train_ms is None else round(train_ms / 1000, 3),
           "ms_per_step": None if train_ms is None or not first["steps"] else round(train_ms / first["steps"], 2),
           "final_val_loss": first["final_val_loss"], "hardware": first["hardware"],
           "val_loss_mean": None, "val_loss_std": None, "p_value": None, "train_time_s_mean": None}
    if len(runs) > 1:
        summary = stats.mean_std(losses)
        row.update(val_loss_mean=round(summary["mean"], 5), val_loss_std=round(summary["std"], 5),
                   p_value=stats.p_below(losses, MODDED_TARGET))
        times = [r["train_time_ms"] for r in runs if r["train_time_ms"] is not None]
        if len(times) == len(runs):
            row["train_time_s_mean"] = round(stats.mean_std(times)["mean"] / 1000, 3)
    return row


def links(cell: str) -> dict[str, str]:
    """{'log': target, 'pr': url} from a README cell like '[log](path),[PR](url)'."""
    return {text.lower(): url for text, url in LINK.findall(cell)}


def repo_commit(checkout: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def track_rows(checkout: Path, track: str, commit: str | None) -> list[dict]:
    spec = TRACKS[track]
    readme = checkout / spec["readme"]
    if not readme.is_file():
        raise HistoryError(f"{checkout}: no {spec['readme']}; give the root of a modded-nanogpt checkout")
    header, table = find_table(readme.read_text(errors="replace"), spec["columns"], str(readme))
    col = {name: header.index(name) for name in spec["columns"]}
    base_url = f"https://github.com/{PUBLIC_REPO}/blob/{commit or 'master'}/"
    rows, seen = [], set()
    for cells in table:
        cells += [""] * (len(header) - len(cells))
        number = int(cells[col["#"]]) if cells[col["#"]].isdigit() else None
        cell_links = links(cells[col["Log"]])
        row = {"number": number, "retiming": number in seen, "date": parse_date(cells[col["Date"]])}
        seen.add(number)
        if track == "track1":
            seconds = record_seconds(cells[col["Record time"]])
            row["record_time_s"] = None if seconds is None else round(seconds, 3)
        else:
            steps = re.match(r"(\d+)", cells[col["Steps to 3.28"]])
            evidence = EVIDENCE.match(cells[col["Evidence"]])
            row.update(steps_to_target=int(steps.group(1)) if steps else None,
                       new_best="(!)" in cells[col["Steps to 3.28"]],
                       readme_val_loss=float(evidence.group(1)) if evidence else None,
                       readme_n=int(evidence.group(2)) if evidence else None,
                       readme_mark=(evidence.group(3) or None) if evidence else None)
        log_link = cell_links.get("log")
        target = (readme.parent / log_link).resolve() if log_link and "://" not in log_link else None
        row["log_url"] = base_url + str(target.relative_to(checkout.resolve())) if target else None
        row["pr_url"] = cell_links.get("pr")
        problems = []
        if target is None:
            problems.append("the README links no log")
            runs = []
        else:
            runs, problems = record_logs(target, checkout.resolve())
        row.update(log_figures(runs, checkout.resolve()) if runs else {"logs": 0})
        row["problems"] = problems + [f"{Path(r['file']).name}: {p}" for r in runs[:1] for p in r["problems"]]
        rows.append(row)
    return rows


def import_history(checkout: str | Path) -> dict[str, dict]:
    """{track: {"source": ..., "rows": [...]}} for both tracks of a checkout (module docstring)."""
    checkout = Path(checkout)
    if not checkout.is_dir():
        raise HistoryError(f"{checkout}: not a folder; clone the public speedrun (github:{PUBLIC_REPO}) "
                           f"and give its path")
    commit = repo_commit(checkout)
    return {track: {"source": {"repo": PUBLIC_REPO, "commit": commit, "readme": spec["readme"]},
                    "track": spec["description"], "target_val_loss": MODDED_TARGET,
                    "made_by": "python -m records import-history PATH",
                    "rows": track_rows(checkout, track, commit)} for track, spec in TRACKS.items()}


def write_history(history: dict[str, dict], out: Path = OUT) -> list[Path]:
    return [atomic_write(out / f"{track}.json", json.dumps(data, indent=1, ensure_ascii=False) + "\n")
            for track, data in history.items()]


def load_history(track: str, folder: Path = OUT) -> dict:
    path = folder / f"{track}.json"
    if not path.is_file():
        raise HistoryError(f"{path}: missing; run python -m records import-history PATH (a modded-nanogpt checkout)")
    return json.loads(path.read_text())


def record_runs(number: int, track: str = "track1", folder: Path = OUT) -> tuple[dict, list[dict]]:
    """(row, runs as records/logs.py summaries: train_time_ms, final_val_loss, steps, target_val_loss, and
    for the linked log its val_history) of public
    record `number` (its first row: the original, not a re-timing), from the committed history."""
    rows = [r for r in load_history(track, folder)["rows"] if r["number"] == number]
    if not rows:
        raise HistoryError(f"no public record #{number} in {folder / (track + '.json')}")
    row = rows[0]
    if not row["logs"]:
        raise HistoryError(f"public record #{number} has no readable log ({'; '.join(row['problems'])})")
    runs = [{"file": r["file"], "final_val_loss": r["final_val_loss"], "steps": r["steps"],
             "train_time_ms": None if r["train_time_s"] is None else r["train_time_s"] * 1000,
             "target_val_loss": MODDED_TARGET, "val_history": row["val_history"] if i == 0 else None}
            for i, r in enumerate(row["runs"])]
    return row, runs
