"""Cell parsing: exact integer timestamps, dates past 2262, bounded date parsing, id twins, short messages."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rectorch.data.cells import MAX_TIME_TEXT, clean_ids, one_line, parse_timestamps, short
from rectorch.data.errors import DataError

PATH = Path("log.csv")


def seconds(*cells: object) -> list[int]:
    return parse_timestamps(pd.Series(list(cells)), PATH, "ts").tolist()


def test_integer_timestamps_are_exact_at_the_int64_limits() -> None:
    top, bottom = 2**63 - 1, -(2**63)
    assert seconds(top, bottom, 0) == [top, bottom, 0]
    assert seconds(str(top), "2020-01-01T00:00:00Z") == [top, 1577836800]  # a mixed text column keeps it exact


@pytest.mark.parametrize(
    ("cells", "row", "shown"),
    [
        (["1", "9223372036854775808"], 2, "'9223372036854775808'"),  # text: to_numeric gives uint64
        ([np.uint64(2**63)], 1, "9223372036854775808"),
        (["2020-01-01", "-9223372036854775809"], 2, "'-9223372036854775809'"),
        ([5.0, 1e19], 2, "1e+19"),
        ([5.0, float("-inf")], 2, "-inf"),
    ],
)
def test_timestamps_beyond_int64_are_refused_with_row_and_value(cells: list, row: int, shown: str) -> None:
    values = pd.Series(cells) if not isinstance(cells[0], np.uint64) else pd.Series(cells, dtype=np.uint64)
    with pytest.raises(DataError) as err:
        parse_timestamps(values, PATH, "ts")
    assert "'ts' has 1 timestamp(s) beyond the int64 range" in str(err.value)
    assert f"data row {row}: {shown}" in str(err.value)


def test_dates_past_2262_and_before_1970_become_floored_seconds() -> None:
    assert seconds("9999-12-31", "1969-12-31T23:59:59.5Z") == [253402214400, -1]


def test_non_iso_dates_use_the_first_cells_format_then_free_form() -> None:
    assert seconds("01/31/2020", "1/2/2020", "12/30/2019 10:00") == [1580428800, 1577923200, 1577700000]


def test_unparseable_date_fails_on_the_first_bad_row_of_a_large_column() -> None:
    cells = ["2020-01-01"] * 3 + ["soon"] * 300_000
    with pytest.raises(DataError, match=r"'ts' has unparseable timestamp\(s\); first at data row 4: 'soon'"):
        seconds(*cells)


def test_overlong_timestamp_text_is_refused_before_parsing_with_a_short_message() -> None:
    ok = "2020-01-01T10:00:00.123456+05:30"
    assert seconds(ok) == [1577853000]
    with pytest.raises(DataError) as err:
        seconds(ok, "2020-01-01 " + "1." * 500_000)
    message = str(err.value)
    assert f"longer than {MAX_TIME_TEXT} characters; first at data row 2: '2020-01-01 1.1" in message
    assert len(message) < 200 and message.endswith("...")


def test_ids_written_as_an_integer_and_as_a_float_are_refused() -> None:
    with pytest.raises(DataError, match=r"'u' writes one id two ways, '7' and '7.0' \(first at data row 3\)"):
        clean_ids(pd.Series(["7", "8", "7.0"]), PATH, "u")
    assert clean_ids(pd.Series(["7.0", "8.0"]), PATH, "u").tolist() == ["7.0", "8.0"]  # consistent: kept
    assert clean_ids(pd.Series([7.0, 8.0]), PATH, "u").tolist() == ["7", "8"]  # a float column of whole ids
    assert clean_ids(pd.Series(["007", "7"]), PATH, "u").tolist() == ["007", "7"]  # leading zeros are text


def test_short_and_one_line() -> None:
    assert short("x" * 10) == "'xxxxxxxxxx'"
    assert short("x" * 1000) == "'" + "x" * 76 + "..." and len(short("x" * 1000)) == 80
    assert short(np.uint64(5)) == "5"
    assert one_line("Error tokenizing data.\n  C error: EOF\n") == "Error tokenizing data. C error: EOF"
