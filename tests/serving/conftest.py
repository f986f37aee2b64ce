"""A tiny torch-free bundle: an ``onnx.helper`` mean-of-embeddings encoder over 60 clustered items."""

import json
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rectorch.serving.bundle import flat_index, write_bundle
from rectorch.serving.catalog import Catalog
from rectorch.serving.manifest import MANIFEST_FILE, MANIFEST_SHA256_FILE, InputSpec, sidecar_text
from rectorch.serving.settings import RecommendSettings

NUM_ITEMS, DIM, HISTORY = 60, 8, 5
NOW = 1_700_000_000.0
CATEGORIES = ["", "action", "comedy", "drama"]


def mean_encoder(table: np.ndarray, history: int) -> bytes:
    """ONNX model ``history (B, L) int64 → mean of table[history] over L (B, D)``."""
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "history"], ["embedded"], axis=0),
            helper.make_node("ReduceMean", ["embedded", "axes"], ["query"], keepdims=0),
        ],
        "mean_encoder",
        [helper.make_tensor_value_info("history", TensorProto.INT64, ["batch", history])],
        [helper.make_tensor_value_info("query", TensorProto.FLOAT, ["batch", table.shape[1]])],
        initializer=[numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array([1]), "axes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model.SerializeToString()


def tiny_catalog() -> tuple[np.ndarray, Catalog]:
    """Item vectors in three category clusters; item ``i5`` unavailable, items ≥ 55 brand new."""
    rng = np.random.default_rng(0)
    category = np.arange(NUM_ITEMS) % 3 + 1
    centers = rng.normal(size=(4, DIM)).astype(np.float32) * 3
    vectors = (centers[category] + rng.normal(size=(NUM_ITEMS, DIM))).astype(np.float32)
    created = np.full(NUM_ITEMS, NOW - 400 * 86400.0)
    created[55:] = NOW - 86400.0
    available = np.ones(NUM_ITEMS, bool)
    available[5] = False
    catalog = Catalog(
        ids=[f"i{r}" for r in range(NUM_ITEMS)],
        popularity=np.arange(NUM_ITEMS, 0, -1).astype(np.float32),
        category=category,
        categories=CATEGORIES,
        created_at=created,
        available=available,
    )
    return vectors, catalog


def build_bundle(path: Path, serving: RecommendSettings | None = None) -> Path:
    """The tiny bundle at ``path``, recording ``serving`` as its settings (None = the defaults)."""
    vectors, catalog = tiny_catalog()
    table = np.vstack([np.zeros((1, DIM), np.float32), vectors])  # model id 0 = padding
    write_bundle(
        path,
        family="MeanEncoder",
        encoders={"fp32": mean_encoder(table, HISTORY)},
        inputs=[InputSpec("history", "int64", ["batch", HISTORY])],
        index=flat_index(vectors),
        catalog=catalog,
        serving=serving,
    )
    return path


def rewrite_manifest(path: Path, raw: dict | bytes) -> None:
    """Replace the bundle's manifest and its sidecar hash, as a (buggy or older) writer would have written them."""
    data = raw if isinstance(raw, bytes) else json.dumps(raw).encode()
    (path / MANIFEST_FILE).write_bytes(data)
    (path / MANIFEST_SHA256_FILE).write_text(sidecar_text(data))


# non-default stage settings recorded by a bundle (as an export with these settings would)
TUNED = RecommendSettings(candidates=100, mmr_lambda=0.3, diversity="categories", max_k=60, seed=7)


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture(scope="session")
def tuned_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny bundle recording :data:`TUNED`."""
    return build_bundle(tmp_path_factory.mktemp("bundle") / "tuned", TUNED)
