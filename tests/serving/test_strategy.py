"""The bandit, segments and the impression log (issue 17, parts 2-3), without HTTP.

This folder also runs with only the ``[serve]`` extra: the checks through ``rectorch.experiments``
(scipy) skip there.
"""

import math
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from rectorch.serving import impression_log
from rectorch.serving.impression_log import SCHEMA, ImpressionLog, impression_rows
from rectorch.serving.sessions import MemoryStore, SessionStore, open_store
from rectorch.serving.settings import ServeSettings, StrategySettings, serve_settings
from rectorch.serving.strategy import Bandit, segment_of
from tests.serving.redis_server import RedisServer, need_redis


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def play(bandit: Bandit, ctrs: list[float], rounds: int, clock: Clock, seed: int = 0) -> np.ndarray:
    """Bernoulli rewards with planted CTRs; one refresh of the probabilities per round; the arm index per round."""
    rng = np.random.default_rng(seed)
    picks = np.empty(rounds, np.int64)
    for t in range(rounds):
        clock.now += bandit.refresh_seconds
        arm, _ = bandit.choose("all")
        picks[t] = bandit.arms.index(arm)
        bandit.record_impression("all", arm)
        if rng.random() < ctrs[picks[t]]:
            bandit.record_click("all", arm)
    return picks


def test_thompson_finds_the_planted_best_arm_with_half_the_uniform_regret() -> None:
    ctrs, rounds, last = [0.04, 0.07, 0.10], 6000, 1500
    regret = {}
    for mode in ("thompson", "uniform"):
        clock = Clock()
        bandit = Bandit(["a", "b", "c"], MemoryStore(clock=clock), mode, draws=1000, seed=1, clock=clock)
        picks = play(bandit, ctrs, rounds, clock)
        regret[mode] = float((max(ctrs) - np.asarray(ctrs)[picks]).sum())
        if mode == "thompson":
            assert np.mean(picks[-last:] == 2) >= 0.8
            counts = bandit.counts("all")
            assert sum(n for n, _ in counts.values()) == rounds
    assert regret["uniform"] == pytest.approx(rounds * (0.10 - 0.07), rel=0.1)  # (0.06 + 0.03 + 0) / 3 per round
    assert regret["thompson"] <= 0.5 * regret["uniform"]


def exact_win_probabilities(alpha: np.ndarray, beta: np.ndarray, points: int = 200_001) -> np.ndarray:
    """P(arm i's draw is the largest) = integral of pdf_i(x) * prod_{j != i} cdf_j(x) dx, on a fine grid."""
    x = np.linspace(0.0, 1.0, points)[1:-1]
    dx = x[1] - x[0]
    log_norm = [math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) for a, b in zip(alpha, beta, strict=True)]
    pdf = np.exp(np.asarray(log_norm)[:, None] + (alpha[:, None] - 1) * np.log(x) + (beta[:, None] - 1) * np.log1p(-x))
    cdf = np.cumsum(pdf, axis=1) * dx
    return np.asarray([(pdf[i] * np.prod(np.delete(cdf, i, axis=0), axis=0)).sum() * dx for i in range(len(alpha))])


def test_propensities_sum_to_one_match_the_exact_probabilities_and_the_picks() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    bandit = Bandit(["a", "b", "c"], store, draws=20000, refresh_seconds=60, seed=3, clock=clock)
    planted = {"a": (100, 12), "b": (80, 12), "c": (40, 3)}  # impressions, clicks
    for arm, (n, c) in planted.items():
        store.incr("strategy:default:returning", f"{arm}:impressions", n)
        store.incr("strategy:default:returning", f"{arm}:clicks", c)
    chance = bandit.probabilities("returning")
    assert chance.sum() == pytest.approx(1.0, abs=1e-12)
    n, c = np.asarray(list(planted.values()), float).T
    exact = exact_win_probabilities(1 + c, 1 + n - c)
    assert np.abs(chance - exact).max() < 4 * np.sqrt(0.25 / 20000)
    picks = [bandit.choose("returning") for _ in range(20000)]
    for i, arm in enumerate(bandit.arms):
        logged = {p for a, p in picks if a == arm}
        assert logged == {chance[i]}  # the logged propensity is the probability the choice was drawn with
        frequency = sum(a == arm for a, _ in picks) / len(picks)
        assert abs(frequency - chance[i]) < 4 * np.sqrt(chance[i] * (1 - chance[i]) / len(picks))


def test_probabilities_are_cached_per_segment_until_refresh() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    bandit = Bandit(["a", "b"], store, refresh_seconds=1.0, clock=clock)
    before = bandit.probabilities("new")
    store.incr("strategy:default:new", "a:impressions", 1000)  # a never clicked: b wins once re-read
    assert bandit.probabilities("new") is before
    clock.now += 1.0
    assert bandit.probabilities("new")[1] > 0.99
    assert bandit.probabilities("returning")[1] < 0.99  # another segment keeps its own posterior


def test_uniform_split_is_exactly_one_over_arms_and_sticky_per_user() -> None:
    bandit = Bandit(["a", "b", "c"], MemoryStore(), "uniform", seed=5)
    picks = {f"user{u}": bandit.choose("new", f"user{u}") for u in range(3000)}
    assert {p for _, p in picks.values()} == {1 / 3}
    assert all(bandit.choose("returning", user) == pick for user, pick in list(picks.items())[:100])
    shares = np.bincount([bandit.arms.index(a) for a, _ in picks.values()]) / 3000
    assert np.abs(shares - 1 / 3).max() < 0.04
    anonymous = {bandit.choose("new")[0] for _ in range(60)}
    assert anonymous == {"a", "b", "c"}


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_processes_share_the_posterior_through_the_store(backend: str, tmp_path: Path) -> None:
    """Two bandits over one store (as two server processes) learn from each other's counts."""
    server = None
    if backend == "redis":
        need_redis()
        server = RedisServer(tmp_path).start()
    try:
        first: SessionStore = open_store(server.url if server else "memory://")
        second = open_store(server.url) if server else first
        one, two = (Bandit(["a", "b"], store, refresh_seconds=0.001) for store in (first, second))
        for _ in range(30):
            one.record_impression("new", "a")
            two.record_impression("new", "a")
            two.record_click("new", "a")
        one.record_impression("new", "b")
        assert one.counts("new") == two.counts("new") == {"a": (60.0, 30.0), "b": (1.0, 0.0)}
    finally:
        if server is not None:
            first.close()
            second.close()
            server.stop()


def test_segments() -> None:
    history = StrategySettings(mode="thompson", returning_min_history=3)
    assert [segment_of(history, n) for n in (0, 2, 3, 50)] == ["new", "new", "returning", "returning"]
    assert segment_of(StrategySettings(mode="uniform", segment_by="none"), 9) == "all"
    device = StrategySettings(mode="thompson", segment_by="context.device", context_segments=4)
    assert segment_of(device, 0, {"device": 2.0}) == "device=2"
    assert segment_of(device, 0, {"hour": 3}) == "device=missing"
    for bad in (4, 1.5, -1):
        with pytest.raises(ValueError, match=r"context field 'device' segments the traffic: .* \[0, 4\)"):
            segment_of(device, 0, {"device": bad})


