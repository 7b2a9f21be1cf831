"""Reports: per arm the metric's mean ± 95% CI, its ratio to the baseline and Welch's p-value; plots of
val loss against steps and train time (per arm the mean over seeds, with a min–max band); for a
ladder, the metric and the ratio to baseline against parameter count.

Everything is read from the runs' JSON summaries in the results folder; runs not yet done are listed.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis.figures import plt, save_png
from data.atomic import atomic_write
from records.logs import first_at_or_below

from . import stats
from .launch import DONE, summary
from .study import Metric, Run, Study

CURVES = {"step": "val_loss_vs_step.png", "time": "val_loss_vs_time.png"}
LADDER_PLOT = "metric_vs_params.png"


@dataclass(frozen=True)
class Result:
    run: Run
    info: dict | None  # the run's JSON summary, None if it never started
    value: float | None  # the metric, None when the run gives none
    note: str  # why there is no value (or '')


def metric_value(metric: Metric, info: dict | None) -> tuple[float | None, str]:
    """The run's metric from its summary: val loss at a step or time budget, or seconds or steps to the target."""
    if info is None:
        return None, "not run"
    status = info.get("status")
    if status not in DONE:
        return None, f"unfinished ({status})"
    history = info.get("val_history") or []
    if metric.kind in ("time_to_target", "steps_to_target"):
        hit = first_at_or_below(info, metric.target)
        if hit is None:
            return None, f"target not reached ({status})"
        return (hit[1] / 1000 if metric.kind == "time_to_target" else float(hit[0])), ""
    if status == "diverged":
        return None, "diverged"
    if metric.kind == "val_loss_at_step":
        if metric.step is None:
            return (history[-1][1], "") if history else (None, "no validation")
        at = [loss for step, loss, _ in history if step == metric.step]
        return (at[0], "") if at else (None, f"no validation at step {metric.step} (check val_every)")
    within = [loss for _, loss, ms in history if ms <= metric.seconds * 1000]
    return (within[-1], "") if within else (None, f"no validation within {metric.seconds:g} s")


def collect(study: Study, runs: list[Run], results: Path) -> list[Result]:
    out = []
    for run in runs:
        info = summary(results, run.run_id)
        out.append(Result(run, info, *metric_value(study.metric, info)))
    return out


def record_reference(study: Study) -> dict | None:
    """The base record's mean final val loss and train time (ms), where its record.json has them."""
    if study.record is None:
        return None
    data = json.loads(study.record.read_text())

    def mean(value):
        if isinstance(value, dict):
            value = value.get("mean")
        if isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
            return float(np.mean(value))
        return float(value) if isinstance(value, (int, float)) else None
    return {"name": study.record.parent.name, "val_loss": mean(data.get("val_loss")),
            "train_time_ms": mean(data.get("train_time_ms"))}


# ----------------------------------------------------------------------------------------------
# Tables

def fmt(value: float | None, digits: int) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def params_text(n: float | None) -> str:
    """A parameter count as 870k, 12.4M or 1.56B."""
    if not n:
        return "–"
    scale, unit = next(((s, u) for s, u in ((1e9, "B"), (1e6, "M"), (1e3, "k")) if n >= s), (1, ""))
    return f"{n / scale:.3g}{unit}"


def arm_rows(study: Study, results: list[Result], metric: Metric | None = None) -> list[dict]:
    """One row per (rung, arm): n, mean, CI, ratio and p against the same rung's baseline, parameters; of the
    study's metric, or of `metric` (one of its `also` metrics) read from the same runs."""
    groups: dict[tuple, list[Result]] = defaultdict(list)
    for r in results:
        groups[(r.run.rung, r.run.arm)].append(r)

    def values_of(members: list[Result]) -> list[float]:
        found = [r.value for r in members] if metric is None else [metric_value(metric, r.info)[0] for r in members]
        return [v for v in found if v is not None]
    rows = []
    for rung in dict.fromkeys(r.run.rung for r in results):
        base = values_of(groups[(rung, study.baseline)])
        base_summary = stats.summarize(base)
        for arm in study.arms:
            members = groups[(rung, arm)]
            values = values_of(members)
            s = stats.summarize(values)
            params = [r.info["n_params"] for r in members if r.info and "n_params" in r.info]
            rows.append({"rung": rung, "arm": arm, "summary": s, "planned": len(members),
                         "ratio": stats.ratio(s.mean, base_summary.mean),
                         "p": math.nan if arm == study.baseline else stats.welch_p(values, base),
                         "params": float(np.mean(params)) if params else None})
    return rows


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Markdown table lines."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


