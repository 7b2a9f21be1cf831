"""Figures of the record history: the public speedrun's (records/public/*.json) with this repo's GPU entries.

- track1_time.png: record time against date, log scale; the public records as a falling staircase,
  and each of this repo's time-track entries run on a GPU as a star at its date (mean train time).
- track3_steps.png: steps to val loss 3.28 against date on the step-count track; every public result
  as a dot, the running best as a staircase, this repo's steps-track GPU entries as stars.
An entry counts as a GPU entry when its hardware is not a CPU (`<cpu model> (N cores) xW` or `cpu xW`,
as train_gpt.py names them).
"""
from __future__ import annotations

import datetime
import re
from pathlib import Path

from analysis.figures import plt, save_png

from .entries import load_entries
from .public import OUT, load_history

CPU_HARDWARE = re.compile(r"(\(\d+ cores?\)|^cpu|^unknown) x\d+$")


def is_gpu_entry(entry: dict) -> bool:
    return not CPU_HARDWARE.search(entry.get("hardware", "unknown x1"))


def day(text: str) -> datetime.date:
    return datetime.date.fromisoformat(text)


def gpu_entries(root: Path, track: str) -> list[tuple[str, dict]]:
    return [(folder.name, e) for folder, e in load_entries(root) if e["track"]["name"] == track and is_gpu_entry(e)]


def staircase(ax, points: list[tuple[datetime.date, float]], **style) -> None:
    """The running best (lowest) value over time as a step line."""
    best, xs, ys = None, [], []
    for x, y in sorted(points):
        if best is None or y < best:
            best = y
            xs.append(x)
            ys.append(y)
    if xs:
        xs.append(max(x for x, _ in points))
        ys.append(best)
        ax.step(xs, ys, where="post", **style)


def overlay(ax, entries: list[tuple[str, dict]], value) -> None:
    if not entries:
        ax.plot([], [], " ", label="(no GPU entries of this repo yet)")
        return
    for name, entry in entries:
        ax.scatter([day(entry["date"])], [value(entry)], marker="*", s=160, color="tab:red", zorder=5)
        ax.annotate(name, (day(entry["date"]), value(entry)), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.scatter([], [], marker="*", s=160, color="tab:red", label="this repo (GPU entries)")


def finish(fig, ax, path: Path, history: dict, ylabel: str, title: str, legend: str) -> Path:
    """Log y axis against the date, the public commit in the title, grid and legend; saved as a PNG."""
    ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_xlabel("date")
    ax.set_title(f"{title} (modded-nanogpt @ {str(history['source']['commit'])[:7]})", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc=legend, fontsize=8)
    fig.autofmt_xdate()
    return save_png(fig, path)


def plot_time(history: dict, entries: list[tuple[str, dict]], path: Path) -> Path:
    rows = [r for r in history["rows"] if r.get("record_time_s") and r.get("date") and not r["retiming"]]
    fig, ax = plt.subplots(figsize=(9, 5))
    points = [(day(r["date"]), r["record_time_s"]) for r in rows]
    ax.scatter([p[0] for p in points], [p[1] for p in points], s=14, color="tab:blue", zorder=3,
               label=f"public records ({len(rows)})")
    staircase(ax, points, color="tab:blue", alpha=0.5)
    for r in rows:
        if r["number"] in (1, 3, 12) or r["number"] % 10 == 0:
            ax.annotate(f"#{r['number']}", (day(r["date"]), r["record_time_s"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    overlay(ax, entries, lambda e: e["train_time_ms"]["mean"] / 1000)
    return finish(fig, ax, path, history, "record time (s, log scale)",
                  f"Main track: time to val loss ≤ {history['target_val_loss']} on 8×H100", "lower left")


def plot_steps(history: dict, entries: list[tuple[str, dict]], path: Path) -> Path:
    rows = [r for r in history["rows"] if r.get("steps_to_target") and r.get("date")]
    fig, ax = plt.subplots(figsize=(9, 5))
    points = [(day(r["date"]), r["steps_to_target"]) for r in rows]
    ax.scatter([p[0] for p in points], [p[1] for p in points], s=14, color="tab:green", zorder=3,
               label=f"public results ({len(rows)})")
    staircase(ax, points, color="tab:green", alpha=0.6, label="running best")
    overlay(ax, entries, lambda e: e["steps"]["mean"])
    return finish(fig, ax, path, history, "steps to the target (log scale)",
                  f"Step-count track: steps to val loss ≤ {history['target_val_loss']}", "upper right")


def plot_all(root: Path, history_dir: Path = OUT, out: Path = OUT) -> list[Path]:
    return [plot_time(load_history("track1", history_dir), gpu_entries(root, "time"), out / "track1_time.png"),
            plot_steps(load_history("track3_steps", history_dir), gpu_entries(root, "steps"),
                       out / "track3_steps.png")]
