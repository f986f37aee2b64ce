"""``rectorch-simulate``: replay a dataset's test targets as clicks through the strategy layer; one JSON line.

    rectorch-simulate --data logs/cache/<data fingerprint>.npz --arm sasrec=export/A --arm pop=export/B \\
        [--users 20000] [--k 10] [--seed 0] [--last 5000] [--log-dir DIR]

**Data**: an ``.npz`` in the layout of rectorch's prepared-data cache (``logs/cache/<fingerprint>.npz``;
a run's ``run.json`` names the fingerprint as ``data_fingerprint``), read with numpy only: ``item_ids``
(external id of internal item ``i``), ``indptr`` and ``items`` (user ``u`` owns ``items[indptr[u]:indptr[u+1]]``,
oldest first) and, when an encoder reads them, ``user.col.<name>`` (its ``user_<name>`` input; ``users`` gets
``u``). Leave-one-out: a user's last item is the target, the items before it the history.

**Replay**: each arm's top-``k`` for every sampled user is computed once (batched ``recommend_many``).
``--users`` visits draw dataset users with replacement (seeded); each visit is a new user
(``sim-<t>``) served through :class:`~rectorch.serving.strategy.StrategyLayer` over an in-memory store,
first with Thompson sampling, then with a uniform split; a visit clicks the target when the chosen arm's
top-``k`` holds it (feedback at once). Simulated time advances ``1 / --users-per-second`` per visit, so the
bandit's probabilities (``refresh_seconds`` 1 s) are refreshed every few visits, as a server's would be.

**Output**: per policy, each arm's traffic share (overall and over the ``--last`` visits), clicks, and the
cumulative regret ``sum_t (ctr_best - ctr_{arm_t})`` against always playing the best arm, where ``ctr`` is
each arm's true replay CTR (the share of the sampled visits whose target is in its top-``k``); per arm, that
CTR next to its IPS and SNIPS estimates (95 % intervals) from the uniform split's impression log.
"""

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rectorch.experiments.impressions import read_impressions
from rectorch.experiments.off_policy import estimate, rounds_from_log
from rectorch.serving.recommender import Recommendation, Recommender
from rectorch.serving.sessions import MemoryStore
from rectorch.serving.settings import StrategySettings
from rectorch.serving.strategy import build_layer, item_columns

START = 1_700_000_000.0


@dataclass
class Replay:
    """Users with at least one interaction: their history (external ids, oldest first) and test target."""

    users: np.ndarray
    histories: list[list[str]]
    targets: list[str]
    columns: dict[str, np.ndarray]


def load_replay(path: str | Path) -> Replay:
    """The leave-one-out replay of a prepared-data ``.npz`` (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--data {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as error:
        raise ValueError(f"--data {path}: not a readable .npz ({error})") from None
    missing = [name for name in ("item_ids", "indptr", "items") if name not in arrays]
    if missing:
        raise ValueError(f"--data {path}: missing array(s) {', '.join(missing)} (item_ids, indptr, items needed)")
    indptr, items, ids = arrays["indptr"], arrays["items"], arrays["item_ids"].astype(str)
    if indptr.ndim != 1 or len(indptr) < 2 or (np.diff(indptr) < 0).any() or indptr[-1] > len(items):
        raise ValueError(f"--data {path}: indptr must be a non-decreasing offset array into items")
    if len(items) and (items.min() < 0 or items.max() >= len(ids)):
        raise ValueError(f"--data {path}: items must index item_ids (0..{len(ids) - 1})")
    users = np.flatnonzero(np.diff(indptr) > 0)
    if not len(users):
        raise ValueError(f"--data {path}: no user has an interaction")
    histories = [ids[items[indptr[u] : indptr[u + 1] - 1]].tolist() for u in users]
    targets = [str(ids[items[indptr[u + 1] - 1]]) for u in users]
    columns = {name.removeprefix("user.col."): a for name, a in arrays.items() if name.startswith("user.col.")}
    return Replay(users, histories, targets, columns)


def _features(recommender: Recommender, replay: Replay, at: int) -> tuple[dict[str, Any] | None, list[str]]:
    """The encoder's non-history inputs for replay user ``at`` and the names the data cannot give."""
    values, missing = {}, []
    for name in sorted(recommender.encoder.feature_names):
        column = replay.columns.get(name.removeprefix("user_")) if name.startswith("user_") else None
        if name == "users":
            values[name] = int(replay.users[at])
        elif column is not None:
            values[name] = column[replay.users[at]].tolist()
        else:
            missing.append(name)
    return values or None, missing


