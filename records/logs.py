"""Read run logs: this repo's (`<run_id>.txt` + `<run_id>.json`) and the public modded-nanogpt speedrun's.

`parse_log(path)` returns one flat summary per log:
  format            "nanogpt-speedrun" (this repo) | "modded-nanogpt" (the public speedrun)
  run_id, status, preset, config, seed, hardware ("<device> x<count>"), git_commit, code_hash
  val_history       [[step, val_loss, train_time_ms], ...]
  final_val_loss, train_time_ms, steps      (of the last validation)
  num_iterations, tokens, target_val_loss
  complete          True when the run finished: its summary says so (ours, with a .json beside it), or
                    its last validation is at step N/N, or (ours) the trainer's closing `final val_loss:`
                    line is there; a validation at or below the target part-way is not enough, since a
                    log cut there looks the same
  problems          why it is not complete, where the .txt and .json disagree, or a val loss that
                    cannot be one (<= 0 or not finite: a validation that never ran)

This repo's .txt holds, each under a rule of 100 '=': the sources (`# <path>` then the text), the
config (`# config (preset P)` + JSON), the environment (`# environment` + JSON), then step lines. The
code hash recomputes from the embedded sources as the trainer computes it:
  sha256(json.dumps({path: sha256(text)}, sort_keys=True)).
modded-nanogpt's .txt holds the code it ran (train_gpt.py, in later records further files), a rule,
`Running ...` versions and nvidia-smi output, a rule, then step lines; its train lines carry no
train_loss in later records, and the step-count track's logs give train_time in seconds
(`train_time:492.485s`), and some print further `key:value` fields before train_time (which are
skipped). Its code hash here is sha256 of everything before the environment rule.
The two oldest public records are llm.c logs: `s:N tel:L` (validation) and `s:N trl:L` (training)
lines and nothing else, so they have no times (train_time_ms None) and no step count N.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

OURS, MODDED = "nanogpt-speedrun", "modded-nanogpt"
MODDED_TARGET = 3.28  # the public speedrun's main-track target on FineWeb validation
FINISHED = {"complete", "finished"}
RULE = re.compile(r"^={100}\n", re.M)
STEP_LINE = re.compile(r"^step:(\d+)/(\d+) (?:(train_loss|val_loss):(\S+) )?(?:\w+:\S+ )*train_time:(-?\d+(?:\.\d+)?)(ms|s)\b", re.M)
LLMC_VAL = re.compile(r"^s:(\d+) tel:(\S+)", re.M)
FINAL_LINE = re.compile(r"^final val_loss:", re.M)  # the trainer's last line when a run completes
GPU_ROW = re.compile(r"^\|\s+\d+\s+(\S.*?)\s{2,}(?:On|Off)\s+\|", re.M)


class LogError(ValueError):
    """A file that is not a readable run log; the message names the file and the problem."""


def first_at_or_below(summary: dict | None, target: float) -> tuple[int, float | None] | None:
    """(step, train ms) of the first validation in a summary's val_history with loss ≤ target; None if none."""
    return next(((step, ms) for step, loss, ms in (summary or {}).get("val_history") or [] if loss <= target), None)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def train_ms(m: re.Match) -> float:
    """A STEP_LINE match's train_time in milliseconds (the step-count track logs seconds)."""
    return float(m.group(5)) * (1000.0 if m.group(6) == "s" else 1.0)


def step_lines(text: str) -> tuple[list[list], int | None]:
    """([[step, val_loss, train_time_ms] of each val line], N of `step:n/N`) from the step lines."""
    vals, total = [], None
    for m in STEP_LINE.finditer(text):
        total = int(m.group(2))
        if m.group(3) == "val_loss":
            vals.append([int(m.group(1)), float(m.group(4)), train_ms(m)])
    return vals, total


def parse_log(path: str | Path, target: float | None = None) -> dict:
    """Summary of one log .txt (see the module docstring); `target` overrides the log's own target."""
    path = Path(path)
    if path.suffix == ".json":
        path = path.with_suffix(".txt")
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        raise LogError(f"{path}: cannot read the log ({e.strerror}); give the run's .txt file") from None
    if not STEP_LINE.search(text):
        if LLMC_VAL.search(text):
            return parse_llmc(path, text, MODDED_TARGET if target is None else target)
        raise LogError(f"{path}: no `step:N/M ... train_time:Tms` lines; not a speedrun log (or cut before training)")
    ours = text.startswith("=" * 100 + "\n# ")
    log = parse_ours(path, text) if ours else parse_modded(text)
    log["file"], log["run_id"] = str(path), log["run_id"] or path.stem
    vals, total = step_lines(text)
    log.setdefault("val_history", vals)
    log.setdefault("num_iterations", total)
    if target is not None:
        log["target_val_loss"] = target
    last = log["val_history"][-1] if log["val_history"] else None
    log.setdefault("final_val_loss", last[1] if last else None)
    log.setdefault("train_time_ms", last[2] if last else None)
    log.setdefault("steps", last[0] if last else None)
    if log.get("tokens") is None and log["steps"] is not None and log["config"].get("global_batch_tokens"):
        log["tokens"] = log["steps"] * log["config"]["global_batch_tokens"]
    if log.get("status") is None:
        done = last is not None and (last[0] == log["num_iterations"] or (ours and FINAL_LINE.search(text)))
        log["status"] = "finished" if done else "incomplete"
    log["problems"] += [f"val_loss {v:.4f} at step {s} cannot be a validation (a cross-entropy is positive): "
                        f"the run's validation never ran" for s, v, _ in log["val_history"] if not v > 0]
    complete = log["status"] in FINISHED
    if not complete:
        at = f"last validation at step {last[0]}/{log['num_iterations']}" if last else "no validation line"
        log["problems"].insert(0, f"run not finished (status {log['status']}; {at}, target {log['target_val_loss']})")
    log["complete"] = not log["problems"]
    return log


