"""Failure corpus, data files and data settings: each bad input is one clear line, and leaves nothing behind.

A file case must raise a ``DataError`` naming the file (and the column and value) on one line, with no cache
entry written and the input unchanged; a setting case a ``ValueError`` naming the key and the value. The CLI
cases run the real ``rectorch-train``: exit code 2, one ``rectorch-train: error:`` line, no traceback, nothing
added to or removed from ``paths.log_dir``. Generated CSV rows (hypothesis) must never crash the reader.
"""

import csv
import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rectorch.data import columns as C
from rectorch.data.errors import DataError
from rectorch.data.prepare import Preprocessing, load_or_prepare
from rectorch.data.sources import InteractionsFileSource
from rectorch.training.cli import _root_cause
from tests.failures.data_cases import (
    CLI_CASES,
    FILE_CASES,
    MAX_MESSAGE,
    SETTING_CASES,
    CliCase,
    FileCase,
    Outcome,
    SettingCase,
    attempt_cli,
    attempt_file,
    attempt_setting,
    error_lines,
)


def assert_clear(outcome: Outcome, kind: type[Exception], *fragments: str) -> None:
    """A ``kind`` error with a one-line message holding every fragment, no leftovers and unchanged inputs."""
    assert outcome.error is not None, "the bad input was accepted"
    assert isinstance(outcome.error, kind), f"{type(outcome.error).__name__}: {outcome.message[:500]}"
    assert "\n" not in outcome.message and len(outcome.message) <= MAX_MESSAGE, outcome.message[:1000]
    for fragment in fragments:
        assert fragment in outcome.message, f"{fragment!r} not in {outcome.message!r}"
    assert not outcome.leftovers, f"left in the cache: {outcome.leftovers}"
    assert not outcome.changed, f"inputs changed: {outcome.changed}"


@pytest.mark.parametrize("case", FILE_CASES, ids=lambda c: c.id)
def test_bad_file_is_one_clear_data_error(tmp_path: Path, case: FileCase) -> None:
    outcome = attempt_file(case, tmp_path)
    assert_clear(outcome, DataError, outcome.target, *case.expect)


@pytest.mark.parametrize("case", SETTING_CASES, ids=lambda c: c.id)
def test_bad_setting_is_one_clear_value_error(tmp_path: Path, case: SettingCase) -> None:
    assert_clear(attempt_setting(case, tmp_path), ValueError, *case.expect)


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda c: c.id)
def test_cli_exits_2_with_one_line_and_leaves_nothing(tmp_path: Path, case: CliCase) -> None:
    outcome = attempt_cli(case, tmp_path)
    assert outcome.returncode == 2, outcome.message[-3000:]
    assert "Traceback" not in outcome.message, outcome.message[-3000:]
    lines = error_lines(outcome.message)
    assert len(lines) == 1 and len(lines[0]) <= MAX_MESSAGE, outcome.message[-3000:]
    for fragment in case.expect:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert not outcome.leftovers, f"left under paths.log_dir: {outcome.leftovers}"
    assert not outcome.changed, f"changed: {outcome.changed}"


# ---------------------------------------------------------------------------------------------- the CLI wrapper