def top_k(
    recommender: Recommender, replay: Replay, rows: np.ndarray, k: int, batch: int
) -> tuple[dict[int, Recommendation], list[str]]:
    """Replay row → the arm's answer, in batches; plus the encoder inputs left at zero."""
    answers, missing = {}, []
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        requests = []
        for at in chunk:
            features, missing = _features(recommender, replay, at)
            requests.append({"history": replay.histories[at], "k": k, "user_features": features})
        answers.update(zip(chunk.tolist(), recommender.recommend_many(requests), strict=True))
    return answers, missing


class _Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def replay_policy(
    mode: str,
    arms: Mapping[str, Recommender],
    answers: Mapping[str, Mapping[int, Recommendation]],
    replay: Replay,
    visits: np.ndarray,
    settings: Mapping[str, Any],
    users_per_second: float,
    log_dir: Path | None = None,
) -> np.ndarray:
    """Serve ``visits`` (replay rows) through a strategy layer in ``mode``; returns each visit's arm index."""
    clock = _Clock()
    store = MemoryStore(clock=clock, max_records=4 * len(visits) + 1024)
    strategy = StrategySettings(
        mode=mode,
        arms=[{"name": name} for name in arms],
        log_dir=None if log_dir is None else str(log_dir),
        **settings,
    )
    layer = build_layer(strategy, store, clock)
    columns, index = item_columns(arms), {name: i for i, name in enumerate(arms)}
    picks = np.empty(len(visits), np.int64)
    for t, at in enumerate(visits.tolist()):
        clock.now = START + t / users_per_second
        segment = layer.segment(len(replay.histories[at]))
        impression, result = layer.serve(lambda arm, at=at: answers[arm][at], segment, f"sim-{t}", None, columns)
        target = replay.targets[at]
        layer.feedback(impression.impression_id, [target] if target in result.items else [])
        picks[t] = index[impression.arm]
    layer.close()
    return picks


def _summary(picks: np.ndarray, hits: np.ndarray, names: list[str], last: int) -> dict[str, Any]:
    """Traffic shares, clicks and cumulative regret of one policy; ``hits`` is (arms, visits)."""
    n = len(picks)
    ctr = hits.mean(axis=1)
    share = np.bincount(picks, minlength=len(names)) / n
    share_last = np.bincount(picks[-last:], minlength=len(names)) / min(last, n)
    clicks = np.bincount(picks, weights=hits[picks, np.arange(n)], minlength=len(names))
    return {
        "share": dict(zip(names, share.round(4).tolist(), strict=True)),
        "share_last": dict(zip(names, share_last.round(4).tolist(), strict=True)),
        "clicks": dict(zip(names, clicks.astype(int).tolist(), strict=True)),
        "ctr": round(float(clicks.sum() / n), 5),
        "regret": round(float((ctr.max() - ctr[picks]).sum()), 2),
    }


