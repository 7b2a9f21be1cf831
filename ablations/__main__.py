"""python -m ablations run|report FILE, or profile FILE...: run a study's missing runs, report on its results,
or draw the performance profile of the arms over several studies."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from . import launch, report, study
from . import performance_profile as profile
from .study import REPO, StudyError


def folders(args, loaded: study.Study) -> tuple[Path, Path]:
    """The results folder (runs' logs, git-ignored) and the report folder (committed)."""
    results = Path(args.results) if args.results else REPO / "ablations/results" / loaded.name
    out = Path(getattr(args, "out", None) or REPO / "ablations/reports" / loaded.name)
    return results.resolve(), out.resolve()


def show_plan(loaded: study.Study, runs: list[study.Run], results: Path, nproc: int | None) -> None:
    shape = f"{len(loaded.arms)} arms × {len(loaded.seeds)} seed(s)"
    shape += f" × {len(loaded.rungs)} rungs" if loaded.rungs else ""
    print(f"study {loaded.name}: {len(runs)} runs ({shape}), results in {results}")
    for run in runs:
        state = "done" if launch.is_done(results, run.run_id) else "to run"
        print(f"  {run.index:>3}  {run.run_id}  {run.label:<40} {state}")
    if runs:
        print("first command:", shlex.join(launch.launcher(nproc) + launch.run_args(runs[0], results, None)))


def cmd_run(args) -> int:
    loaded = study.load(args.file)
    runs = loaded.plan()
    study.check_against_trainer(loaded, runs)
    results, _ = folders(args, loaded)
    if args.backend == "torchrun" and not args.nproc:
        raise StudyError("--backend=torchrun needs --nproc=N (processes per node, e.g. the GPU count)")
    if args.backend == "local" and args.nproc:
        raise StudyError("--nproc applies to --backend=torchrun or slurm; the local backend runs plain python")
    group = loaded.name if args.wandb else None
    if args.dry_run:
        show_plan(loaded, runs, results, args.nproc)
        return 0
    if args.backend == "slurm":
        script = launch.write_slurm(loaded.name, runs, results, args.nproc, group, args.sbatch_option)
        todo = sum(not launch.is_done(results, r.run_id) for r in runs)
        print(f"wrote {script} ({len(runs)} array tasks, {todo} not done yet) and {results / launch.PLAN_FILE}\n"
              f"submit it with: sbatch {shlex.quote(str(script))}\n"
              f"then: python -m ablations report {shlex.quote(str(args.file))}")
        return 0
    launched = launch.run_all(runs, results, args.nproc, group)
    print(f"study {loaded.name}: {launched} run(s) launched, {len(runs) - launched} cached; "
          f"report: python -m ablations report {shlex.quote(str(args.file))}")
    return 0


def cmd_report(args) -> int:
    loaded = study.load(args.file)
    results, out = folders(args, loaded)
    if not results.is_dir():
        raise StudyError(f"no results for study {loaded.name} in {results}; run: python -m ablations run {args.file}")
    print(report.build(loaded, loaded.plan(), results, out))
    print(f"wrote {out / 'report.md'} and its plots")
    return 0


def cmd_profile(args) -> int:
    loaded = [study.load(f) for f in args.files]
    out = Path(args.out).resolve() if args.out else profile.default_out(loaded)
    results = Path(args.results_root).resolve() if args.results_root else REPO / "ablations/results"
    command = profile.default_command(args.files, args.by, args.tau_max, args.out)
    print(profile.build(loaded, results, out, by=args.by, tau_max=args.tau_max, command=command))
    print(f"wrote {out / 'report.md'} and {out / profile.PLOT}")
    return 0


def cmd_task(args) -> int:
    launch.run_task(Path(args.plan), args.index)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ablations", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="launch the study's runs that are not done yet (arms interleaved)")
    run.add_argument("file", help="study file (.toml or .py), e.g. ablations/studies/rotary_off.toml")
    run.add_argument("--backend", choices=("local", "torchrun", "slurm"), default="local",
                     help="local: one run after another; torchrun: each run on --nproc processes; "
                          "slurm: write an array script (one task per run) and print how to submit it")
    run.add_argument("--nproc", type=int, help="processes per run for torchrun (and slurm): the GPU count")
    run.add_argument("--wandb", action="store_true", help="log each run to wandb, grouped by the study name")
    run.add_argument("--results", help="folder of the runs' logs (default ablations/results/<study name>)")
    run.add_argument("--dry-run", action="store_true", help="print the plan and which runs are done; launch nothing")
    run.add_argument("--sbatch-option", action="append", default=[], metavar="OPT",
                     help="an extra #SBATCH line for --backend=slurm, e.g. --sbatch-option=--partition=gpu")
    rep = sub.add_parser("report", help="statistics table and plots from the study's results")
    rep.add_argument("file")
    rep.add_argument("--results", help="folder of the runs' logs (default ablations/results/<study name>)")
    rep.add_argument("--out", help="where report.md and the PNGs go (default ablations/reports/<study name>)")
    prof = sub.add_parser("profile", help="performance profile (AlgoPerf style) of the arms over several studies, "
                                          "each a workload with a time_to_target metric")
    prof.add_argument("files", nargs="+", help="study files, one workload each (each rung of a ladder)")
    prof.add_argument("--by", choices=("time", "steps"), default="time",
                      help="cost to the target: training time (default) or steps")
    prof.add_argument("--tau-max", type=float, default=4.0, help="upper end of τ for the plot and the score")
    prof.add_argument("--results-root", help="folder holding one results folder per study (default ablations/results)")
    prof.add_argument("--out", help="where report.md and the plot go (default ablations/reports/profile_<studies>)")
    task = sub.add_parser("task", help="run one entry of a Slurm plan file (what the array script calls)")
    task.add_argument("plan")
    task.add_argument("index", type=int)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return {"run": cmd_run, "report": cmd_report, "profile": cmd_profile, "task": cmd_task}[args.command](args)
    except StudyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except launch.LaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; run the same command again to continue where it stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
