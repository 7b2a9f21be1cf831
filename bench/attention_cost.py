"""CPU cost per token of the document-masked sliding-window attention path against dense SDPA.

    python bench/attention_cost.py [--tokens 8192] [--repeats 5] [--quick]

At the tiny preset's scale (4 heads of 32, 8,192 tokens per micro-batch), times forward + backward
of (a) the attention op alone and (b) the whole tiny GPT (4 layers, width 128, byte vocabulary):
dense causal SDPA on rows of 256 tokens (the tiny preset), against kernels/attention.py's SDPA path
on one packed row of all the tokens with documents of the embedded corpus's separator every
`--doc_len` tokens on average, windows long/short as listed. Prints the date, the command, torch's
thread count and a Markdown table of the median CPU time (not wall-clock) over repeats, in
microseconds per token. CPU only:
the FlexAttention path needs CUDA to train and is not timed here.
"""
from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time

import torch

import train_gpt
from kernels.attention import document_ids, masked_attention

HEADS, HEAD_DIM, SEP = 4, 32, 256


def median_seconds(fn, repeats: int) -> float:
    """Median CPU time of this process (time.process_time: all its threads) over `repeats` calls after a
    warm-up: on a shared machine wall-clock time measures the neighbours, CPU time the work."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return statistics.median(times)


def random_tokens(tokens: int, doc_len: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    row = torch.randint(0, SEP, (1, tokens), generator=g)
    row[torch.rand(1, tokens, generator=g) < 1 / doc_len] = SEP
    row[0, 0] = SEP
    return row


def op_case(tokens: int, row: int, docs, window: int):
    """Forward + backward of the attention op on tokens/row rows of `row` tokens."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(tokens // row, HEADS, row, HEAD_DIM, generator=g, requires_grad=True) for _ in range(3))

    def run():
        masked_attention(q, k, v, docs, window, backend="sdpa").sum().backward()
    return run


def model_case(tokens: int, row: int, overrides: dict, data: torch.Tensor):
    cfg = train_gpt.Config(**{**train_gpt.PRESETS["tiny"], "seq_len": row, **overrides})
    torch.manual_seed(0)
    model = train_gpt.GPT(cfg)
    model.windows = train_gpt.layer_windows(cfg, 0)
    x = data.view(tokens // row, row)

    def run():
        model(x[:, :-1], x[:, 1:]).backward()
    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--doc_len", type=int, default=1000, help="mean document length of the random row")
    parser.add_argument("--quick", action="store_true", help="512 tokens, 1 repeat (a smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.tokens, args.repeats = 512, 1
    if args.tokens % 256 or args.tokens < 512 or args.repeats < 1 or args.doc_len < 1:
        print("error: --tokens must be a multiple of 256 (at least 512), --repeats and --doc_len positive",
              file=sys.stderr)
        return 2
    T = args.tokens
    data = random_tokens(T, args.doc_len)
    docs = document_ids(data, SEP)
    print(f"# attention cost, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{platform.machine()} CPU, torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print(f"# command: python bench/attention_cost.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(f"# {T} tokens per forward+backward, median CPU time of {args.repeats}; documents every ~{args.doc_len} tokens\n")
    rows = [
        ("dense causal, rows of 256 (tiny preset)", 256, None, 0, {}),
        ("documents + window 256, one packed row", T, docs, 256, dict(doc_mask=True, attn_window=256)),
        ("documents + window 128, one packed row", T, docs, 128, dict(doc_mask=True, attn_window=128)),
        ("documents + windows LSSL 256/128, one packed row", T, None, None,
         dict(doc_mask=True, attn_window=256, window_pattern="LSSL")),
        ("documents, no window, one packed row", T, docs, 0, dict(doc_mask=True)),
    ]
    print("| path | attention op CPU µs/token | tiny GPT CPU µs/token | GPT vs dense 256 |")
    print("|---|---|---|---|")
    base = None
    for name, row, row_docs, window, overrides in rows:
        op = "—" if window is None else f"{1e6 * median_seconds(op_case(T, row, row_docs, window), args.repeats) / T:.2f}"
        gpt = median_seconds(model_case(T, row, overrides, data), args.repeats) / T
        base = base or gpt
        print(f"| {name} | {op} | {1e6 * gpt:.2f} | {gpt / base:.2f}× |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
