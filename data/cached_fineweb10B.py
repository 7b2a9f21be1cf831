"""Download the speedrun's GPT-2-tokenized FineWeb10B shards from the Hugging Face hub.

The dataset repo kjj0/fineweb10B-gpt2 holds fineweb_val_000000.bin and fineweb_train_000001.bin
... fineweb_train_000103.bin, 100M tokens (~200 MB) each. This fetches the validation shard and the
first N training shards; the speedrun124m preset (public record #8's 4,578 steps) reads 25.

    python data/cached_fineweb10B.py 25           # the shards speedrun124m reads (or: python -m data.cached_fineweb10B 25)

Files that already hold a valid shard are skipped without asking the hub; missing, truncated or
otherwise invalid ones are (re)downloaded. A connection that drops mid-file is resumed with HTTP
Range requests by huggingface_hub; after Ctrl-C, rerun the same command to fetch what is missing.
Set HF_ENDPOINT to use a mirror of the hub.
"""
import argparse
import os
import sys
from pathlib import Path

from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

from data.hub import HubError, hub_request
from data.shards import ShardError, read_header

REPO = "kjj0/fineweb10B-gpt2"
TRAIN_SHARDS = 103
DEFAULT_DIR = Path(__file__).resolve().parent / "fineweb10B"


class DownloadError(Exception):
    """The download cannot go on; the message says why and what to do."""


def shard_names(n_train: int) -> list[str]:
    """The validation shard's file name, then the first n_train training shards'."""
    return ["fineweb_val_000000.bin"] + [f"fineweb_train_{i:06d}.bin" for i in range(1, n_train + 1)]


def is_complete(path: Path) -> bool:
    """Whether path holds a whole, valid shard (header and size agree)."""
    try:
        read_header(path)
    except ShardError:
        return False
    return True


def download_shards(n_train: int, local_dir: str | os.PathLike = DEFAULT_DIR, repo: str = REPO,
                    endpoint: str | None = None) -> list[Path]:
    """Make local_dir hold the validation shard and the first n_train training shards; return their paths.

    endpoint overrides HF_ENDPOINT (the hub's address). Raises DownloadError or HubError with a message.
    """
    if not 1 <= n_train <= TRAIN_SHARDS:
        raise DownloadError(f"N must be between 1 and {TRAIN_SHARDS} (the number of training shards in {repo}), "
                            f"got {n_train}")
    local_dir = Path(local_dir)
    paths = [local_dir / name for name in shard_names(n_train)]
    missing = []
    for path in paths:
        if is_complete(path):
            print(f"skipping {path.name} (complete)")
        else:
            missing.append(path)
    if missing:  # one quick request first, so an unreachable hub fails now rather than after the library's retries
        with hub_request(f"reach dataset {repo}", endpoint):
            get_hf_file_metadata(hf_hub_url(repo, missing[0].name, repo_type="dataset", endpoint=endpoint))
    for i, path in enumerate(missing, 1):
        if path.exists():
            print(f"{path.name} is incomplete or invalid; downloading it again")
            path.unlink()
        print(f"downloading {path.name} ({i}/{len(missing)}) into {local_dir}")
        with hub_request(f"download {path.name} from dataset {repo}", endpoint):
            hf_hub_download(repo_id=repo, filename=path.name, repo_type="dataset", local_dir=local_dir,
                            endpoint=endpoint)
        try:
            read_header(path)
        except ShardError as error:
            raise DownloadError(f"the hub sent a file that is not a valid shard: {error}") from None
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("n_train", metavar="N", type=int,
                        help=f"number of training shards to fetch, 1..{TRAIN_SHARDS} (plus the validation shard)")
    parser.add_argument("--local_dir", default=DEFAULT_DIR, type=Path,
                        help="where the shards go (default: data/fineweb10B)")
    parser.add_argument("--repo", default=REPO, help=f"dataset repo on the hub (default: {REPO})")
    args = parser.parse_args(argv)
    try:
        paths = download_shards(args.n_train, args.local_dir, args.repo)
    except (DownloadError, HubError) as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:
        sys.exit("interrupted: finished shards are kept; run the same command again to fetch the rest")
    print(f"{len(paths)} shards ready in {args.local_dir}")


if __name__ == "__main__":
    main()
