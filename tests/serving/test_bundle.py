"""A bundle is trusted only when its manifest parses and every file matches its sha256."""

import json
import shutil
from pathlib import Path

import pytest

from rectorch.serving import BundleError, Recommender, read_manifest


@pytest.fixture
def copy(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "copy"))


def test_manifest_records_the_contract(bundle: Path) -> None:
    manifest = read_manifest(bundle)
    assert manifest.family == "MeanEncoder" and manifest.dim == 8 and manifest.num_items == 60
    assert manifest.inputs[0].shape == ["batch", 5]
    assert set(manifest.files) == {"query_encoder.onnx", "items.faiss", "item_ids.json", "items.npz"}
    assert "onnxruntime" in manifest.versions and "faiss-cpu" in manifest.versions


@pytest.mark.parametrize("victim", ["query_encoder.onnx", "items.faiss", "item_ids.json", "items.npz"])
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


def test_bad_manifests_are_refused(copy: Path, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a bundle"):
        Recommender.from_bundle(tmp_path / "nowhere")
    raw = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**raw, "schema_version": 99}))
    with pytest.raises(BundleError, match="schema_version"):
        read_manifest(copy)
    (copy / "manifest.json").write_text(json.dumps({k: v for k, v in raw.items() if k != "files"}))
    with pytest.raises(BundleError, match="missing"):
        read_manifest(copy)
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_manifest(copy)


def test_serving_does_not_load_torch(bundle: Path) -> None:
    """In a fresh interpreter: import the package and build a Recommender, then look at sys.modules."""
    import subprocess
    import sys

    code = (
        "import sys; import rectorch.serving, rectorch.serving.app as app; "
        f"r = rectorch.serving.Recommender.from_bundle({str(bundle)!r}); r.recommend(['i1']); app.create_app(r); "
        "print(sorted(m for m in ('torch', 'lightning', 'hydra', 'omegaconf', 'rectorch.data', 'rectorch.models', "
        "'rectorch.training', 'rectorch.export') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"
