"""Reading one table: every compression and a UTF-8 byte-order mark still read; bad files get named reasons."""

import bz2
import gzip
import lzma
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from rectorch.data.errors import DataError
from rectorch.data.tables import find_file, read_table, require_columns

BODY = "user_id,item_id\n1,2\n1,3\n"


@pytest.mark.parametrize(
    ("name", "pack"),
    [
        ("log.csv", str.encode),
        ("log.csv", lambda t: b"\xef\xbb\xbf" + t.encode()),  # UTF-8 byte-order mark
        ("log.csv.gz", lambda t: gzip.compress(t.encode())),
        ("log.csv.bz2", lambda t: bz2.compress(t.encode())),
        ("log.csv.xz", lambda t: lzma.compress(t.encode())),
    ],
)
def test_good_files_still_read(tmp_path: Path, name: str, pack) -> None:
    (tmp_path / name).write_bytes(pack(BODY))
    frame = read_table(tmp_path / name, str_cols=["user_id", "item_id"])
    assert frame.to_dict("list") == {"user_id": ["1", "1"], "item_id": ["2", "3"]}


def test_zip_with_one_file_reads_and_with_two_is_refused(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "one.csv.zip", "w") as archive:
        archive.writestr("inner.csv", BODY)
    assert len(read_table(tmp_path / "one.csv.zip")) == 2
    with zipfile.ZipFile(tmp_path / "two.csv.zip", "w") as archive:
        archive.writestr("a.csv", BODY)
        archive.writestr("b.csv", BODY)
    with pytest.raises(DataError, match=r"two\.csv\.zip: a \.zip must hold exactly one data file, found 2"):
        read_table(tmp_path / "two.csv.zip")


def test_a_big_truncated_gzip_fails_in_the_parser_not_only_in_the_head_check(tmp_path: Path) -> None:
    body = "user_id,item_id\n" + "".join(f"{i},{i % 97}\n" for i in range(400_000))
    packed = gzip.compress(body.encode())
    assert len(packed) > 1 << 17  # longer than the checked head, so pandas meets the end of the stream
    (tmp_path / "log.csv.gz").write_bytes(packed[: len(packed) - 100])
    with pytest.raises(
        DataError, match=r"log\.csv\.gz: cannot decompress \(EOFError: .*\); the \.gz file is truncated"
    ):
        read_table(tmp_path / "log.csv.gz")


def test_first_row_longer_than_the_header_is_refused_not_shifted(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text("a,b\n1,2,3\n4,5\n")  # pandas would make column a the index
    with pytest.raises(DataError, match=r"data row 1 has more fields than the header's 2"):
        read_table(tmp_path / "log.csv")


def test_duplicate_names_in_parquet_and_text(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text('a,"a",b\n1,2,3\n')
    with pytest.raises(DataError, match=r"duplicate column name\(s\) \['a'\]"):
        read_table(tmp_path / "log.csv")
    (tmp_path / "ok.csv").write_text("a,a.1,b\n1,2,3\n")  # what pandas would rename a duplicate to, written out
    assert list(read_table(tmp_path / "ok.csv").columns) == ["a", "a.1", "b"]


def test_directory_and_missing_candidates(tmp_path: Path) -> None:
    (tmp_path / "data.csv").mkdir()
    with pytest.raises(DataError, match=r"data\.csv: is a directory, not a data file$"):
        find_file([tmp_path / "data.csv"])
    with pytest.raises(DataError, match=r"is a directory, not a data file\. Or set x\.$"):
        find_file([tmp_path / "data.csv"], "Or set x.")
    with pytest.raises(DataError, match=r"data\.csv: is a directory"):
        read_table(tmp_path / "data.csv")


def test_not_found_columns_list_is_bounded(tmp_path: Path) -> None:
    frame = pd.DataFrame({f"c{i}": [1] for i in range(50)})
    frame.to_csv(tmp_path / "wide.csv", index=False)
    with pytest.raises(DataError) as err:
        require_columns(read_table(tmp_path / "wide.csv"), ["user_id"], tmp_path / "wide.csv")
    assert "'c19', ... (50 in all)]" in str(err.value) and "'c20'" not in str(err.value)
