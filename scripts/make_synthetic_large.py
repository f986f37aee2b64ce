"""Writes a large synthetic log in chunks of users (``rectorch.data.synthetic_large``) and prints one JSON line:
rows, files, seconds, bytes on disk, peak RSS.

    OMP_NUM_THREADS=1 python scripts/make_synthetic_large.py --out /tmp/syn50m --users 2000000 --items 1000000
    OMP_NUM_THREADS=1 python scripts/make_synthetic_large.py --out /tmp/syn10m --users 400000 --items 200000

``--out`` must be a new or empty folder (exit 2 otherwise; nothing there is touched). ``--categories`` defaults
to one per 1,000 items (at least 20). The folder feeds ``scripts/bench_prepare.py`` and ``data=parquet``.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import resource
import sys
import time
from pathlib import Path

from rectorch.data.synthetic_large import LargeSyntheticWriter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="a new or empty folder")
    parser.add_argument("--users", type=int, default=2_000_000)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--interactions-per-user", type=int, default=25, help="mean sequence length (>= 5)")
    parser.add_argument("--categories", type=int, default=None, help="default: items // 1000, at least 20")
    parser.add_argument("--segments", type=int, default=100)
    parser.add_argument("--categories-per-segment", type=int, default=5)
    parser.add_argument("--follow-prob", type=float, default=0.5)
    parser.add_argument("--zipf-exponent", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--users-per-chunk", type=int, default=100_000)
    args = parser.parse_args()
    start = time.perf_counter()
    categories = args.categories if args.categories is not None else max(args.items // 1000, min(args.items, 20))
    try:
        writer = LargeSyntheticWriter(
            num_users=args.users,
            num_items=args.items,
            num_categories=categories,
            num_segments=args.segments,
            categories_per_segment=args.categories_per_segment,
            seq_len_mean=args.interactions_per_user,
            follow_prob=args.follow_prob,
            zipf_exponent=args.zipf_exponent,
            seed=args.seed,
            users_per_chunk=args.users_per_chunk,
        )
        meta = writer.write(args.out)
    except (ValueError, OSError) as err:
        print(f"make_synthetic_large: {err}", file=sys.stderr)
        sys.exit(2)
    files = [path for path in Path(args.out).rglob("*") if path.is_file()]
    row = {
        "out": args.out,
        "rows": meta["rows"],
        "users": meta["users"],
        "items": meta["items"],
        "files": len(files),
        "parts": len(meta["parts"]),
        "seconds": round(time.perf_counter() - start, 2),
        "bytes": sum(path.stat().st_size for path in files),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "threads": os.environ.get("OMP_NUM_THREADS"),
    }
    print(json.dumps(row))


if __name__ == "__main__":
    main()
