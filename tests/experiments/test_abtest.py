"""A/B analysis (issue 17, item 5): the issue's bars on generated logs, the schema's one-line errors."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats

from rectorch.experiments import analyse, read_impressions, sample_size_per_arm, two_proportion_test
from rectorch.experiments.cli import main
from rectorch.experiments.simulate_logs import simulate


def _write(table: pa.Table, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def test_ten_vs_twelve_percent_is_significant(tmp_path: Path, capsys) -> None:
    """The bar: 10 % vs 12 % CTR, 20,000 users per arm, through a Parquet file and the CLI: p < 0.01."""
    _write(simulate({"control": 0.10, "treatment": 0.12}, 20000, seed=3), tmp_path / "logs/a.parquet")
    assert main([str(tmp_path / "logs")]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    control, treatment = report["arms"]
    assert (control["arm"], control["users"], treatment["users"]) == ("control", 20000, 20000)
    assert abs(control["ctr"] - 0.10) < 0.01 and abs(treatment["ctr"] - 0.12) < 0.01
    assert treatment["lift"]["p_value"] < 0.01 and treatment["lift"]["ci"][0] > 0
    assert control["conversion_ci"][0] < control["conversion"] < control["conversion_ci"][1]


def test_per_user_conversion_not_rows(tmp_path: Path) -> None:
    """A user with many shown items counts once: conversion is the share of users with a click."""
    table = simulate({"control": 0.1, "b": 0.1}, 500, seed=1, impressions_per_user=2, items_per_impression=5)
    arms = analyse(read_impressions(_write(table, tmp_path / "x.parquet"))).arms
    log = table.to_pydict()
    for arm in arms:
        clicked_users = {
            u for u, a, c in zip(log["user_id"], log["arm"], log["clicked"], strict=True) if a == arm["arm"] and c
        }
        assert arm["conversion"] == len(clicked_users) / 500 and arm["shown"] == 5000 and arm["impressions"] == 1000


def test_aa_false_positives_and_ci_coverage() -> None:
    """A/A: p > 0.05 in >= 90 of 100 seeds; A/B: the lift's 95 % CI covers the true lift in >= 90 of 100 seeds.

    Per-user conversions are Bernoulli, so an arm's converted-user count is binomial: drawn directly.
    The count of misses is Binomial(100, 0.05); P(more than 10) is about 1.1 %.
    """
    rng = np.random.default_rng(0)
    n = 20000
    aa = [two_proportion_test(rng.binomial(n, 0.1), n, rng.binomial(n, 0.1), n)["p_value"] for _ in range(100)]
    assert sum(p > 0.05 for p in aa) >= 90
    covered = 0
    for _ in range(100):
        ci = two_proportion_test(rng.binomial(n, 0.10), n, rng.binomial(n, 0.12), n)["ci"]
        covered += ci[0] <= 0.02 <= ci[1]
    assert covered >= 90


def test_z_test_matches_chi_square() -> None:
    """The pooled two-proportion z-test is the uncorrected 2x2 chi-square test: same p-value, z^2 = chi2."""
    test = two_proportion_test(200, 2000, 260, 2100)
    chi2, p, _, _ = stats.chi2_contingency([[200, 1800], [260, 1840]], correction=False)
    assert test["p_value"] == pytest.approx(p, rel=1e-9) and test["z"] ** 2 == pytest.approx(chi2, rel=1e-9)


def test_sample_size_textbook_value_and_power() -> None:
    """p1 = 0.10, p2 = 0.12, two-sided alpha 0.05, power 0.8: 3,841 per arm (Fleiss, pooled variance), and
    a z-test at that size rejects in about 80 % of simulated experiments."""
    n = sample_size_per_arm(0.10, 0.02, power=0.8, alpha=0.05)
    assert n == 3841
    h = 2 * math.asin(math.sqrt(0.12)) - 2 * math.asin(math.sqrt(0.10))  # arcsine form (statsmodels' effect size)
    assert abs(n - 2 * ((stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) / h) ** 2) < 10
    rng = np.random.default_rng(7)
    c, t = rng.binomial(n, 0.10, 4000), rng.binomial(n, 0.12, 4000)
    pooled = (c + t) / (2 * n)
    z = (t - c) / n / np.sqrt(pooled * (1 - pooled) * 2 / n)
    assert 0.77 < np.mean(2 * stats.norm.sf(np.abs(z)) < 0.05) < 0.83
    assert sample_size_per_arm(0.10, 0.01) > 4 * sample_size_per_arm(0.10, 0.02) * 0.9  # n ~ 1 / mde^2


def test_guardrails_planted() -> None:
    """Coverage, intra-list diversity and popularity percentile on a hand-made log with known answers."""
    log = {
        "impression_id": np.array(["i1", "i1", "i2", "i2", "j1", "j1"]),
        "user_id": np.array(["u1", "u1", "u2", "u2", "v1", "v1"]),
        "arm": np.array(["control"] * 4 + ["b"] * 2),
        "item_id": np.array(["a", "b", "a", "c", "d", "d"]),
        "clicked": np.array([True, False, False, False, False, True]),
        "category": np.array(["x", "x", "x", "y", "z", "z"]),
        "popularity": np.array([10.0, 5.0, 10.0, 1.0, 20.0, 20.0]),
    }
    control, b = analyse(log, catalog_size=8).arms
    assert (control["coverage"], b["coverage"]) == (3 / 8, 1 / 8)
    assert (control["diversity"], b["diversity"]) == (0.75, 0.5)  # i1: 1 of 2 distinct, i2: 2 of 2; j1: 1 of 2
    # percentiles among the 4 distinct items (c 12.5, b 37.5, a 62.5, d 87.5)
    assert control["popularity_percentile"] == pytest.approx((62.5 + 37.5 + 62.5 + 12.5) / 4)
    assert b["popularity_percentile"] == pytest.approx(87.5)
    assert (control["conversion"], b["conversion"]) == (0.5, 1.0)
    assert analyse(log).arms[0]["coverage"] == 3  # no catalog size: distinct items


def test_directory_and_custom_control(tmp_path: Path, capsys) -> None:
    for seed in (1, 2):  # two files, different users
        table = simulate({"base": 0.1, "new": 0.1}, 100, seed=seed)
        ids = pa.array([f"s{seed}-{u}" for u in table.column("user_id").to_pylist()])
        _write(table.set_column(1, "user_id", ids), tmp_path / f"logs/day{seed}/part.parquet")
    assert main([str(tmp_path / "logs"), "--control", "base", "--mde", "0.05"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    report = json.loads(out[-1])
    assert [a["arm"] for a in report["arms"]] == ["base", "new"] and report["arms"][0]["users"] == 200
    assert out[0].split()[0] == "arm" and report["settings"]["sample_size_per_arm"] > 0


def _bad(tmp_path: Path, table: pa.Table) -> Path:
    return _write(table, tmp_path / "bad.parquet")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.drop_columns(["clicked"]), r"bad\.parquet: missing column\(s\) clicked"),
        (lambda t: t.set_column(6, "clicked", pa.array([1] * len(t))), r"bad\.parquet: column 'clicked' must be bool"),
        (lambda t: t.set_column(4, "position", pa.array([0.5] * len(t))), r"column 'position' must be int"),
        (lambda t: t.set_column(1, "user_id", pa.array([1] * len(t))), r"column 'user_id' must be str"),
        (lambda t: t.set_column(5, "propensity", pa.array([0.0] * len(t))), r"'propensity' must lie in \(0, 1\]"),
        (lambda t: t.set_column(2, "arm", pa.array(["x"] * len(t))), r"control arm 'control' not in the log"),
        (lambda t: t.set_column(1, "user_id", pa.array(["same"] * len(t))), r"user 'same' appears in more than one"),
    ],
)
def test_bad_logs_one_line(tmp_path: Path, capsys, change, message: str) -> None:
    path = _bad(tmp_path, change(simulate({"control": 0.1, "b": 0.2}, 20, seed=0)))
    assert main([str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert re.search(message, err), err


def test_unreadable_and_missing(tmp_path: Path, capsys) -> None:
    (tmp_path / "junk.parquet").write_text("not parquet")
    (tmp_path / "empty").mkdir()
    for target, message in [
        (tmp_path / "junk.parquet", "junk.parquet: not a readable Parquet file"),
        (tmp_path / "empty", "directory holds no .parquet files"),
        (tmp_path / "nope", "nope: no such file or directory"),
    ]:
        assert main([str(target)]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err


def test_import_loads_no_torch() -> None:
    import subprocess
    import sys

    code = "import sys, rectorch.experiments.cli; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )
