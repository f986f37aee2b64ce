"""Download verification and extraction, offline: the URL opener serves a zip built in tmp_path."""

import hashlib
import io
import zipfile

import pytest

from rectorch.data import download as dl
from rectorch.data.errors import DataError


def zip_bytes(members: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return buffer.getvalue()


@pytest.fixture
def serve(monkeypatch):
    """Serve ``payload`` for every URL; pin its md5 as the published one unless told otherwise."""

    def setup(payload: bytes, md5: str | None = None) -> list[str]:
        urls: list[str] = []

        def fake_urlopen(url: str, timeout: float) -> io.BytesIO:
            urls.append(url)
            return io.BytesIO(payload)

        monkeypatch.setattr(dl, "urlopen", fake_urlopen)
        monkeypatch.setitem(dl.MD5, "ml-100k", md5 or hashlib.md5(payload).hexdigest())
        return urls

    return setup


def test_verified_archive_is_extracted(serve, tmp_path):
    urls = serve(zip_bytes({"ml-100k/u.data": "1\t2\t3\t4\n"}))
    folder = dl.download("ml-100k", tmp_path)
    assert urls == ["https://files.grouplens.org/datasets/movielens/ml-100k.zip"]
    assert (folder / "u.data").read_text() == "1\t2\t3\t4\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ml-100k"]  # no archive left behind


def test_checksum_mismatch_refuses_and_deletes(serve, tmp_path):
    serve(zip_bytes({"ml-100k/u.data": "tampered"}), md5="0" * 32)
    with pytest.raises(DataError, match=r"does not match the published 0{32}"):
        dl.download("ml-100k", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_member_outside_destination_is_refused(serve, tmp_path):
    serve(zip_bytes({"../escape.txt": "x"}))
    with pytest.raises(DataError, match="outside"):
        dl.download("ml-100k", tmp_path / "dest")
    assert not (tmp_path / "escape.txt").exists()


def test_unknown_dataset():
    with pytest.raises(DataError, match="ml-100k"):
        dl.download("ml-25m", "unused")


def test_command_line(serve, tmp_path, capsys):
    serve(zip_bytes({"ml-100k/u.item": "x"}))
    dl.main(["ml-100k", "--dest", str(tmp_path)])
    assert "ml-100k" in capsys.readouterr().out and (tmp_path / "ml-100k" / "u.item").exists()
