"""Performance profiles over several studies, in the style of the AlgoPerf benchmark (Dahl et al., 2023).

Each study (each rung of a ladder study) is a workload w with its own target: its metric must be
`time_to_target`. For every arm a (arms are matched across studies by name), c_{w,a} is the training
time in seconds (or, with `by="steps"`, the step of the first validation) at which the run reached
the target: the median over the arm's seeds, where a seed that missed the target counts as ∞. Then

    r_{w,a} = c_{w,a} / min_b c_{w,b}                        (1 for the best arm of w; ∞ if a missed it)
    ρ_a(τ)  = |{w : r_{w,a} ≤ τ}| / |W|                      (the performance profile, a step function)
    B_a     = 1/(τ_max − 1) · ∫_1^τ_max ρ_a(τ) dτ
            = 1/|W| · Σ_w max(0, τ_max − r_{w,a}) / (τ_max − 1)   (the score, 0..1; 1: best on every workload)

A workload where no arm reached the target is left out (and listed). An arm missing from a study
counts as ∞ there. Results are read as `python -m ablations report` reads them (report.collect).
"""
from __future__ import annotations

import datetime
import math
import platform
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis.figures import plt, save_png
from data.atomic import atomic_write
from records.logs import first_at_or_below

from .report import collect, fmt, table
from .study import REPO, Study, StudyError

PLOT = "performance_profile.png"


@dataclass(frozen=True)
class Workload:
    name: str  # the study, and the rung for a ladder
    target: float
    costs: dict[str, float]  # arm -> median cost over seeds (inf: target missed)
    runs: int
    hardware: tuple[str, ...]
    train_seconds: float  # the runs' total training time


def first_hit(info: dict | None, target: float, by: str) -> float:
    """Seconds (by="time") or steps (by="steps") at the first validation with loss ≤ target; ∞ if none."""
    hit = first_at_or_below(info, target)
    if hit is None:
        return math.inf
    return hit[1] / 1000 if by == "time" else float(hit[0])


def workloads(study: Study, results: Path, by: str) -> list[Workload]:
    if study.metric.kind != "time_to_target":
        raise StudyError(f"{study.path}: a performance profile needs metric = {{kind = \"time_to_target\", "
                         f"target = L}} (it has {study.metric.kind})")
    collected = collect(study, study.plan(), results)
    out = []
    for rung in dict.fromkeys(r.run.rung for r in collected):
        mine = [r for r in collected if r.run.rung == rung]
        costs = {}
        for arm in study.arms:
            values = [first_hit(r.info, study.metric.target, by) if r.value is not None else math.inf
                      for r in mine if r.run.arm == arm]
            costs[arm] = float(np.median(values)) if values else math.inf
        infos = [r.info for r in mine if r.info]
        hardware = tuple(sorted({str((i.get("hardware") or {}).get("device")) for i in infos}))
        out.append(Workload(study.name + (f":{rung}" if rung else ""), study.metric.target, costs, len(mine),
                            hardware, sum((i.get("train_time_ms") or 0) for i in infos) / 1000))
    return out


def ratios(loads: list[Workload], arms: list[str]) -> dict[str, list[float]]:
    """arm -> [r_{w,a} for each workload]; workloads no arm solved are to be dropped before."""
    out = {arm: [] for arm in arms}
    for w in loads:
        best = min(w.costs.values())
        for arm in arms:
            out[arm].append(w.costs.get(arm, math.inf) / best)
    return out


def profile(r: list[float], taus: np.ndarray) -> np.ndarray:
    """ρ(τ) = fraction of workloads with ratio ≤ τ."""
    values = np.asarray(r, dtype=float)
    return (values[None, :] <= taus[:, None]).mean(axis=1)


def score(r: list[float], tau_max: float) -> float:
    """B = 1/|W| · Σ max(0, τ_max − r)/(τ_max − 1): the normalised area under ρ on [1, τ_max]."""
    return float(np.mean([max(0.0, tau_max - x) / (tau_max - 1) for x in r]))


