"""Shared config nodes (model/encoder, model/walks) compose to exactly the values the models had before.

``data/composed_model_configs.json`` holds ``OmegaConf.to_container(cfg.model, resolve=True)`` for each
override below, dumped from the configs as they were before the encoder and random-walk nodes were factored.
A deliberate change of a model default updates that file in the same change.
"""

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

EXPECTED = json.loads((Path(__file__).parent / "data" / "composed_model_configs.json").read_text())


@pytest.mark.parametrize("override", sorted(EXPECTED))
def test_model_node_matches_the_unfactored_config(compose_train, override: str) -> None:
    cfg = compose_train(override, small=False)
    assert OmegaConf.to_container(cfg.model, resolve=True) == EXPECTED[override]


def test_every_composed_recipe_is_covered() -> None:
    expected = {f"model={m}" for m in ("sasrec", "bert4rec", "pinsage")}
    expected |= {f"experiment={m}_ml1m" for m in ("sasrec", "bert4rec", "pinsage")}
    assert set(EXPECTED) == expected


def test_encoder_overrides_reach_one_model_only(compose_train) -> None:
    sasrec = compose_train("model=sasrec", "model.encoder.dim=32", "model.encoder.num_heads=4")
    assert (sasrec.model.encoder.dim, sasrec.model.encoder.num_heads) == (32, 4)
    bert4rec = compose_train("model=bert4rec")
    assert (bert4rec.model.encoder.dim, bert4rec.model.encoder.num_heads) == (64, 2)


def test_walk_nodes_are_independent_copies(compose_train) -> None:
    """Overriding one sampler leaves the other two (placed from the same file) unchanged."""
    view = compose_train("model=pinsage", "model.view.inference_walks.walk_length=3").model.view
    assert [view[n].walk_length for n in ("walks", "inference_walks", "hard_walks")] == [2, 3, 2]
    assert [view[n].num_walks for n in ("walks", "inference_walks", "hard_walks")] == [32, 256, 256]
    assert [view[n].top_k for n in ("walks", "inference_walks", "hard_walks")] == [10, 10, 1]
