"""``rectorch-abtest <impressions parquet or dir>``: a per-arm table, then one JSON line."""

import argparse
import json
import sys

from rectorch.experiments.abtest import analyse
from rectorch.experiments.impressions import read_impressions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rectorch-abtest", description=__doc__)
    parser.add_argument("logs", help="an impression log: one Parquet file or a directory of them")
    parser.add_argument("--control", default="control", help="the control arm's name (default: control)")
    parser.add_argument("--mde", type=float, default=0.01, help="minimum detectable effect, absolute (0.01 = 1 pp)")
    parser.add_argument("--power", type=float, default=0.8)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--catalog-size", type=int, default=None, help="items in the catalog, for coverage")
    args = parser.parse_args(argv)
    try:
        report = analyse(read_impressions(args.logs), args.control, args.mde, args.power, args.alpha, args.catalog_size)
    except (ValueError, OSError) as error:
        print(f"rectorch-abtest: {error}", file=sys.stderr)
        return 2
    print(report.table())
    print(json.dumps(report.to_dict()))
    return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