def parse_ours(path: Path, text: str) -> dict:
    """This repo's log: sections of the .txt, and the .json summary beside it when present."""
    chunks = RULE.split(text)[1:]
    sources, config, env, preset, body, problems = {}, None, None, None, "", []
    i = 0
    try:
        while i < len(chunks):
            title, _, rest = chunks[i].partition("\n")
            if title.startswith("# config (preset "):
                config, preset = json.loads(rest), title[len("# config (preset "):-1]
            elif title == "# environment":
                env = json.loads(rest)
            elif i == len(chunks) - 1:
                body = chunks[i]
            elif title.startswith("# ") and not rest:
                sources[title[2:]] = chunks[i + 1][:-1]  # the header writes f"{text}\n" before the next rule
                i += 1
            i += 1
    except json.JSONDecodeError as e:
        raise LogError(f"{path}: the config or environment section is not valid JSON ({e}); the header is damaged")
    if config is None or env is None:
        raise LogError(f"{path}: the header has no config or environment section; the log was cut short")
    code_hash = sha256(json.dumps({p: sha256(t) for p, t in sources.items()}, sort_keys=True))
    log = {"format": OURS, "run_id": config.get("run_id") or None, "status": None, "preset": preset, "config": config,
           "seed": config.get("seed"), "hardware": hardware(env), "git_commit": env.get("git_commit"),
           "code_hash": code_hash, "target_val_loss": config.get("target_val_loss"), "problems": problems}
    summary_path = path.with_suffix(".json")
    if summary_path.exists():
        try:
            summary = json.loads(summary_path.read_text())
        except json.JSONDecodeError as e:
            raise LogError(f"{summary_path}: not valid JSON ({e}); the summary was damaged") from None
        merge_summary(log, summary, body)
    return log


def merge_summary(log: dict, summary: dict, body: str) -> None:
    """Take the .json's exact figures, noting where it disagrees with the .txt it sits beside."""
    problems = log["problems"]
    if summary.get("code_hash") != log["code_hash"]:
        problems.append(f"the .txt's embedded code hashes to {log['code_hash'][:12]}, "
                        f"the .json says {str(summary.get('code_hash'))[:12]}: the files are not of one run")
    vals, _ = step_lines(body)
    steps, final = summary.get("steps"), summary.get("final_val_loss")
    if summary.get("status") in FINISHED and vals:
        shown = f"{final:.4f}" if isinstance(final, (int, float)) else repr(final)
        said = f"the .txt ends at step {vals[-1][0]} val_loss {vals[-1][1]:.4f} but the .json says step {steps} " \
               f"val_loss {shown}"
        if isinstance(steps, int) and vals[-1][0] < steps:
            problems.append(f"{said}: the .txt is truncated")
        elif vals[-1][0] != steps:
            problems.append(f"{said}: the .txt goes past the .json's last step; the files are not of one run")
        elif f"{vals[-1][1]:.4f}" != shown:
            problems.append(f"{said}: the final val lines differ (one of the files was edited)")
    log.update(status=summary.get("status"), run_id=summary.get("run_id"),
               val_history=summary.get("val_history", vals), tokens=summary.get("tokens"),
               hardware=hardware(summary.get("hardware", {})))
    for key in ("final_val_loss", "train_time_ms", "steps"):
        if key in summary:
            log[key] = summary[key]


def hardware(env: dict) -> str:
    """'<device> x<count>', e.g. 'NVIDIA H100 80GB HBM3 x8' or 'cpu x1'."""
    return f"{env.get('device', 'unknown')} x{env.get('world_size', 1)}"


def parse_modded(text: str) -> dict:
    """The public speedrun's log: code header, environment (versions + nvidia-smi), step lines."""
    header = text[:STEP_LINE.search(text).start()]
    code = header
    for m in RULE.finditer(header):
        after = header[m.end():m.end() + 200]
        if after.startswith("Running ") or "nvidia-smi" in after.lower():
            code = header[:m.start()]
            break
    gpus = GPU_ROW.findall(header)
    device = gpus[0] if gpus and len(set(gpus)) == 1 else (" + ".join(sorted(set(gpus))) or "unknown")
    torch_version = re.search(r"^Running [Pp]y[Tt]orch (\S+)", header, re.M)
    return {"format": MODDED, "run_id": None, "status": None, "preset": MODDED, "config": {}, "seed": None,
            "hardware": hardware({"device": device, "world_size": len(gpus) or 1}), "git_commit": None,
            "code_hash": sha256(code), "target_val_loss": MODDED_TARGET, "tokens": None, "problems": [],
            "torch": torch_version.group(1) if torch_version else None}


def parse_llmc(path: Path, text: str, target: float) -> dict:
    """An llm.c log (the public speedrun's records 1 and 2): validation losses by step, no times.

    Complete when the last validation is at or below the target (there is no N to finish at)."""
    vals = [[int(m.group(1)), float(m.group(2)), None] for m in LLMC_VAL.finditer(text)]
    last = vals[-1]
    problems = [] if last[1] <= target else [
        f"run not finished (last validation {last[1]:.4f} at step {last[0]}, above the target {target})"]
    return {"format": MODDED, "run_id": path.stem, "file": str(path), "status": "finished" if not problems else
            "incomplete", "preset": MODDED, "config": {}, "seed": None, "hardware": "unknown x1", "git_commit": None,
            "code_hash": None, "target_val_loss": target, "tokens": None, "problems": problems, "torch": None,
            "val_history": vals, "num_iterations": None, "final_val_loss": last[1], "train_time_ms": None,
            "steps": last[0], "complete": not problems}
