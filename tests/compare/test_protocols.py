"""Runs measured under different protocols or on different data are never ranked against each other."""

from pathlib import Path

import pytest

from rectorch.compare import compare, protocol_groups
from rectorch.compare.cli import main
from tests.compare.conftest import FULL, log_fake_run

SAMPLED = {**FULL, "ranking": "sampled-100"}


def test_protocol_mismatch_is_grouped_and_warned(
    empty_store: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    uri = empty_store
    log_fake_run(uri, "sasrec", 0.30)
    log_fake_run(uri, "ease", 0.20)
    log_fake_run(uri, "bert4rec", 0.60, protocol=SAMPLED)
    comparison = compare(uri)
    assert len(protocol_groups(comparison.runs)) == 2
    assert "2 different protocols" in comparison.warning
    table = comparison.table
    sampled = table[table["protocol"].str.contains("sampled-100")]
    assert list(sampled["rank"]) == [1] and sampled["ndcg@10"].item() == pytest.approx(0.60)
    full = table[table["protocol"].str.contains("ranking=full")]
    assert list(full["model"]) == ["sasrec", "ease"] and list(full["rank"]) == [1, 2]

    assert main(["--tracking-uri", uri, "--plots", str(tmp_path / "plots"), "--no-popularity"]) == 0
    captured = capsys.readouterr()
    assert "warning:" in captured.err and captured.out.count("protocol:") == 2
    assert len(list((tmp_path / "plots").glob("*/val_ndcg_vs_epoch.png"))) == 2


def test_different_data_is_a_different_group(empty_store: str) -> None:
    log_fake_run(empty_store, "sasrec", 0.30, fingerprint="aaaaaaaa")
    log_fake_run(empty_store, "sasrec", 0.35, fingerprint="bbbbbbbb")
    assert len(protocol_groups(compare(empty_store).runs)) == 2


def test_filters_by_model_and_tag(empty_store: str, capsys: pytest.CaptureFixture) -> None:
    log_fake_run(empty_store, "sasrec", 0.30)
    log_fake_run(empty_store, "ease", 0.20)
    assert [run.model for run in compare(empty_store, tags={"model_family": "ease"}).runs] == ["ease"]
    assert main(["--tracking-uri", empty_store, "--model", "sasrec"]) == 0
    out = capsys.readouterr().out
    assert "sasrec-" in out and "ease-" not in out
