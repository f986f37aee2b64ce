"""A bundle is trusted only when its manifest matches its sidecar hash and every file its sha256, read once."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rectorch.serving import BundleError, Recommender, read_manifest
from rectorch.serving.manifest import MANIFEST_SHA256_FILE, manifest_sha256, sha256_bytes
from tests.serving.conftest import build_bundle, rewrite_manifest

BUNDLE_FILES = {"query_encoder.onnx", "items.faiss", "item_ids.json", "items.npz"}


@pytest.fixture
def copy(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "copy"))


def snapshot(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_manifest_records_the_contract(bundle: Path) -> None:
    manifest = read_manifest(bundle)
    assert manifest.family == "MeanEncoder" and manifest.dim == 8 and manifest.num_items == 60
    assert manifest.inputs[0].shape == ["batch", 5]
    assert set(manifest.files) == BUNDLE_FILES
    assert {p.name for p in bundle.iterdir()} == {*BUNDLE_FILES, "manifest.json", MANIFEST_SHA256_FILE}
    assert "onnxruntime" in manifest.versions and "faiss-cpu" in manifest.versions
    digest = sha256_bytes((bundle / "manifest.json").read_bytes())
    assert (bundle / MANIFEST_SHA256_FILE).read_text() == f"{digest}  manifest.json\n" and manifest_sha256(
        bundle
    ) == digest
    assert all(sha256_bytes((bundle / name).read_bytes()) == sha for name, sha in manifest.files.items())


def test_each_file_is_opened_once_and_served_from_those_bytes(copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    real_open = os.open

    def counting_open(path, flags, *args, **kwargs):
        opened.append(Path(path).name)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", counting_open)
    recommender = Recommender.from_bundle(copy)
    monkeypatch.undo()
    assert sorted(opened) == sorted([*BUNDLE_FILES, "manifest.json", MANIFEST_SHA256_FILE])
    for name in BUNDLE_FILES:  # the files are not read again: a later change cannot reach the loaded bundle
        (copy / name).write_bytes(b"changed after load")
    assert (
        recommender.recommend(["i0"], k=3).items
        == Recommender.from_bundle(build_bundle(copy.parent / "b")).recommend(["i0"], k=3).items
    )


@pytest.mark.parametrize("victim", sorted(BUNDLE_FILES))
def test_tampered_file_is_refused(copy: Path, victim: str) -> None:
    with (copy / victim).open("ab") as handle:
        handle.write(b"x")
    with pytest.raises(BundleError, match=f"{victim}.*(corrupt|tampered)"):
        Recommender.from_bundle(copy)


def test_truncated_and_missing_files_are_refused(copy: Path) -> None:
    data = (copy / "items.faiss").read_bytes()
    (copy / "items.faiss").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match=r"items\.faiss"):
        Recommender.from_bundle(copy)
    (copy / "items.faiss").unlink()
    with pytest.raises(BundleError, match="missing"):
        Recommender.from_bundle(copy)


def test_a_changed_manifest_is_refused_unless_its_hash_is_rewritten(copy: Path) -> None:
    raw = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**raw, "id_offset": 2}))
    with pytest.raises(BundleError, match=r"manifest\.json was changed after export"):
        Recommender.from_bundle(copy)
    (copy / MANIFEST_SHA256_FILE).unlink()
    with pytest.raises(BundleError, match=r"manifest\.sha256 not found"):
        Recommender.from_bundle(copy)
    rewrite_manifest(copy, raw)
    pinned = manifest_sha256(copy)
    assert Recommender.from_bundle(copy, manifest_sha256=pinned).manifest.id_offset == 1
    with pytest.raises(BundleError, match="pinned manifest_sha256"):
        Recommender.from_bundle(copy, manifest_sha256="0" * 64)


def test_bad_manifests_are_refused(copy: Path, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a bundle"):
        Recommender.from_bundle(tmp_path / "nowhere")
    raw = json.loads((copy / "manifest.json").read_text())
    rewrite_manifest(copy, {**raw, "schema_version": 99})
    with pytest.raises(BundleError, match="schema_version 99"):
        read_manifest(copy)
    rewrite_manifest(copy, {k: v for k, v in raw.items() if k != "files"})
    with pytest.raises(BundleError, match=r"missing the keys \['files'\]"):
        read_manifest(copy)
    rewrite_manifest(copy, b"{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_manifest(copy)
    rewrite_manifest(copy, {**raw, "id_offset": 1e30})
    with pytest.raises(BundleError, match=r"key 'id_offset' must be an integer in \[0, 1000000\], got 1e\+30"):
        Recommender.from_bundle(copy)


def test_links_are_refused_even_with_matching_content(copy: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    shutil.move(copy / "item_ids.json", outside)
    (copy / "item_ids.json").symlink_to(outside)  # same bytes, same sha256
    with pytest.raises(BundleError, match=r"'item_ids\.json' leaves the bundle"):
        Recommender.from_bundle(copy)
    (copy / "item_ids.json").unlink()
    shutil.move(outside, copy / "real_ids.json")
    (copy / "item_ids.json").symlink_to("real_ids.json")  # a link that stays inside is refused too
    with pytest.raises(BundleError, match="symbolic link"):
        Recommender.from_bundle(copy)


def test_the_writer_replaces_a_bundle_whole_and_refuses_other_directories(tmp_path: Path) -> None:
    target = build_bundle(tmp_path / "b")
    (target / "stale.txt").write_text("from an older export")
    build_bundle(target)
    assert "stale.txt" not in {p.name for p in target.iterdir()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no temporary sibling left
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my own file")
    with pytest.raises(BundleError, match=r"refusing to replace .*mine: it exists and is not a bundle"):
        build_bundle(mine)
    assert snapshot(mine) == {"notes.txt": b"my own file"}
    (tmp_path / "file").write_text("x")
    with pytest.raises(BundleError, match="not a directory"):
        build_bundle(tmp_path / "file")


KILLED_WRITE = """
import os, signal, sys
from pathlib import Path
import rectorch.serving.bundle as bundle
from tests.serving.conftest import build_bundle

