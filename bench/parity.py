"""bench/parity.py: run a public speedrun record's own trainer beside ours at one small shape on CPU.

    python -m bench.parity 8 --speedrun /tmp/modded-nanogpt [--preset=speedrun124m] [--steps=350] \\
        [--seeds 0 1] [--n_layer=6 --model_dim=128 --n_head=4 --seq_len=256 --batch_tokens=8192] \\
        [--val_every=25 --val_tokens=65536] [--out=bench/reports/parity_record8]

RECORD is a row number of the public README's record table (`8`, `#21`) or a path to a public log.
--speedrun is a local checkout of github.com/KellerJordan/modded-nanogpt (never part of this repo).

1. The record's log embeds the training script it ran (`extract`). The script is adapted by
   explicit, counted text edits (`adapt`): its hyperparameters are set to the shared shape, data,
   steps and validation, and the CUDA device strings become "cpu"; `bench/parity_shim.py` then runs
   it in one CPU process (eager, fp32, no process group). Any edit that does not find what it
   expects, or a feature with no CPU replacement here, stops the run with one line before compute.
2. Ours runs as a command: `train_gpt.py --preset=P` with the same shape, data, tokens per step,
   steps, validation tokens and seed (only shape, data and length keys are overridden, so the
   preset's recipe is what is compared). The record's warmup/warmdown keep their fraction of its run.
3. Runs go one after the other, never concurrently: public seed 0, ours seed 0, public seed 1, ...
   Report: val loss at each shared validation step, mean and 95% CI over seeds
   (records/stats.py), the difference and Welch's p; each trainer's own ms/step (the public
   2024 trainers leave their first 10 steps out of the clock); a plot; the commands; JSON.
"""
from __future__ import annotations

import argparse
import ast
import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from analysis.figures import save_png
from data import embedded
from data.atomic import atomic_write
from records import stats
from records.logs import STEP_LINE, LogError, parse_log

REPO = Path(__file__).resolve().parent.parent
SHIM = REPO / "bench" / "parity_shim.py"
RULE = "=" * 100
ENV_RULE = re.compile(r"^={100}\n(?=Running |nvidia-smi)", re.M)  # the rule before the versions / nvidia-smi
FILE_RULE = re.compile(r"^-{40}\n# (\S+)\n-{40}\n", re.M)      # 2026 logs: further files under "# name"
README_ROW = re.compile(r"^(\d+)\s*\|[^\n]*?\[log\]\((records/[^)\s]+)\)", re.M)
# Features of later records that have no CPU reference here: (pattern, what it is).
UNSUPPORTED = [
    (re.compile(r"^from triton_kernels import|^import triton_kernels", re.M), "its Triton kernels (triton_kernels.py)"),
    (re.compile(r"get_kernel\(|flash_attn", re.M), "FlashAttention-3 from the kernels hub"),
]


class ParityError(ValueError):
    """Bad input or a public script this harness cannot adapt; main() prints it as one line, exit 2."""


# ----------------------------------------------------------------------------------------------
# 1. Find the record's log and extract the script it embeds.

def find_log(record: str, speedrun: Path) -> Path:
    """The log of README row `record` (first row of that number), or `record` itself when it is a file."""
    if Path(record).is_file():
        return Path(record)
    readme = speedrun / "README.md"
    if not readme.is_file():
        raise ParityError(f"--speedrun {speedrun}: no README.md there; give a checkout of KellerJordan/modded-nanogpt")
    number = record.lstrip("#")
    rows = {n: link for n, link in reversed(README_ROW.findall(readme.read_text()))}
    if number not in rows:
        raise ParityError(f"record {record!r}: no row with a log link in {readme}'s record table; "
                          f"give a row number ({', '.join(sorted(rows, key=int)[:3])}, ...) or a log path")
    path = speedrun / rows[number]
    if path.is_dir():
        logs = sorted(path.glob("*.txt"))
        if not logs:
            raise ParityError(f"record #{number}: {path} holds no .txt log; pass one log path as RECORD")
        path = logs[0]
    if not path.is_file():
        raise ParityError(f"record #{number}: {path} is missing from the checkout; check it out fully (git restore)")
    return path