DIGITS = {"time_to_target": 2, "steps_to_target": 1}  # the loss metrics: 4


def arm_table(study: Study, rows: list[dict], digits: int) -> list[str]:
    ladder, cells = study.is_ladder, []
    for row in rows:
        s = row["summary"]
        ci = f" ± {fmt(s.ci95, digits)}" if math.isfinite(s.ci95) else ""
        cells.append(([row["rung"], params_text(row["params"])] if ladder else []) + [
            f"`{row['arm']}`", study.changes(row["arm"]), f"{s.n}/{row['planned']}", fmt(s.mean, digits) + ci,
            fmt(row["ratio"], 4), fmt(row["p"], 4)])
    return table((["rung", "params"] if ladder else []) +
                 ["arm", "changes", "n", "mean ± 95% CI", "ratio to baseline", "p"], cells)


def markdown(study: Study, results: list[Result], rows: list[dict], reference: dict | None, plots: list[str]) -> str:
    digits = DIGITS.get(study.metric.kind, 4)
    ladder = study.is_ladder
    done = sum((r.info or {}).get("status") in DONE for r in results)
    base = f"preset `{study.preset}`"
    if study.record:
        base = f"record `{study.record.parent.name}` ({base})"
    overrides = ", ".join(f"{k}={v}" for k, v in study.overrides.items()) or "none"
    lines = [f"# Ablation: {study.name}", ""] + ([study.description, ""] if study.description else []) + [
        f"- Base: {base}; overrides for every run: {overrides}",
        f"- Metric: {study.metric.label()}, lower is better; seeds {', '.join(map(str, study.seeds))}",
        f"- Runs: {done} of {len(results)} done; per arm: mean ± 95% CI (Student t), ratio = arm mean / "
        f"baseline mean, p = Welch's two-sided t-test against `{study.baseline}`"]
    lines += [f"- Rung {name}: " + ", ".join(f"{k}={v}" for k, v in config.items()) for name, config in study.rungs]
    lines += [""] + arm_table(study, rows, digits)
    for metric in study.also:
        lines += ["", f"Also, from the same runs: {metric.label()} (runs that never reach it are left out of n)", ""]
        lines += arm_table(study, arm_rows(study, results, metric), DIGITS.get(metric.kind, 4))
    if reference:
        seconds = (reference["train_time_ms"] or math.nan) / 1000
        lines += ["", f"Reference, record `{reference['name']}`: mean final val loss {fmt(reference['val_loss'], 4)}, "
                      f"mean train time {fmt(seconds, 1)} s."]
    codes = {r.info.get("code_hash") for r in results if r.info}
    devices = {str((r.info.get("hardware") or {}).get("device")) for r in results if r.info}
    if len(codes) > 1:
        lines += ["", f"Note: the runs used {len(codes)} different code versions (code_hash); compare with care."]
    if devices:
        lines += ["", f"Hardware: {', '.join(sorted(devices))}."]
    lines += [""] + [f"![{Path(p).stem.replace('_', ' ')}]({p})" for p in plots]
    runs = []
    for r in results:
        info = r.info or {}
        time = info.get("train_time_ms")
        runs.append([f"`{r.run.run_id}`"] + ([r.run.rung] if ladder else []) + [
            r.run.arm, str(r.run.seed), info.get("status", "not run"),
            fmt(r.value, digits) if r.value is not None else r.note, fmt(time / 1000 if time is not None else None, 1)])
    header = ["run id"] + (["rung"] if ladder else []) + ["arm", "seed", "status", "metric", "train time (s)"]
    return "\n".join(lines + ["", "## Runs", ""] + table(header, runs)) + "\n"


# ----------------------------------------------------------------------------------------------
# Plots

