"""The index tiers by catalog size, and a refined IVF-PQ index served from its bundle at the tuned recall."""

from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import pytest

from rectorch.export.cli import export
from rectorch.export.index import IndexSettings, build_index, choose_factory, tune_index
from rectorch.serving import Catalog, Recommender, read_manifest
from rectorch.serving.bundle import write_bundle
from rectorch.serving.manifest import InputSpec
from tests.export.conftest import compose_config
from tests.serving.conftest import mean_encoder

ITEMS, DIM, CLUSTERS = 30_000, 32, 300


def mixture(n: int, rng: np.random.Generator, centers: np.ndarray) -> np.ndarray:
    rows = centers[rng.integers(0, len(centers), n)] + 0.35 * rng.standard_normal((n, centers.shape[1]), np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.mark.parametrize("dim", [32, 50, 64, 7])
def test_catalog_size_picks_flat_then_ivf_then_refined_ivfpq(dim: int) -> None:
    settings = IndexSettings(pq_min_items=5_000_000, pq_factory="IVF{nlist},PQ{m}x4fs,Refine(SQ8)", pq_sub_dim=2)
    assert choose_factory(settings.flat_max_items, dim, settings) == "Flat"
    assert choose_factory(1_000_000, dim, settings) == "IVF4096,Flat"
    factory = choose_factory(settings.pq_min_items, dim, settings)
    m = int(factory.split(",PQ")[1].split("x")[0])
    assert factory == f"IVF8192,PQ{m}x4fs,Refine(SQ8)" and dim % m == 0
    assert abs(m - dim / 2) == min(abs(d - dim / 2) for d in range(1, dim + 1) if dim % d == 0)
    faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)  # the chosen string builds at this width


def test_refined_ivfpq_is_tuned_and_served_from_its_bundle_at_that_recall(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((CLUSTERS, DIM), np.float32)
    vectors, queries = mixture(ITEMS, rng, centers), mixture(400, rng, centers)
    settings = IndexSettings(flat_max_items=1_000, pq_min_items=10_000, recall_queries=200, train_size=ITEMS)
    factory = choose_factory(ITEMS, DIM, settings)
    assert factory.startswith("IVF512,PQ") and "Refine" in factory
    index = build_index(vectors, factory, settings)
    info = {"factory": factory, **tune_index(index, vectors, queries[:200], settings)}
    assert info["target_reached"] and "k_factor_rf=" in info["search_params"]
    assert isinstance(index, faiss.IndexRefine) and index.ntotal == ITEMS

    table = np.vstack([np.zeros((1, DIM), np.float32), vectors])
    catalog = Catalog([f"i{r}" for r in range(ITEMS)], np.ones(ITEMS, np.float32), np.zeros(ITEMS, np.int64), [""])
    write_bundle(
        tmp_path / "bundle",
        family="MeanEncoder",
        encoders={"fp32": mean_encoder(table, 5)},
        inputs=[InputSpec("history", "int64", ["batch", 5])],
        index=index,
        catalog=catalog,
        index_info=info,
    )
    served = Recommender.from_bundle(tmp_path / "bundle").index.index
    assert isinstance(served, faiss.IndexRefine)
    nprobe, k_factor = (int(p.split("=")[1]) for p in info["search_params"].split(","))
    assert (faiss.extract_index_ivf(served).nprobe, served.k_factor) == (nprobe, k_factor)

    held_out = queries[200:]
    truth = np.argsort(-held_out @ vectors.T, axis=1)[:, :100]
    _, found = served.search(held_out, 100)
    recall = np.mean([len(set(f) & set(t)) / 100 for f, t in zip(found, truth, strict=True)])
    assert recall >= 0.9
    assert np.array_equal(found, index.search(held_out, 100)[1])
    assert np.abs(served.reconstruct_batch(np.arange(100)) - vectors[:100]).max() < 0.02  # SQ8 item vectors


def test_the_ivfpq_choice_exports_a_refined_index_that_serves(train_run: Callable[..., Path], tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    overrides = [f"run_dir={train_run('sasrec')}", f"bundle_dir={bundle}", "export/index=ivfpq", "export/quantize=none"]
    export(compose_config("export", overrides, tmp_path))
    index = read_manifest(bundle).index
    assert index["factory"].endswith(",Refine(SQ8)") and "k_factor_rf=" in index["search_params"]
    recommender = Recommender.from_bundle(bundle)
    assert isinstance(recommender.index.index, faiss.IndexRefine)
    assert len(recommender.recommend([recommender.catalog.ids[0]], k=5).items) == 5
