"""Vendor onnxruntime-web for the web page (``rectorch/serving/web/``): ``python scripts/build_web.py``.

``npm pack onnxruntime-web@<version>`` into a temporary directory (npm checks the tarball against the
registry's integrity hash), checks the tarball's sha256 against the pinned one, and copies the three files the
page loads (the WebAssembly-only runtime script, its loader module and the SIMD WebAssembly binary) into
``rectorch/serving/web/vendor/`` with ``onnxruntime-web.json``: package, version, license, the tarball's
sha256 and npm integrity, and every copied file's sha256. ``rectorch-export ... export/target=web`` copies
them into each web bundle after checking those hashes. The vendored files are git-ignored, never committed.

Another version needs its tarball's sha256: ``--version 1.31.0 --sha256 <hex>``. Needs ``npm`` on the PATH
(Debian: ``apt-get install -y npm``) and access to the npm registry.
"""

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from rectorch.export.web import RUNTIME_FILES as FILES
from rectorch.export.web import RUNTIME_RECORD as RECORD

PACKAGE = "onnxruntime-web"
VERSION = "1.30.0"
TARBALL_SHA256 = "d2228df7e4616bc3348bf504ee888f3bec43789a273f0a63f3e68d203ce3bf71"  # npm pack onnxruntime-web@1.30.0
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "rectorch" / "serving" / "web" / "vendor"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def npm_pack(version: str, where: Path) -> tuple[Path, str]:
    """The package tarball downloaded into ``where`` and npm's integrity string for it."""
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("build_web: npm is not on the PATH (Debian: apt-get install -y npm)")
    result = subprocess.run(
        [npm, "pack", "--json", f"{PACKAGE}@{version}"], cwd=where, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"build_web: npm pack {PACKAGE}@{version} failed: {result.stderr.strip()[-500:]}")
    (packed,) = json.loads(result.stdout)
    return where / packed["filename"], packed["integrity"]


def extract(tarball: Path, out: Path) -> dict[str, str]:
    """Copy ``package/dist/<name>`` for each of :data:`FILES` into ``out``; returns name → sha256."""
    with tarfile.open(tarball, "r:gz") as archive:
        members = {member.name: member for member in archive.getmembers() if member.isfile()}
        for name in FILES:
            member = members.get(f"package/dist/{name}")
            if member is None:
                raise SystemExit(f"build_web: {tarball.name} has no package/dist/{name}")
            source = archive.extractfile(member)
            with (out / name).open("wb") as target:
                shutil.copyfileobj(source, target)
        license_name = json.load(archive.extractfile(members["package/package.json"])).get("license", "")
    return {"license": license_name, **{name: sha256_file(out / name) for name in FILES}}


def build(version: str, expected_sha256: str, out: Path) -> dict:
    """Vendor ``version`` into ``out`` (replacing what is there) and write its record; returns the record."""
    with tempfile.TemporaryDirectory(prefix="rectorch-ort-web-") as tmp:
        tarball, integrity = npm_pack(version, Path(tmp))
        actual = sha256_file(tarball)
        if actual != expected_sha256:
            raise SystemExit(f"build_web: {tarball.name} has sha256 {actual}, expected {expected_sha256}")
        staging = Path(tmp) / "vendor"
        staging.mkdir()
        hashes = extract(tarball, staging)
        record = {
            "package": PACKAGE,
            "version": version,
            "license": hashes.pop("license"),
            "tarball_sha256": actual,
            "integrity": integrity,
            "files": hashes,
        }
        (staging / RECORD).write_text(json.dumps(record, indent=2) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staging, out)
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default=VERSION, help=f"onnxruntime-web version (default {VERSION})")
    parser.add_argument("--sha256", help="the tarball's sha256 (required for a version other than the pinned one)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="vendor directory (default: the package's)")
    args = parser.parse_args(argv)
    expected = args.sha256 or (TARBALL_SHA256 if args.version == VERSION else None)
    if expected is None:
        parser.error(f"--version {args.version} needs --sha256 (only {VERSION} is pinned)")
    record = build(args.version, expected, args.out)
    sizes = sum((args.out / name).stat().st_size for name in FILES)
    print(f"build_web: {PACKAGE} {record['version']} ({sizes / 1e6:.1f} MB) in {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