def test_cli_reports_the_outermost_rectorch_error_on_one_line(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text("")
    with pytest.raises(DataError) as data_error:  # raised from pandas' EmptyDataError, which says nothing useful
        InteractionsFileSource(tmp_path / "log.csv", time_col="none").load()
    assert data_error.value.__cause__ is not None and _root_cause(data_error.value) is data_error.value
    with pytest.raises(InstantiationException) as wrapped:
        instantiate({"_target_": "rectorch.data.views.SequenceView", "max_len": "abc"})
    cause = _root_cause(wrapped.value)
    assert type(cause) is ValueError and str(cause) == "max_len must be a positive integer or null, got 'abc'"


def test_cli_falls_back_to_the_root_of_a_foreign_error_on_one_line() -> None:
    try:
        try:
            raise OSError("disk\n  full")
        except OSError as inner:
            raise KeyError("outer") from inner
    except KeyError as error:
        cause = _root_cause(error)
    assert type(cause).__name__ == "OSError" and str(cause) == "disk full"
    plain = ValueError("no cause")
    assert _root_cause(plain) is plain


# ---------------------------------------------------------------------------------------------- the cache key


def test_tab_separated_file_renamed_csv_does_not_reuse_its_cache_entry(tmp_path: Path) -> None:
    body = "user_id\titem_id\n1\t10\n1\t11\n2\t10\n"
    (tmp_path / "log.tsv").write_text(body)
    (tmp_path / "log.csv").write_text(body)  # the same bytes: read with the comma separator it is one column
    cache = tmp_path / "cache"
    tsv = load_or_prepare(InteractionsFileSource(tmp_path / "log.tsv", time_col="none"), Preprocessing(), cache)
    assert tsv.num_interactions == 3
    with pytest.raises(DataError, match=r"log\.csv.*is `sep` right\?"):
        load_or_prepare(InteractionsFileSource(tmp_path / "log.csv", time_col="none"), Preprocessing(), cache)
    given_sep = InteractionsFileSource(tmp_path / "log.csv", time_col="none", sep="\t")
    assert load_or_prepare(given_sep, Preprocessing(), cache).num_interactions == 3
    assert len(list(cache.glob("*.npz"))) == 2  # the .csv read with sep=\t has its own entry


def test_explicit_and_inferred_separator_share_a_cache_entry(tmp_path: Path) -> None:
    (tmp_path / "log.tsv").write_text("user_id\titem_id\n1\t10\n2\t11\n")
    cache = tmp_path / "cache"
    for sep in (None, "\t"):
        load_or_prepare(InteractionsFileSource(tmp_path / "log.tsv", time_col="none", sep=sep), Preprocessing(), cache)
    assert len(list(cache.glob("*.npz"))) == 1


# ---------------------------------------------------------------------------------------------- generated rows

GARBAGE = st.sampled_from(
    ["", " ", "nan", "NA", "1", "1.0", "-0", "inf", "-inf", "1e400", "9223372036854775808", "2020-01-01",
     "01/02/2020 10:00", "2020-13-45", '"', '""', ",", "\n", "\r\n", "\t", "\x00", "1,2", "\\", "\ufeff", "é"]
)  # fmt: skip
CELL = st.one_of(GARBAGE, st.text(st.characters(exclude_categories=["Cs"]), max_size=12), st.integers().map(str))
QUICK = settings(max_examples=80, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def load_or_data_error(path: Path, **options) -> Exception | None:
    """Prepare ``path`` with a cache beside it; only a one-line DataError naming the file may come out."""
    cache = path.parent / "cache"
    try:
        prepared = load_or_prepare(InteractionsFileSource(path, **options), Preprocessing(), cache)
    except DataError as error:
        assert "\n" not in str(error) and str(path) in str(error) and len(str(error)) <= MAX_MESSAGE, str(error)
        assert not cache.exists() or not any(cache.iterdir())
        return error
    assert prepared.num_interactions >= 1 and len(list(cache.glob("*.npz"))) == 1
    return None


@QUICK
@given(st.lists(st.lists(CELL, max_size=5), max_size=8))
def test_raw_garbage_rows_never_crash(rows: list[list[str]]) -> None:
    body = "user_id,item_id,timestamp\n" + "\n".join(",".join(row) for row in rows)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "log.csv"
        path.write_bytes(body.encode("utf-8", "surrogatepass"))
        load_or_data_error(path, time_col="timestamp")


@QUICK
@given(st.lists(st.tuples(CELL, CELL, CELL), min_size=1, max_size=8))
def test_quoted_garbage_cells_never_crash(rows: list[tuple[str, str, str]]) -> None:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([("user_id", "item_id", "timestamp"), *rows])
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "log.csv"
        path.write_text(out.getvalue())
        error = load_or_data_error(path, time_col="timestamp")
        if error is None:  # accepted: every row became one interaction with its ids as written
            raw = InteractionsFileSource(path, time_col="timestamp").load().interactions
            assert raw[C.USER].tolist() == [r[0].strip() for r in rows]


@QUICK
@given(st.binary(max_size=600))
def test_binary_garbage_never_crashes(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "log.csv"
        path.write_bytes(content)
        load_or_data_error(path, time_col="none")


@QUICK
@given(st.lists(st.integers(min_value=-(2**70), max_value=2**70), min_size=1, max_size=10))
def test_integer_timestamps_are_exact_or_refused_beyond_int64(stamps: list[int]) -> None:
    body = "user_id,item_id,timestamp\n" + "".join(f"u{i % 3},i{i},{t}\n" for i, t in enumerate(stamps))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "log.csv"
        path.write_text(body)
        in_range = all(-(2**63) <= t < 2**63 for t in stamps)
        try:
            parsed = InteractionsFileSource(path, time_col="timestamp").load().interactions[C.TIME]
        except DataError as error:
            assert not in_range and "int64" in str(error), str(error)
            first = next(i for i, t in enumerate(stamps) if not -(2**63) <= t < 2**63)
            assert f"data row {first + 1}:" in str(error)
        else:
            assert in_range and parsed.dtype == np.int64 and parsed.tolist() == stamps
