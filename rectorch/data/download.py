"""Download and verify the official GroupLens MovieLens archives.

Usage: ``python -m rectorch.data.download {ml-1m,ml-100k} --dest DIR`` extracts into ``DIR/ml-1m/`` (or
``DIR/ml-100k/``), the layout the dataset configs read under ``RECTORCH_DATA_DIR``.

GroupLens publishes MD5 (not SHA-256) checksums next to each archive (``<url>.md5``); the values below
are those, as also pinned by independent projects. A mismatch deletes the download and raises.
Note that ``ml-1m.zip`` holds the official ``ratings.dat`` (read by ``data=ml1m_raw``), not the
SASRec-processed ``ml-1m.txt``.
"""

import argparse
import hashlib
import os
import zipfile
from pathlib import Path
from urllib.request import urlopen

from rectorch.data.errors import DataError

BASE_URL = "https://files.grouplens.org/datasets/movielens"
MD5 = {
    "ml-1m": "c4d9eecfca2ab87c1945afe126590906",
    "ml-100k": "0e33842e24a9c977be4e0107933c0723",
}


def fetch(url: str, target: Path) -> str:
    """Stream ``url`` into ``target``; return the MD5 hex digest of the bytes written."""
    digest = hashlib.md5(usedforsecurity=False)
    with urlopen(url, timeout=60) as response, target.open("wb") as f:
        while block := response.read(1 << 20):
            digest.update(block)
            f.write(block)
    return digest.hexdigest()


def extract(archive: Path, dest: Path) -> None:
    """Extract ``archive`` into ``dest``, refusing members that would land outside it."""
    root = dest.resolve()
    with zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
            if not (root / member).resolve().is_relative_to(root):
                raise DataError(f"{archive}: refusing to extract {member!r} outside {dest}")
        zf.extractall(dest)


def download(name: str, dest: str | Path) -> Path:
    """Download, verify and extract one dataset; return the extracted folder.

    Raises:
        DataError: unknown name, or checksum mismatch (the partial download is deleted).
    """
    if name not in MD5:
        raise DataError(f"unknown dataset {name!r}; choose from {sorted(MD5)}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    url = f"{BASE_URL}/{name}.zip"
    partial = dest / f"{name}.zip.part"
    try:
        digest = fetch(url, partial)
        if digest != MD5[name]:
            raise DataError(f"{url}: md5 {digest} does not match the published {MD5[name]}; download deleted")
        extract(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    return dest / name


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(MD5))
    parser.add_argument("--dest", default=os.environ.get("RECTORCH_DATA_DIR", "data"), type=Path)
    args = parser.parse_args(argv)
    print(f"extracted {args.name} into {download(args.name, args.dest)}")


if __name__ == "__main__":
    main()
