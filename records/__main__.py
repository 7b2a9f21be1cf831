"""python -m records add|import|table|check|compare|parse|import-history|plot — see records/README.md."""
from __future__ import annotations

import argparse
import datetime
import getpass
import json
import re
import subprocess
import sys
from pathlib import Path

from . import public, stats
from .entries import (PACKAGE, EntryError, build_entry, check, load_entries, load_tracks, locked, resolve_runs,
                      slugify, steps_track_problems, write_entry, write_table)
from .logs import MODDED_TARGET, LogError, first_at_or_below, parse_log


def default_author() -> str:
    try:
        name = subprocess.run(["git", "config", "user.name"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        name = ""
    return name or getpass.getuser()


def add(args, imported: bool) -> int:
    root = Path(args.root)
    files = [Path(f).with_suffix(".txt") for f in args.logs]
    logs = [parse_log(f, target=args.target) for f in files]
    date = args.date or datetime.date.today().isoformat()
    entry = build_entry(logs, date=date, author=args.author or default_author(), description=args.description,
                        track=args.track, tracks=load_tracks(root), target=args.target, imported=imported)
    slug = args.slug or slugify(args.description)
    with locked(root):
        conflicts = steps_track_problems(entry, f"{date}_{slug}", load_entries(root))
        if conflicts:
            raise EntryError("\n".join(conflicts))
        folder = write_entry(root, entry, files, slug)
        write_table(root)
    t, p = entry["train_time_ms"], entry["p_value"]
    ci = f" (95% CI {t['ci95'][0] / 1000:.1f}–{t['ci95'][1] / 1000:.1f} s)" if t["ci95"] else ""
    print(f"{folder}: {len(logs)} runs, val loss {entry['val_loss']['mean']:.4f} "
          f"(p = {p if p is None else format(p, '.3g')} below {entry['track']['target_val_loss']}), "
          f"time {t['mean'] / 1000:.1f} s{ci}; {root / 'README.md'} updated")
    return 0


def describe(label: str, spec: str, logs: list[dict]) -> str:
    times = [log["train_time_ms"] / 1000 for log in logs if log["train_time_ms"] is not None]
    loss = stats.mean_std([log["final_val_loss"] for log in logs])
    steps = stats.mean_std([log["steps"] for log in logs])
    time_text = "time not logged"
    if times:
        t, ci = stats.mean_std(times), stats.ci95(times)
        time_text = f"time {t['mean']:.2f} s" + (f" (95% CI {ci[0]:.2f}–{ci[1]:.2f})" if ci else "")
    return (f"{label}: {spec}: {len(logs)} runs, {time_text}, val loss {loss['mean']:.4f}"
            + (f" ± {loss['std']:.4f}" if loss["std"] is not None else "") + f", steps {steps['mean']:.1f}")


PUBLIC_SPEC = re.compile(r"^public(?::(steps))?:(\d+)$")


def load_runs(spec: str, root: Path, history: Path = public.OUT) -> list[dict]:
    """Run summaries of an entry, folder, log or glob (records/logs.py), or of a public record:
    `public:N` (main track) or `public:steps:N` (step-count track), from records/public/*.json."""
    m = PUBLIC_SPEC.match(spec)
    if m:
        return public.record_runs(int(m.group(2)), "track3_steps" if m.group(1) else "track1", history)[1]
    return [parse_log(f) for f in resolve_runs(spec, root)]


def curve(logs: list[dict]) -> dict[int, float]:
    """{step: mean val loss over the runs that validated at that step}."""
    at: dict[int, list[float]] = {}
    for log in logs:
        for step, loss, _ in log.get("val_history") or []:
            at.setdefault(step, []).append(loss)
    return {step: sum(v) / len(v) for step, v in at.items()}


def to_target(side: str, logs: list[dict], target: float) -> str:
    """One line: the steps and train time until the first validation ≤ target, mean ± 95% CI over runs."""
    hits = [h for h in (first_at_or_below(log, target) for log in logs) if h is not None]
    if not hits:
        return f"{side} to val loss ≤ {target:g}: no run gets there"
    parts = []
    for values, unit, digits in (([h[0] for h in hits], " steps", 0), ([h[1] / 1000 for h in hits if h[1] is not None], " s", 1)):
        if values:
            ci = stats.ci95(values)
            parts.append(f"{stats.mean_std(values)['mean']:.{digits}f}{unit}" +
                         (f" (95% CI {ci[0]:.{digits}f}–{ci[1]:.{digits}f})" if ci else ""))
    return (f"{side} to val loss ≤ {target:g} (its first validation there): "
            f"{' in '.join(parts)}, {len(hits)} of {len(logs)} runs")


def compare(args) -> int:
    root = Path(args.root)
    a, b = (load_runs(spec, root, Path(args.history)) for spec in (args.a, args.b))
    print(describe("A", args.a, a))
    print(describe("B", args.b, b))
    targets = sorted({x.get("target_val_loss") for x in a + b} - {None})
    if len(targets) > 1:
        print(f"note: the runs aim at different targets ({', '.join(map(str, targets))}): different tasks, so "
              f"their losses are not comparable")
    if all(x["train_time_ms"] is not None for x in a + b):
        ratio = stats.ratio_ci95([x["train_time_ms"] for x in a], [x["train_time_ms"] for x in b])
        ci = (f" (95% CI {ratio['ci95'][0]:.3f}–{ratio['ci95'][1]:.3f})" if ratio["ci95"]
              else " (no CI: need 2+ runs a side)")
        print(f"time ratio A/B {ratio['ratio']:.3f}{ci}")
    else:
        print("time ratio A/B: n/a (a log without times)")
    for key, what in (("train_time_ms", "time"), ("final_val_loss", "val loss"), ("steps", "steps")):
        values = [[x[key] for x in side if x[key] is not None] for side in (a, b)]
        p = stats.welch_p(*values)
        shown = "n/a (under 2 runs a side, or no spread)" if p is None else format(p, ".3g")
        print(f"Welch t-test on {what}: p = {shown}")
    if len(targets) == 1:
        print(to_target("A", a, targets[0]))
        print(to_target("B", b, targets[0]))
    ca, cb = curve(a), curve(b)
    common = sorted(set(ca) & set(cb))
    if common:
        print("val loss at equal steps (mean over runs that validated there):")
        print("  step      A        B      B − A")
        for step in common:
            print(f"  {step:>5}  {ca[step]:.4f}  {cb[step]:.4f}  {cb[step] - ca[step]:+.4f}")
    else:
        print("val loss at equal steps: no validation step in common")
    return 0


def import_history(args) -> int:
    history = public.import_history(args.checkout)
    for path in public.write_history(history, Path(args.out)):
        rows = history[path.stem]["rows"]
        unread = [r["number"] for r in rows if not r["logs"]]
        print(f"{path}: {len(rows)} rows, {sum(r['logs'] for r in rows)} logs read"
              + (f"; no readable log for #{', #'.join(map(str, unread))}" if unread else ""))
    return 0


def plot(args) -> int:
    from .plots import plot_all  # matplotlib only for this command
    for path in plot_all(Path(args.root), Path(args.history), Path(args.out)):
        print(f"wrote {path}")
    return 0


def parse(args) -> int:
    status = 0
    for f in args.logs:
        try:
            print(json.dumps(parse_log(f, target=args.target)))
        except LogError as e:
            print(f"error: {e}", file=sys.stderr)
            status = 1
    return status


def run_check(args) -> int:
    root = Path(args.root)
    problems = check(root)
    for problem in problems:
        print(problem)
    if problems:
        print(f"records check: {len(problems)} problem(s) in {root}", file=sys.stderr)
        return 1
    print(f"records check: {len(load_entries(root))} entries consistent with their logs and the README tables")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m records", description="Record entries backed by run logs.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", default=str(PACKAGE), help="the records folder (default: this package's)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("add", "make an entry from this repo's logs (refused unless it clears the bar)"),
                            ("import", "make an entry from public modded-nanogpt logs (not held to the p-value bar)")):
        p = sub.add_parser(name, help=help_text, parents=[common])
        p.add_argument("logs", nargs="+", help="the runs' .txt logs (a .json beside each is read too)")
        p.add_argument("--description", required=True, help="one line: the change this entry makes")
        p.add_argument("--author", help="default: git config user.name")
        p.add_argument("--date", help="YYYY-MM-DD (default: today)")
        p.add_argument("--slug", help="folder name after the date (default: from the description)")
        p.add_argument("--track", default="time", help="time | steps (records/tracks.json)")
        p.add_argument("--target", type=float,
                       help=f"target val loss (default: the logs' own; {MODDED_TARGET} for modded-nanogpt logs)")
    sub.add_parser("table", help="regenerate the tables in README.md", parents=[common])
    sub.add_parser("check", help="rebuild every entry from its logs; exit 1 on any inconsistency", parents=[common])
    p = sub.add_parser("compare", parents=[common],
                       help="compare two entries or sets of runs, or runs with a public record "
                            "(time ratio, Welch's t-test, val loss at equal steps)")
    p.add_argument("a", help="an entry name, a folder of logs, a log, a quoted glob, or a public record: "
                             "public:N (main track), public:steps:N (step-count track)")
    p.add_argument("b")
    p.add_argument("--history", default=str(public.OUT), help="folder of the public history (for public:N)")
    p = sub.add_parser("import-history", help="the public speedrun's record tables and logs -> records/public/*.json")
    p.add_argument("checkout", help="a local checkout of github.com/KellerJordan/modded-nanogpt")
    p.add_argument("--out", default=str(public.OUT), help="where track1.json and track3_steps.json go")
    p = sub.add_parser("plot", help="record time and steps-to-target against date: the public history with this "
                                    "repo's GPU entries", parents=[common])
    p.add_argument("--history", default=str(public.OUT), help="folder of track1.json and track3_steps.json")
    p.add_argument("--out", default=str(public.OUT), help="where track1_time.png and track3_steps.png go")
    p = sub.add_parser("parse", help="print each log's summary as one JSON line")
    p.add_argument("logs", nargs="+")
    p.add_argument("--target", type=float, help="target val loss for completeness (default: the log's own)")
    args = parser.parse_args(argv)
    try:
        if args.command in ("add", "import"):
            return add(args, imported=args.command == "import")
        if args.command == "table":
            with locked(Path(args.root)):
                print(f"{write_table(Path(args.root))} updated")
            return 0
        return {"check": run_check, "compare": compare, "parse": parse,
                "import-history": import_history, "plot": plot}[args.command](args)
    except public.HistoryError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (EntryError, LogError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