@pytest.mark.parametrize(
    ("strategy", "message"),
    [
        ({"mode": "greedy"}, "strategy.mode must be one of"),
        ({"arms": [{"name": "a"}]}, "strategy.arms are set but strategy.mode is off"),
        ({"mode": "uniform", "arms": [{"name": "a"}, {"name": "a"}]}, "arm names must be unique"),
        ({"mode": "uniform", "arms": [{"bundle": "x"}]}, "every arm needs a name"),
        ({"mode": "uniform", "arms": [{"name": "a b"}]}, "arm name must be"),
        ({"mode": "uniform", "arms": [{"name": "a", "settings": {"mmr": 1}}]}, "unknown setting 'settings.mmr'"),
        ({"mode": "uniform", "arms": [{"name": "a", "weight": 2}]}, "strategy.arms[0]: unknown setting 'weight'"),
        ({"mode": "uniform", "control": "b"}, "strategy.control 'b' is not an arm"),
        ({"mode": "thompson", "segment_by": "device"}, "segment_by must be history, none or context.<field>"),
        ({"mode": "thompson", "explore_share": 0.9}, "explore_share must lie in [0, 0.5]"),
        ({"mode": "thompson", "draws": 1}, "strategy.draws must lie in"),
    ],
)
def test_bad_strategy_settings_are_one_line_errors(strategy: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        serve_settings(None, {"bundle": "b", "strategy": strategy}, "settings file s.yaml")
    assert message in str(error.value) and str(error.value).startswith("settings file s.yaml: ")


def test_strategy_defaults() -> None:
    assert ServeSettings().strategy.mode == "off" and ServeSettings().strategy.arms == []
    one = StrategySettings(mode="thompson")
    assert [a.name for a in one.arms] == ["control"] and one.control == "control"
    two = StrategySettings(mode="uniform", arms=[{"name": "b"}, {"name": "c", "bundle": "x"}])
    assert two.control == "b" and two.arms[1].bundle == "x"


def record(items: list[str], arm: str = "a", user: str = "u") -> dict:
    n = len(items)
    return {
        "user": user, "arm": arm, "segment": "new", "propensity": 0.5, "items": items, "scores": [1.0] * n,
        "sources": ["ann"] * n, "categories": ["c1"] * n, "popularity": [3.0] * n, "time": 10.0,
        "context": {"device": 1},
    }  # fmt: skip


def rows(count: int, start: int = 0) -> dict[str, list]:
    """``count`` one-item impressions."""
    parts = [impression_rows(f"imp{i}", record([f"i{i}"])) for i in range(start, start + count)]
    return {name: [v for part in parts for v in part[name]] for name in SCHEMA.names}


def test_impression_rows_are_the_schema_rectorch_abtest_reads(tmp_path: Path) -> None:
    pytest.importorskip("scipy", reason="rectorch.experiments needs the [experiments] extra")
    from rectorch.experiments import analyse, read_impressions
    from rectorch.experiments.impressions import REQUIRED_COLUMNS

    log = ImpressionLog(tmp_path)
    log.append(impression_rows("imp1", record(["x", "y", "z"], user="u1"), ["y"], ["y"], 12.0))
    log.append(impression_rows("imp2", record(["x", "w"], arm="control", user="u2")))
    (written,) = log.flush()
    schema = pq.read_schema(written)
    assert set(REQUIRED_COLUMNS) <= set(schema.names)  # read_impressions checks their kinds
    assert str(schema.field("position").type) == "int32" and str(schema.field("clicked").type) == "bool"
    data = read_impressions(tmp_path)
    assert data["clicked"].tolist() == [False, True, False, False, False]
    assert data["position"].tolist() == [0, 1, 2, 0, 1] and data["converted"].tolist()[1] is True
    assert data["feedback_timestamp"][0] == 12.0 and np.isnan(data["feedback_timestamp"][3])
    assert data["context"][0] == '{"device": 1}'
    report = analyse(data, control="control")
    assert [(a["arm"], a["users"], a["clicks"]) for a in report.arms] == [("control", 1, 0), ("a", 1, 1)]


def ids(directory: Path) -> list[str]:
    return [i for f in directory.glob("*.parquet") for i in pq.read_table(f).column("impression_id").to_pylist()]


def test_log_rotates_by_rows_and_by_age_and_never_leaves_a_partial_file(tmp_path: Path) -> None:
    clock = Clock()
    log = ImpressionLog(tmp_path, rows_per_file=10, flush_seconds=30, clock=clock)
    log.append(rows(25))
    files = sorted(tmp_path.glob("*.parquet"))
    assert [pq.read_metadata(f).num_rows for f in files] == [10, 10] and log.buffered == 5
    clock.now += 29
    log.flush_due()
    assert len(list(tmp_path.glob("*.parquet"))) == 2
    clock.now += 31
    log.flush_due()
    assert log.buffered == 0 and len(list(tmp_path.glob("*.parquet"))) == 3
    assert sorted(ids(tmp_path)) == sorted(f"imp{i}" for i in range(25))
    assert not [p for p in tmp_path.iterdir() if not p.name.endswith(".parquet")]


def test_a_failed_write_keeps_the_rows_and_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = ImpressionLog(tmp_path, rows_per_file=100)
    log.append(rows(3))

    def broken(table, where, **_):
        Path(where).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(impression_log.pq, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        log.flush()
    assert list(tmp_path.iterdir()) == [] and log.buffered == 3
    monkeypatch.undo()
    log.close()
    assert sorted(ids(tmp_path)) == ["imp0", "imp1", "imp2"]


def test_an_existing_file_is_never_overwritten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two logs writing in the same microsecond from one pid get distinct names."""

    class Frozen:
        @staticmethod
        def now(_):
            from datetime import UTC, datetime

            return datetime(2026, 1, 1, tzinfo=UTC)

    monkeypatch.setattr(impression_log, "datetime", Frozen)
    first, second = ImpressionLog(tmp_path), ImpressionLog(tmp_path)
    first.append(rows(2))
    second.append(rows(3, start=2))
    (one,), (two,) = first.flush(), second.flush()
    assert one != two and one.name.endswith(f"-{os.getpid()}-000001.parquet")
    assert pq.read_metadata(one).num_rows == 2 and pq.read_metadata(two).num_rows == 3


def test_bad_log_input() -> None:
    with pytest.raises(ValueError, match="rows_per_file"):
        ImpressionLog("/tmp", rows_per_file=0)
    with pytest.raises(ValueError, match="cannot be created"):
        ImpressionLog("/proc/rectorch-logs")
    with pytest.raises(ValueError, match="need the columns"):
        ImpressionLog("/tmp").append({"impression_id": ["x"]})
