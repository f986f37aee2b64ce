"""Synthetic impression logs with given per-arm CTRs: ``python -m rectorch.experiments.simulate_logs``.

Each user is assigned one arm and sees ``impressions_per_user`` answers of ``items_per_impression`` items
drawn (by popularity) from a catalog with categories; each shown item is clicked with its arm's CTR.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def simulate(
    ctrs: dict[str, float],
    users_per_arm: int,
    seed: int = 0,
    impressions_per_user: int = 1,
    items_per_impression: int = 1,
    catalog_size: int = 1000,
    categories: int = 20,
) -> pa.Table:
    """One table, one row per shown item, in the schema of :mod:`rectorch.experiments.impressions`."""
    for arm, ctr in ctrs.items():
        if not 0 <= ctr <= 1:
            raise ValueError(f"ctr of arm {arm!r} must lie in [0, 1], got {ctr}")
    rng = np.random.default_rng(seed)
    popularity = rng.zipf(1.5, catalog_size).astype(np.float64)
    weights = popularity / popularity.sum()
    item_category = rng.integers(0, categories, catalog_size)
    k, per_user = items_per_impression, impressions_per_user
    parts = []
    for a, (arm, ctr) in enumerate(ctrs.items()):
        n_imps = users_per_arm * per_user
        user = np.repeat(np.arange(users_per_arm), per_user * k)
        imp = np.repeat(np.arange(n_imps), k)
        items = rng.choice(catalog_size, size=n_imps * k, p=weights)
        parts.append(
            {
                "impression_id": np.char.add(f"{arm}-", imp.astype(str)),
                "user_id": np.char.add(f"u{a}-", user.astype(str)),
                "arm": np.full(n_imps * k, arm),
                "item_id": items.astype(str),
                "position": np.tile(np.arange(k), n_imps),
                "propensity": np.full(n_imps * k, 1.0 / len(ctrs)),
                "clicked": rng.random(n_imps * k) < ctr,
                "timestamp": np.repeat(np.arange(n_imps, dtype=np.float64), k),
                "category": np.char.add("c", item_category[items].astype(str)),
                "popularity": popularity[items],
            }
        )
    columns = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    return pa.table(
        {name: pa.array(values.tolist() if values.dtype.kind == "U" else values) for name, values in columns.items()}
    )


def _arm(text: str) -> tuple[str, float]:
    name, _, ctr = text.partition("=")
    try:
        return name, float(ctr)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--arm {text!r}: expected NAME=CTR, e.g. control=0.10") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rectorch.experiments.simulate_logs", description=__doc__)
    parser.add_argument("--out", required=True, help="directory to write impressions-<seed>.parquet into")
    parser.add_argument("--arm", type=_arm, action="append", required=True, help="NAME=CTR, once per arm")
    parser.add_argument("--users-per-arm", type=int, default=20000)
    parser.add_argument("--impressions-per-user", type=int, default=1)
    parser.add_argument("--items-per-impression", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        table = simulate(
            dict(args.arm), args.users_per_arm, args.seed, args.impressions_per_user, args.items_per_impression
        )
    except ValueError as error:
        print(f"simulate_logs: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out / f"impressions-{args.seed}.parquet")
    print(f"{table.num_rows} rows -> {out / f'impressions-{args.seed}.parquet'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