def plot(arm_ratios: dict[str, list[float]], tau_max: float, by: str, n: int, path: Path) -> Path:
    taus = np.linspace(1.0, tau_max, 400)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for color, (arm, r) in enumerate(arm_ratios.items()):
        ax.step(taus, profile(r, taus), where="post", color=f"C{color}", linewidth=max(4.0 - 0.8 * color, 1.2),
                linestyle=("-", "--", "-.", ":")[color % 4], label=f"{arm} (score {score(r, tau_max):.3f})")
    ax.set_xlim(1.0, tau_max)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"τ: {'time' if by == 'time' else 'steps'} to the target / the best arm's")
    ax.set_ylabel(f"fraction of the {n} workloads")
    ax.set_title("Performance profile: workloads reached within τ × the best", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return save_png(fig, path, dpi=110, bbox_inches="tight")


def build(studies: list[Study], results_root: Path, out: Path, by: str = "time", tau_max: float = 4.0,
          command: str = "") -> str:
    """Write report.md and the profile plot into `out`; return the markdown."""
    if tau_max <= 1:
        raise StudyError(f"--tau-max must be above 1, got {tau_max:g}")
    loads = [w for s in studies for w in workloads(s, results_root / s.name, by)]
    solved = [w for w in loads if math.isfinite(min(w.costs.values()))]
    if not solved:
        raise StudyError("no workload has a run that reached its target; run the studies first "
                         "(python -m ablations run FILE) or choose targets the arms can reach")
    arms = list(dict.fromkeys(arm for s in studies for arm in s.arms))
    arm_ratios = ratios(solved, arms)
    plot(arm_ratios, tau_max, by, len(solved), out / PLOT)
    unit = "s" if by == "time" else "steps"
    rows = sorted(([f"`{arm}`", f"{score(r, tau_max):.3f}", f"{sum(math.isfinite(x) for x in r)}/{len(r)}"]
                   + [fmt(x, 2) if math.isfinite(x) else "∞" for x in r] for arm, r in arm_ratios.items()),
                  key=lambda row: -float(row[1]))
    costs = [[f"`{w.name}`", f"{w.target:g}"] + [fmt(w.costs.get(arm, math.inf), 1 if by == "time" else 0)
                                                 if math.isfinite(w.costs.get(arm, math.inf)) else "missed"
                                                 for arm in arms] for w in loads]
    hardware = sorted({h for w in loads for h in w.hardware})
    lines = [f"# Performance profile: {', '.join(s.name for s in studies)}", "",
             f"- Workloads: {len(solved)} ({', '.join(w.name for w in solved)}); each study's own target; "
             f"cost = {'training time (s)' if by == 'time' else 'steps'} to the target, the median over seeds "
             f"(a seed that missed counts as ∞)",
             f"- Ratio r = cost / the best arm's cost on that workload; profile ρ(τ) = fraction of workloads "
             f"with r ≤ τ; score = ∫₁^τmax ρ(τ) dτ / (τmax − 1) with τmax = {tau_max:g} (1: best everywhere, "
             f"0: never within τmax)",
             f"- Runs: {sum(w.runs for w in loads)} planned, {sum(w.train_seconds for w in loads) / 60:.1f} min of "
             f"training in all; hardware: {', '.join(hardware) or 'unknown'}"]
    dropped = [w.name for w in loads if w not in solved]
    if dropped:
        lines.append(f"- Left out (no arm reached the target): {', '.join(dropped)}")
    lines += ["", "| arm | score | workloads reached | " + " | ".join(f"r on {w.name}" for w in solved) + " |",
              "|" + "---|" * (3 + len(solved))] + ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", f"Cost to the target ({unit}):", ""]
    lines += table(["workload", "target"] + [f"`{a}`" for a in arms], costs)
    lines += ["", f"![performance profile]({PLOT})", "",
              f"Made by `{command}` on {datetime.date.today().isoformat()}, {platform.machine()} "
              f"{platform.system()}, Python {platform.python_version()}."]
    text = "\n".join(lines) + "\n"
    atomic_write(out / "report.md", text)
    return text


def default_command(files: list[str], by: str, tau_max: float, out: str | None) -> str:
    parts = ["python", "-m", "ablations", "profile", *files]
    parts += [f"--by={by}"] if by != "time" else []
    parts += [f"--tau-max={tau_max:g}"] if tau_max != 4.0 else []
    parts += [f"--out={out}"] if out else []
    return shlex.join(parts)


def default_out(studies: list[Study]) -> Path:
    return REPO / "ablations" / "reports" / ("profile_" + "+".join(s.name for s in studies))