real = bundle.write_file
def write_then_die(path, data):
    if path.name == sys.argv[2]:
        os.kill(os.getpid(), signal.SIGKILL)
    real(path, data)
bundle.write_file = write_then_die
build_bundle(Path(sys.argv[1]))
"""


@pytest.mark.parametrize("killed_at", ["query_encoder.onnx", "items.npz", "manifest.json", "manifest.sha256"])
@pytest.mark.parametrize("existing", [False, True])
def test_kill_9_during_a_write_leaves_nothing_that_loads(tmp_path: Path, killed_at: str, existing: bool) -> None:
    target = tmp_path / "b"
    before = snapshot(build_bundle(target)) if existing else None
    command = [sys.executable, "-c", KILLED_WRITE, str(target), killed_at]
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(command, cwd=root, capture_output=True, timeout=120, check=False)
    assert result.returncode == -signal.SIGKILL
    if existing:
        assert snapshot(target) == before and Recommender.from_bundle(target).manifest.num_items == 60
    else:
        assert not target.exists()
    leftovers = [p for p in tmp_path.iterdir() if p.name != "b"]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".b.tmp-")
    build_bundle(target)  # the next write removes what the dead process left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_serving_does_not_load_torch(bundle: Path) -> None:
    """In a fresh interpreter: import the package and build a Recommender, then look at sys.modules."""
    code = (
        "import sys; import rectorch.serving, rectorch.serving.app as app; "
        f"r = rectorch.serving.Recommender.from_bundle({str(bundle)!r}); r.recommend(['i1']); app.create_app(r); "
        "print(sorted(m for m in ('torch', 'lightning', 'hydra', 'omegaconf', 'rectorch.data', 'rectorch.models', "
        "'rectorch.training', 'rectorch.export') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"
