"""``rectorch-compare``: the leaderboard of finished runs, as text, Markdown/CSV and PNG plots."""

import argparse
import sys
import warnings
from pathlib import Path

from rectorch.compare.comparison import compare
from rectorch.compare.popularity import PopularityWarning
from rectorch.compare.store import PARENT_TAG, StoreError, default_tracking_uri

EXIT_NO_RUNS = 1
EXIT_USAGE = 2


def _tag(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rectorch-compare",
        description="Compare finished rectorch training runs from the MLflow store: a leaderboard ranked by "
        "test NDCG@k within each evaluation protocol, optional Markdown/CSV tables and PNG plots.",
    )
    parser.add_argument("--tracking-uri", help=f"MLflow store (default: {default_tracking_uri()})")
    parser.add_argument(
        "-e", "--experiment", action="append", help="experiment name, e.g. rectorch-ml1m (repeatable; default: all)"
    )
    parser.add_argument("--model", action="append", help="keep only this model family (repeatable)")
    parser.add_argument("--tag", action="append", type=_tag, default=[], help="KEY=VALUE tag filter (repeatable)")
    parser.add_argument("--sweep", metavar="RUN_ID", help="only the child runs of this --multirun parent run")
    parser.add_argument("-k", type=int, default=10, help="metric cut-off (default: 10)")
    parser.add_argument("--out", type=Path, help="write leaderboard.md and leaderboard.csv here")
    parser.add_argument("--plots", type=Path, help="write PNG plots here (and log each run's plots to it)")
    parser.add_argument(
        "--no-popularity", action="store_true", help="skip the recommended-popularity plot (it rebuilds each model)"
    )
    parser.add_argument("--no-log-artifacts", action="store_true", help="do not log plots back to the runs")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit code (0 ok, 1 no matching runs, 2 bad store/experiment/arguments)."""
    args = build_parser().parse_args(argv)
    tags = dict(args.tag)
    if args.sweep:
        tags[PARENT_TAG] = args.sweep
    try:
        comparison = compare(args.tracking_uri, args.experiment, tags, args.k)
    except StoreError as error:
        print(f"rectorch-compare: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if args.model:
        comparison.runs = [run for run in comparison.runs if run.model in args.model]
    if not comparison.runs:
        print(f"rectorch-compare: no finished runs match in {comparison.tracking_uri}", file=sys.stderr)
        return EXIT_NO_RUNS
    if comparison.warning:
        print(comparison.warning, file=sys.stderr)
    print(comparison.text())
    written = comparison.write_tables(args.out) if args.out else []
    if args.plots:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", PopularityWarning)
            written += comparison.write_plots(
                args.plots, popularity=not args.no_popularity, log_to_runs=not args.no_log_artifacts
            )
        for warning in caught:
            if issubclass(warning.category, PopularityWarning):
                print(f"rectorch-compare: note: {warning.message}", file=sys.stderr)
            else:
                warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    for path in written:
        print(f"wrote {path}")
    return 0


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
