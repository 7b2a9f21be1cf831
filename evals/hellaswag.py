"""HellaSwag (Zellers et al., 2019) accuracy of a train_gpt.py checkpoint, scored as llm.c and the
public speedrun report it.

    python -m evals.hellaswag checkpoints/RUN_ID[/step_NNNNNN] [--data=FILE] [--limit=N]

Each example is a context and four endings. Every ending is appended to the context (tokenized as
ctx and " " + ending) and scored by the cross-entropy of its tokens given what precedes them:
    acc_norm: the ending of lowest mean per-token loss is the answer (llm.c's "acc_norm")
    acc:      the ending of lowest summed loss
Accuracy p over n examples is printed with its standard error √(p(1 − p)/n). A context and ending
longer than the model's seq_len keep their last seq_len tokens.

Data: the validation split of the hub dataset Rowan/hellaswag (data/validation-00000-of-00001.parquet,
10,042 examples), downloaded into the Hugging Face cache on first use (HF_ENDPOINT selects a mirror);
or --data=FILE, the same in llm.c's hellaswag_val.jsonl form (one JSON object per line with ctx,
endings and label) or as that parquet file.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.utils import LocalEntryNotFoundError
from tqdm import tqdm

from analysis.checkpoint import find_checkpoint, load_model
from data.hub import HubError, hub_request
from data.tokenizer import get_tokenizer

REPO = "Rowan/hellaswag"
VALIDATION_FILE = "data/validation-00000-of-00001.parquet"


def download(endpoint: str | None = None) -> Path:
    """The validation parquet file of REPO: the Hugging Face cache's copy, else from the hub (one quick
    metadata request first, so an unreachable hub fails at once rather than after the library's retries)."""
    try:
        return Path(hf_hub_download(REPO, VALIDATION_FILE, repo_type="dataset", local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    with hub_request(f"download {VALIDATION_FILE} from dataset {REPO}", endpoint):
        get_hf_file_metadata(hf_hub_url(REPO, VALIDATION_FILE, repo_type="dataset", endpoint=endpoint))
        return Path(hf_hub_download(REPO, VALIDATION_FILE, repo_type="dataset", endpoint=endpoint))


def load_examples(path: str | Path) -> list[dict]:
    """[{ctx, endings, label}] from a .jsonl (llm.c's form) or .parquet (the hub's) file; labels as ints."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no HellaSwag file at {path}; omit --data to download {REPO} from the hub")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq
        rows = pq.read_table(path, columns=["ctx", "endings", "label"]).to_pylist()
    else:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    examples = []
    for i, row in enumerate(rows):
        try:
            example = {"ctx": row["ctx"], "endings": list(row["endings"]), "label": int(row["label"])}
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: example {i} lacks a ctx, endings or integer label ({e!r})") from None
        if not 0 <= example["label"] < len(example["endings"]):
            raise ValueError(f"{path}: example {i} has label {example['label']} but {len(example['endings'])} endings")
        examples.append(example)
    return examples


def render(example: dict, encode, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens, mask) of shape (endings, T): context + ending rows, right-padded; mask 1 on ending tokens."""
    ctx = encode(example["ctx"])
    rows = []
    for ending in example["endings"]:
        end = encode(" " + ending)
        rows.append(((ctx + end)[-max_len:], ([0] * len(ctx) + [1] * len(end))[-max_len:]))
    width = max(len(tokens) for tokens, _ in rows)
    tokens = torch.tensor([t + [0] * (width - len(t)) for t, _ in rows])
    mask = torch.tensor([m + [0] * (width - len(m)) for _, m in rows])
    return tokens, mask


@torch.no_grad()
def ending_losses(model, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed and mean cross-entropy of each row's ending tokens, each predicted from the tokens before it."""
    logits = model(tokens)[:, :-1]
    losses = F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten(), reduction="none")
    losses = losses.view(tokens.shape[0], -1) * mask[:, 1:]
    total = losses.sum(dim=1)
    return total, total / mask[:, 1:].sum(dim=1)


def evaluate(model, examples: list[dict], encode, max_len: int, device: torch.device | str = "cpu") -> dict:
    """acc and acc_norm (see the module doc) with standard errors √(p(1 − p)/n)."""
    right = {"acc": 0, "acc_norm": 0}
    for example in tqdm(examples, desc="hellaswag", unit="example"):
        tokens, mask = render(example, encode, max_len)
        total, mean = ending_losses(model, tokens.to(device), mask.to(device))
        right["acc"] += int(total.argmin().item() == example["label"])
        right["acc_norm"] += int(mean.argmin().item() == example["label"])
    n = len(examples)
    result = {"n": n}
    for key, count in right.items():
        p = count / n
        result[key], result[f"{key}_stderr"] = p, math.sqrt(p * (1 - p) / n)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a step folder (…/step_NNNNNN) or a run folder (its newest step)")
    parser.add_argument("--data", help=f"a local .jsonl or .parquet file (default: download {REPO})")
    parser.add_argument("--limit", type=int, help="evaluate only the first N examples")
    parser.add_argument("--tokenizer", help="gpt2 | byte (default: the checkpoint's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    try:
        step_dir = find_checkpoint(args.checkpoint)
        examples = load_examples(args.data or download())[:args.limit]
        model, state = load_model(step_dir, args.device)
        tokenizer = get_tokenizer(args.tokenizer or model.cfg.tokenizer)
    except HubError as e:
        parser.error(f"{e}\nor evaluate a local copy: --data=FILE (.jsonl or .parquet)")
    except (FileNotFoundError, ValueError) as e:
        parser.error(str(e))
    if tokenizer.n_vocab > model.cfg.vocab_size:
        parser.error(f"the {tokenizer.name} tokenizer has {tokenizer.n_vocab} tokens but the model only "
                     f"{model.cfg.vocab_size}; pass the tokenizer the model was trained with (--tokenizer)")
    result = evaluate(model, examples, tokenizer.encode_ordinary, model.cfg.seq_len, args.device)
    print(f"hellaswag {step_dir} (step {state['step']}), {result['n']} examples: "
          f"acc_norm {result['acc_norm']:.4f} ± {result['acc_norm_stderr']:.4f}, "
          f"acc {result['acc']:.4f} ± {result['acc_stderr']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