def curve(members: list[Result], x: str):
    """(x, mean, min, max) over seeds at every validated step; x is the step or the mean train time (s)."""
    by_step: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for r in members:
        for step, loss, ms in (r.info or {}).get("val_history") or []:
            by_step[step].append((loss, ms / 1000))
    steps = sorted(by_step)
    losses = [np.array([v[0] for v in by_step[s]]) for s in steps]
    xs = steps if x == "step" else [float(np.mean([v[1] for v in by_step[s]])) for s in steps]
    return (np.array(xs), np.array([v.mean() for v in losses]), np.array([v.min() for v in losses]),
            np.array([v.max() for v in losses]))


def plot_curves(study: Study, results: list[Result], x: str, reference: dict | None, path: Path) -> None:
    rungs = list(dict.fromkeys(r.run.rung for r in results))
    fig, axes = plt.subplots(1, len(rungs), figsize=(5.5 * len(rungs), 4), squeeze=False)
    for ax, rung in zip(axes[0], rungs):
        shown = []
        for color, arm in enumerate(study.arms):
            members = [r for r in results if r.run.rung == rung and r.run.arm == arm and r.info]
            xs, mean, low, high = curve(members, x)
            if not len(xs):
                continue
            ax.plot(xs, mean, color=f"C{color}", marker="o", markersize=3, label=f"{arm} (n={len(members)})")
            ax.fill_between(xs, low, high, color=f"C{color}", alpha=0.2, linewidth=0)
            skip = 1 if len(xs) > 2 else 0  # the initial validation would squash the rest of the curve
            shown += [low[skip:], high[skip:]]
        if reference and reference["val_loss"] is not None:
            ax.axhline(reference["val_loss"], color="gray", linestyle="--", label=f"record {reference['name']}")
        if shown:
            values = np.concatenate(shown)
            pad = 0.05 * (values.max() - values.min() or 1)
            ax.set_ylim(values.min() - pad, values.max() + pad)
        ax.set_xlabel("step" if x == "step" else "train time (s)")
        ax.set_ylabel("val loss")
        ax.set_title(f"{study.name}" + (f", rung {rung}" if rung else "") + " (mean over seeds, band: min–max)",
                     fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_png(fig, path, dpi=110, bbox_inches="tight")


def plot_ladder(study: Study, rows: list[dict], path: Path) -> None:
    """Metric (mean ± 95% CI) and ratio to baseline against parameter count, one line per arm."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for color, arm in enumerate(study.arms):
        mine = [r for r in rows if r["arm"] == arm and r["params"] and r["summary"].n]
        if not mine:
            continue
        params = [r["params"] for r in mine]
        ci = [r["summary"].ci95 if math.isfinite(r["summary"].ci95) else 0 for r in mine]
        left.errorbar(params, [r["summary"].mean for r in mine], yerr=ci, marker="o", capsize=3, color=f"C{color}",
                      label=arm)
        right.plot(params, [r["ratio"] for r in mine], marker="o", color=f"C{color}", label=arm)
    for ax, ylabel in ((left, study.metric.label()), (right, f"ratio to {study.baseline}")):
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    right.axhline(1.0, color="gray", linewidth=0.8)
    left.set_title("metric vs model size (error bars: 95% CI)", fontsize=9)
    right.set_title("ratio to baseline (< 1: better than baseline)", fontsize=9)
    fig.suptitle(f"{study.name}: does the gain hold as the model grows?", fontsize=10)
    save_png(fig, path, dpi=110, bbox_inches="tight")


def build(study: Study, runs: list[Run], results: Path, out: Path) -> str:
    """Write report.md and the PNGs into `out`; return the markdown."""
    collected = collect(study, runs, results)
    rows = arm_rows(study, collected)
    reference = record_reference(study)
    plots = []
    if any(r.info for r in collected):
        for x, name in CURVES.items():
            plot_curves(study, collected, x, reference, out / name)
            plots.append(name)
        if study.is_ladder:
            plot_ladder(study, rows, out / LADDER_PLOT)
            plots.append(LADDER_PLOT)
    text = markdown(study, collected, rows, reference, plots)
    atomic_write(out / "report.md", text)
    return text