def extract(text: str, name: str = "log") -> dict[str, str]:
    """{file name: source} of the code a public log embeds, the training script first (train_gpt.py).

    Formats: 2024 logs open with a rule of 100 '=' before the script; 2025 logs start with the script;
    2026 logs append further files, each under `----…` / `# name.py` / `----…`. All end the code with
    a rule followed by `Running …` (versions) or the nvidia-smi output.
    """
    end = ENV_RULE.search(text)
    if end is None:
        raise ParityError(f"{name}: no rule of 100 '=' followed by 'Running ...'; not a public speedrun log")
    code = text[:end.start()]
    if code.startswith(RULE + "\n"):
        code = code[len(RULE) + 1:]
    parts = FILE_RULE.split(code)
    files = {"train_gpt.py": parts[0]}
    files.update(zip(parts[1::2], parts[2::2]))
    if "import torch" not in files["train_gpt.py"]:
        raise ParityError(f"{name}: the embedded code does not import torch; not a training script")
    return files


# ----------------------------------------------------------------------------------------------
# 2. Adapt the script: hyperparameters, shape and device, by counted text edits.

def number(node: ast.AST) -> float:
    """Value of a constant arithmetic expression such as `8*64` or `10485760`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Add, ast.Sub, ast.FloorDiv, ast.Div)):
        a, b = number(node.left), number(node.right)
        return {ast.Mult: a * b, ast.Add: a + b, ast.Sub: a - b, ast.FloorDiv: a // b, ast.Div: a / b}[type(node.op)]
    raise ValueError(ast.dump(node))


def hyperparameters(script: str) -> dict[str, tuple[ast.AST, str]]:
    """{field: (its assignment, its value's source)} of the script's `class Hyperparameters`."""
    try:
        tree = ast.parse(script)
    except SyntaxError as e:
        raise ParityError(f"the embedded script does not parse ({e}); the log's code section is damaged") from None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Hyperparameters":
            fields = {}
            for n in node.body:  # 2024: `name : type = value`; 2025: `name = value`
                target = n.target if isinstance(n, ast.AnnAssign) else n.targets[0] if isinstance(n, ast.Assign) else None
                if isinstance(target, ast.Name) and n.value is not None:
                    fields[target.id] = (n, ast.get_source_segment(script, n.value))
            return fields
    raise ParityError("the script has no `class Hyperparameters`; bench/parity.py handles the 2024-2025 trainers")


def set_fields(script: str, values: dict[str, object]) -> str:
    """Replace the default of each Hyperparameters field in `values` (every one must exist)."""
    fields = hyperparameters(script)
    missing = sorted(set(values) - set(fields))
    if missing:
        raise ParityError(f"the script's Hyperparameters have no field {', '.join(missing)}; "
                          f"its trainer changed in a way bench/parity.py does not handle")
    lines = script.splitlines(keepends=True)
    for name, value in values.items():
        node = fields[name][0].value
        if node.lineno != node.end_lineno:
            raise ParityError(f"Hyperparameters.{name} spans several lines; bench/parity.py edits one-line defaults")
        line = lines[node.lineno - 1]
        lines[node.lineno - 1] = line[:node.col_offset] + repr(value) + line[node.end_col_offset:]
    return "".join(lines)


def substitute(script: str, pattern: str, replacement: str, what: str, count: int | None = None) -> tuple[str, int]:
    """re.subn with a check: exactly `count` matches (None: at least one)."""
    new, n = re.subn(pattern, replacement, script, flags=re.M)
    if (count is None and n == 0) or (count is not None and n != count):
        expected = "at least one" if count is None else str(count)
        raise ParityError(f"{what}: found {n} match(es) of /{pattern}/, expected {expected}; "
                          f"the record's script changed in a way bench/parity.py does not handle")
    return new, n


BF16_MODEL = r"^model = model\.cuda\(\)\.bfloat16\(\)$"


def layout_2024(fields: dict, shape: dict, script: str) -> tuple[dict, list[tuple]]:
    """Records #8-#13: batch in sequences of `sequence_length`, warmup/warmdown in iterations."""
    missing = [k for k in ("num_iterations", "warmup_iters", "warmdown_iters") if k not in fields]
    if missing:
        raise ParityError(f"the script's Hyperparameters have no field {', '.join(missing)}; "
                          f"its trainer changed in a way bench/parity.py does not handle")
    seqs = shape["batch_tokens"] // shape["seq_len"]
    try:
        total = number(fields["num_iterations"][0].value)
        scaled = {k: round(number(fields[k][0].value) / total * shape["steps"]) for k in ("warmup_iters", "warmdown_iters")}
    except ValueError as e:
        raise ParityError(f"cannot read the record's schedule from its Hyperparameters ({e})") from None
    values = dict(input_bin=shape["train_files"], input_val_bin=shape["val_files"], batch_size=seqs,
                  device_batch_size=seqs, sequence_length=shape["seq_len"], num_iterations=shape["steps"],
                  val_loss_every=shape["val_every"], val_tokens=shape["val_tokens"], **scaled)
    edits = [(r"^num_vocab = \d+$", f"num_vocab = {shape['vocab_size']}", "the padded vocabulary", 1),
             (r"n_layer=\d+, n_head=\d+, n_embd=\d+",
              f"n_layer={shape['n_layer']}, n_head={shape['n_head']}, n_embd={shape['model_dim']}", "the model shape", 1)]
    if re.search(BF16_MODEL, script, re.M):  # from record #10 (2024-11-08) on, the model is cast to bf16
        edits.append((BF16_MODEL, "model = model.cuda()", "the bf16 cast of the whole model (fp32 on CPU, as ours)", 1))
    return values, edits


def layout_2025(fields: dict, shape: dict, script: str) -> tuple[dict, list[tuple]]:
    """Records #14-#21 or so: one document-masked FlexAttention sequence of `seq_len` tokens per rank and
    step, cooldown as a fraction (kept), the model's encoder masks listed by hand (fixing the depth)."""
    masks = re.search(r"^\s*block_masks = \[([^\]]*)\]", script, re.M)
    if masks:
        listed = len(masks.group(1).split(","))
        depth = 2 * listed if "block_masks.reverse()" in script else listed  # U-net: the decoder reuses them reversed
        if shape["n_layer"] != depth:
            raise ParityError(f"the script lists {listed} block masks by hand, for {depth} layers: use --n_layer={depth}")
    if "BLOCK_SIZE = 128" in script and (shape["batch_tokens"] % 128 or shape["val_tokens"] % 128):
        raise ParityError("the script's block masks need --batch_tokens and --val_tokens to be multiples of 128")
    values = dict(train_files=shape["train_files"], val_files=shape["val_files"], val_tokens=shape["val_tokens"],
                  num_iterations=shape["steps"], val_loss_every=shape["val_every"], seq_len=shape["batch_tokens"],
                  val_seq_len=shape["batch_tokens"])
    edits = [(r"vocab_size=\d+, num_layers=\d+, num_heads=\d+, model_dim=\d+",
              f"vocab_size={shape['vocab_size']}, num_layers={shape['n_layer']}, num_heads={shape['n_head']}, "
              f"model_dim={shape['model_dim']}", "the model shape", 1),
             (r"== 50256\)", f"== {shape['eot']})", "the end-of-text token of the document mask", 1),
             (r"pin_memory=True", "pin_memory=False", "pinned host memory", None)]
    return values, edits


def adapt(script: str, shape: dict) -> tuple[str, list[str]]:
    """The script at `shape` on CPU, and one line per edit made (what the report lists as replaced).

    shape: train_files, val_files (globs relative to the run's folder), vocab_size, eot, n_layer,
    model_dim, n_head, seq_len, batch_tokens, steps, val_every, val_tokens.
    """
    for pattern, feature in UNSUPPORTED:
        if pattern.search(script):
            raise ParityError(f"the script uses {feature}, which has no CPU reference in bench/parity.py yet")
    fields = hyperparameters(script)
    if "input_bin" in fields:
        values, edits = layout_2024(fields, shape, script)
    elif "train_files" in fields and "seq_len" in fields:
        values, edits = layout_2025(fields, shape, script)
    else:
        raise ParityError(f"unknown Hyperparameters layout ({', '.join(sorted(fields)[:6])}, ...); bench/parity.py "
                          "handles the 2024 trainers (input_bin, ...) and the 2025 FlexAttention ones (train_files, seq_len, ...)")
    script = set_fields(script, values)
    notes = [f"Hyperparameters.{k}: {fields[k][1]} -> {v!r}" for k, v in values.items()]
    edits += [(r"^assert torch\.cuda\.is_available\(\)$", "pass  # CPU parity run", "the CUDA assertion", 1),
              (r"""f?(['"])cuda(:\{[^}'"]*\}|:\d+)?\1""", '"cpu"', "CUDA device strings", None)]
    for pattern, replacement, what, count in edits:
        script, n = substitute(script, pattern, replacement, what, count)
        notes.append(f"{what}: {n} x /{pattern}/ -> {replacement}")
    return script, notes


# ----------------------------------------------------------------------------------------------
# 3. Run both trainers, one after the other.

def child_env(imports: Path | None = None) -> dict[str, str]:
    """The environment of a run: one thread; for a public script, its own folder first on the import path
    (its sibling files), never this repo's working folder."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("PYTHONPATH", None)
    if imports is not None:
        env["PYTHONPATH"] = str(imports)
    return env


def run(cmd: list[str], cwd: Path, log: Path, imports: Path | None = None) -> None:
    print("$ " + shlex.join(cmd), flush=True)
    with open(log, "w") as out:
        code = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=child_env(imports)).returncode
    if code != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise ParityError(f"{shlex.join(cmd[:3])} ... exited with {code}: {tail[0]} (full output: {log})")


DATA_LINKS = ("train_data", "val_data")  # the public run reads the shards through these links in its folder


def public_globs(shape: dict) -> dict:
    """The shard globs as the public script sees them: relative to its folder (2025 trainers glob from cwd)."""
    return {key: f"{link}/{Path(shape[key]).name}" for key, link in zip(("train_files", "val_files"), DATA_LINKS)}


def finished(log: Path | None) -> bool:
    """Whether `log` is a run log that reached its last step (what --reuse accepts instead of a rerun)."""
    try:
        return log is not None and log.is_file() and parse_log(log)["status"] in ("finished", "complete")
    except LogError:
        return False


def run_public(script: Path, seed: int, work: Path, shape: dict, reuse: bool = False) -> Path:
    """Run the adapted public script in its own folder; return the log it wrote (logs/<uuid>.txt)."""
    folder = work / f"public_seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)

    def newest_log() -> Path | None:
        logs = sorted((folder / "logs").glob("*.txt"), key=lambda p: p.stat().st_mtime)
        return logs[-1] if logs else None
    if reuse and finished(newest_log()):
        print(f"reusing {newest_log()}", flush=True)
        return newest_log()
    for key, link in zip(("train_files", "val_files"), DATA_LINKS):
        (folder / link).unlink(missing_ok=True)
        (folder / link).symlink_to(Path(shape[key]).resolve().parent, target_is_directory=True)
    run([sys.executable, str(SHIM), f"--seed={seed}", str(script)], folder, folder / "stdout.txt",
        imports=script.resolve().parent)
    if newest_log() is None:
        raise ParityError(f"the public script wrote no logs/*.txt in {folder}")
    return newest_log()


def ours_command(preset: str, shape: dict, seed: int, log_dir: Path, run_id: str) -> list[str]:
    keys = dict(device="cpu", compile="false", train_files=shape["train_files"], val_files=shape["val_files"],
                vocab_size=shape["vocab_size"], n_layer=shape["n_layer"], model_dim=shape["model_dim"],
                n_head=shape["n_head"], seq_len=shape["seq_len"], global_batch_tokens=shape["batch_tokens"],
                micro_batch_tokens=shape["batch_tokens"], num_iterations=shape["steps"], val_every=shape["val_every"],
                val_tokens=shape["val_tokens"], stop_at_target="false", seed=seed, log_dir=str(log_dir), run_id=run_id)
    return [sys.executable, str(REPO / "train_gpt.py"), f"--preset={preset}", *(f"--{k}={v}" for k, v in keys.items())]


def run_ours(preset: str, shape: dict, seed: int, work: Path, reuse: bool = False) -> Path:
    folder = work / f"ours_seed{seed}"
    log = folder / f"ours_seed{seed}.txt"
    if reuse and finished(log):
        print(f"reusing {log}", flush=True)
        return log
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(f"ours_seed{seed}.*"):
        old.unlink()
    run(ours_command(preset, shape, seed, folder, f"ours_seed{seed}"), REPO, folder / "stdout.txt")
    return log


def curve(log: Path) -> dict:
    """{"val": {step: loss}, "ms_per_step": median train_time increment of one step, steps 12 on}.

    Both trainers' train_time excludes validation; the median of single-step increments after the
    first 11 steps (which the 2024 public trainers keep off their clock) is robust to a slow step.
    """
    try:
        parsed = parse_log(log)
    except LogError as e:
        raise ParityError(str(e)) from None
    times = {int(m.group(1)): float(m.group(5)) for m in STEP_LINE.finditer(log.read_text(errors="replace"))
             if m.group(3) != "val_loss"}
    increments = [times[s] - times[s - 1] for s in sorted(times) if s > 11 and s - 1 in times]
    return {"val": {int(s): float(v) for s, v, _ in parsed["val_history"]},
            "ms_per_step": float(np.median(increments)) if increments else None}


# ----------------------------------------------------------------------------------------------
# 4. Compare: table, plot, JSON.

def compare(public: list[dict], ours: list[dict]) -> list[dict]:
    """Per validation step present in every run: mean and 95% CI of each side, difference, Welch p."""
    steps = sorted(set.intersection(*(set(c["val"]) for c in public + ours)))
    rows = []
    for step in steps:
        a, b = [c["val"][step] for c in public], [c["val"][step] for c in ours]
        rows.append({"step": step, "public": stats.mean_std(a)["mean"], "public_ci95": stats.ci95(a),
                     "ours": stats.mean_std(b)["mean"], "ours_ci95": stats.ci95(b),
                     "diff": stats.mean_std(b)["mean"] - stats.mean_std(a)["mean"], "welch_p": stats.welch_p(b, a),
                     "public_runs": a, "ours_runs": b})
    return rows


def mean_or_none(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def fmt_ci(ci) -> str:
    return f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "n/a"


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [f"# Parity: public record {meta['record']} vs `--preset={meta['preset']}`", "",
             f"Measured {meta['date']} on {meta['device']} (torch {meta['torch']}), "
             f"{'assembled with --reuse from runs that finished earlier in the work folder (the harness does not know whether they ran one at a time)' if meta['reused'] else 'one run at a time'}. "
             f"Public log: `{meta['log']}`.", "",
             f"Shape: {meta['shape']['n_layer']} layers x {meta['shape']['model_dim']}, {meta['shape']['n_head']} heads, "
             f"seq {meta['shape']['seq_len']}, vocab {meta['shape']['vocab_size']}, {meta['shape']['batch_tokens']} tokens "
             f"per step, {meta['shape']['steps']} steps, {meta['shape']['val_tokens']} validation tokens every "
             f"{meta['shape']['val_every']} steps; seeds {meta['seeds']}; data `{meta['shape']['train_files']}`.", "",
             "| step | public mean | public 95% CI | ours mean | ours 95% CI | ours − public | Welch p |",
             "|---:|---:|---|---:|---|---:|---:|"]
    for r in rows:
        p = f"{r['welch_p']:.3f}" if r["welch_p"] is not None else "n/a"
        lines.append(f"| {r['step']} | {r['public']:.4f} | {fmt_ci(r['public_ci95'])} | {r['ours']:.4f} | "
                     f"{fmt_ci(r['ours_ci95'])} | {r['diff']:+.4f} | {p} |")
    ms = meta["ms_per_step"]
    shown = {k: f"{v:.1f}" if v is not None else "n/a (12 steps or fewer)" for k, v in ms.items()}
    lines += ["", f"ms/step (median of one step's train_time increment from step 12 on, mean over seeds, as each trainer "
              f"clocks itself): public {shown['public']}, ours {shown['ours']}.", "",
              "Public script adapted (text edits, counted):", *(f"- {n}" for n in meta["edits"]), "",
              "Replaced at run time by bench/parity_shim.py: torch.compile (eager), autocast (fp32), CUDA "
              "synchronize/memory calls, Tensor/Module .cuda and pin_memory, SDPA backend switches, "
              "torch.distributed and DDP (one process), nvidia-smi; FlexAttention by SDPA with its BlockMask made "
              "dense, torch._scaled_mm (FP8) by an fp32 matmul of the fp8 operands (where the script uses them).", "",
              "Command:", "", "```", meta["command"], "```", ""]
    return "\n".join(lines)


def plot(meta: dict, rows: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    steps = [r["step"] for r in rows]
    for side, label in (("public", f"public record {meta['record']}"), ("ours", f"ours --preset={meta['preset']}")):
        mean = np.array([r[side] for r in rows])
        ax.plot(steps, mean, marker=".", label=label)
        cis = [r[f"{side}_ci95"] for r in rows]
        if all(cis):
            ax.fill_between(steps, [c[0] for c in cis], [c[1] for c in cis], alpha=0.25)
    start = next((i for i, s in enumerate(steps) if s > 0), 0)
    if rows:
        ax.set_ylim(min(min(r["public"], r["ours"]) for r in rows) - 0.05, max(rows[start]["public"], rows[start]["ours"]) + 0.1)
    ax.set_xlabel("step")
    ax.set_ylabel("val loss (nats per token)")
    ax.set_title(f"val loss at equal steps, mean and 95% CI over {len(meta['seeds'])} seeds", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    save_png(fig, path)


# ----------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("record", help="README row number (8, #21) or the path of a public log")
    parser.add_argument("--speedrun", type=Path, required=True, help="local checkout of KellerJordan/modded-nanogpt")
    parser.add_argument("--preset", default="speedrun124m", help="our preset whose recipe is compared")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=350)
    parser.add_argument("--n_layer", type=int, default=6)
    parser.add_argument("--model_dim", type=int, default=128)
    parser.add_argument("--n_head", type=int, default=4)
    parser.add_argument("--seq_len", type=int, default=256)
    parser.add_argument("--batch_tokens", type=int, default=8192)
    parser.add_argument("--val_every", type=int, default=25)
    parser.add_argument("--val_tokens", type=int, default=65536)
    parser.add_argument("--vocab_size", type=int, default=320, help="padded vocabulary (byte-level data: 320)")
    parser.add_argument("--eot", type=int, default=256, help="the data's end-of-text token (byte-level: 256; GPT-2: 50256)")
    parser.add_argument("--train_files", default="", help="glob of training shards (default: the embedded byte-level corpus)")
    parser.add_argument("--val_files", default="")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default bench/reports/parity_<record>)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder for the runs (default: a temporary one)")
    parser.add_argument("--reuse", action="store_true",
                        help="read the runs that already finished in --work instead of running them again")
    args = parser.parse_args(argv)
    problems = [f"--{k} must be positive" for k in ("steps", "n_layer", "model_dim", "n_head", "seq_len", "batch_tokens",
                                                   "val_tokens", "vocab_size") if getattr(args, k) < 1]
    if args.batch_tokens % args.seq_len or args.val_tokens % args.batch_tokens:
        problems.append("--batch_tokens must be a multiple of --seq_len and divide --val_tokens")
    if args.model_dim % args.n_head:
        problems.append("--model_dim must be a multiple of --n_head")
    if args.val_every < 1:
        problems.append("--val_every must be >= 1")
    if len(set(args.seeds)) != len(args.seeds):
        problems.append("--seeds must be distinct")
    if problems:
        raise ParityError("; ".join(problems))
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        log = find_log(args.record, args.speedrun)
        files = extract(log.read_text(errors="replace"), str(log))
        if not (args.train_files and args.val_files):
            args.train_files, args.val_files = embedded.prepare("byte")
        shape = {k: getattr(args, k) for k in ("train_files", "val_files", "vocab_size", "eot", "n_layer", "model_dim",
                                               "n_head", "seq_len", "batch_tokens", "steps", "val_every", "val_tokens")}
        script, edits = adapt(files["train_gpt.py"], {**shape, **public_globs(shape)})
        slug = args.record.lstrip("#") if not Path(args.record).is_file() else Path(args.record).stem
        out = args.out or REPO / "bench" / "reports" / f"parity_record{slug}"
        work = Path(args.work or tempfile.mkdtemp(prefix="parity-"))
        work.mkdir(parents=True, exist_ok=True)
        adapted = work / "public_train_gpt.py"
        atomic_write(adapted, script)
        for name, text in list(files.items())[1:]:
            atomic_write(work / name, text)
        public, ours = [], []
        for seed in args.seeds:
            public.append(curve(run_public(adapted, seed, work, shape, args.reuse)))
            ours.append(curve(run_ours(args.preset, shape, seed, work, args.reuse)))
    except ParityError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import torch
    rows = compare(public, ours)
    meta = {"record": f"#{slug}" if slug.isdigit() else slug, "log": str(log.relative_to(args.speedrun)) if
            log.is_relative_to(args.speedrun) else str(log), "preset": args.preset, "seeds": args.seeds, "shape": shape,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "device": f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, "
                      f"OMP_NUM_THREADS={child_env()['OMP_NUM_THREADS']}", "torch": torch.__version__,
            "ms_per_step": {k: mean_or_none([c["ms_per_step"] for c in v]) for k, v in (("public", public), ("ours", ours))},
            "edits": edits, "reused": args.reuse, "command": shlex.join(["python", "-m", "bench.parity", *(argv if argv is not None else sys.argv[1:])])}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "parity.json", json.dumps({**meta, "rows": rows, "public_runs": public, "ours_runs": ours},
                                                 indent=1, default=str) + "\n")
    report = markdown(meta, rows)
    atomic_write(out / "README.md", report)
    plot(meta, rows, out / "val_loss.png")
    print(report)
    print(f"wrote {out / 'README.md'}, {out / 'val_loss.png'}, {out / 'parity.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