def simulate(
    arms: Mapping[str, Recommender],
    replay: Replay,
    users: int = 20_000,
    k: int = 10,
    seed: int = 0,
    last: int = 5000,
    batch: int = 256,
    users_per_second: float = 10.0,
    settings: Mapping[str, Any] | None = None,
    log_dir: Path | None = None,
) -> dict[str, Any]:
    """The replay's numbers (see the module docstring); the uniform split's log goes to ``log_dir``."""
    if users <= 0 or k <= 0 or last <= 0 or batch <= 0 or users_per_second <= 0:
        raise ValueError("users, k, last, batch and users_per_second must be positive")
    names = list(arms)
    settings = {"seed": seed, **(settings or {})}
    visits = np.random.default_rng(seed).integers(0, len(replay.users), users)
    distinct = np.unique(visits)
    started = time.perf_counter()
    answers, missing = {}, {}
    for name, recommender in arms.items():
        answers[name], left = top_k(recommender, replay, distinct, k, batch)
        if left:
            missing[name] = left
    hits = np.asarray(
        [[replay.targets[at] in answers[name][at].items for at in visits.tolist()] for name in names], np.float64
    )
    seconds = {"top_k": round(time.perf_counter() - started, 2)}
    report: dict[str, Any] = {"users": users, "distinct_users": len(distinct), "k": k, "seed": seed, "last": last}
    for mode in ("thompson", "uniform"):
        started = time.perf_counter()
        picks = replay_policy(
            mode, arms, answers, replay, visits, settings, users_per_second, log_dir if mode == "uniform" else None
        )
        seconds[mode] = round(time.perf_counter() - started, 2)
        report[mode] = _summary(picks, hits, names, last)
    ctr = hits.mean(axis=1)
    report["best_arm"] = names[int(np.argmax(ctr))]
    uniform_regret = report["uniform"]["regret"]
    report["regret_ratio"] = round(report["thompson"]["regret"] / uniform_regret, 4) if uniform_regret else None
    report["arms"] = {}
    if log_dir is not None:
        rounds = rounds_from_log(read_impressions(log_dir))
        for name, true_ctr in zip(names, ctr.tolist(), strict=True):
            estimates = {key: _rounded(value) for key, value in estimate(*rounds, target=name).items()}
            report["arms"][name] = {"true_ctr": round(true_ctr, 5), **estimates}
    report["missing_inputs"] = missing
    report["seconds"] = seconds
    return report


def _rounded(value: Any) -> Any:
    if isinstance(value, list):
        return [round(v, 5) for v in value]
    return value if value is None else round(value, 5)


def _arm(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--arm {text!r}: expected NAME=BUNDLE_DIR, e.g. sasrec=export/sasrec-ml1m")
    return name, path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rectorch-simulate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="prepared-data .npz (item_ids, indptr, items)")
    parser.add_argument("--arm", type=_arm, action="append", required=True, help="NAME=BUNDLE_DIR, once per arm")
    parser.add_argument("--users", type=int, default=20_000, help="simulated visits (users drawn with replacement)")
    parser.add_argument("--k", type=int, default=10, help="answer length")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--last", type=int, default=5000, help="the final visits whose traffic share is reported")
    parser.add_argument("--batch", type=int, default=256, help="users per recommend_many call")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime and FAISS threads")
    parser.add_argument("--users-per-second", type=float, default=10.0, help="simulated arrival rate")
    parser.add_argument("--segment-by", default="history", help="history, none or context.<field>")
    parser.add_argument("--returning-min-history", type=int, default=5)
    parser.add_argument("--log-dir", help="keep the uniform split's impression log here (default: a temporary one)")
    args = parser.parse_args(argv)
    try:
        names = [name for name, _ in args.arm]
        if len(set(names)) < len(names):
            raise ValueError(f"--arm names must be unique, got {names}")
        replay = load_replay(args.data)
        arms = {name: Recommender.from_bundle(path, threads=args.threads) for name, path in args.arm}
        settings = {"segment_by": args.segment_by, "returning_min_history": args.returning_min_history}
        with tempfile.TemporaryDirectory(prefix="rectorch-simulate-") as scratch:
            log_dir = Path(args.log_dir) if args.log_dir else Path(scratch)
            if log_dir.is_dir() and any(log_dir.glob("*.parquet")):
                raise ValueError(f"--log-dir {log_dir} already holds .parquet files; give an empty or new directory")
            report = simulate(
                arms, replay, args.users, args.k, args.seed, args.last, args.batch, args.users_per_second,
                settings, log_dir,
            )  # fmt: skip
    except (ValueError, OSError) as error:  # BundleError is a ValueError
        print(f"rectorch-simulate: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    print(json.dumps(report))
    return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
