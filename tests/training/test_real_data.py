"""Baselines on the SASRec ML-1M file against independent reference values (skipped without the data).

Protocol: leave-one-out, full ranking over all 3,416 items, seen items masked, 6,040 users.
References: popularity NDCG@10 0.0179 / HR@10 0.0364; EASE (λ=200) 0.0536 / 0.1101.
"""

import pytest

from rectorch.training.train import train
from tests.conftest import require_data

REFERENCES = {"popularity": (0.0179, 0.0364), "ease": (0.0536, 0.1101)}


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(REFERENCES))
def test_baseline_matches_reference_on_ml1m(compose_train, model: str) -> None:
    require_data("ml-1m/ml-1m.txt.gz")
    cfg = compose_train(f"experiment={model}_ml1m", "logger=none", small=False)
    results = train(cfg)
    assert results["protocol"] == {
        "dataset": "ml1m",
        "split": "loo",
        "ranking": "full",
        "mask_seen": True,
        "k": [1, 5, 10, 20],
        "users": 6040,
    }
    ndcg, hr = REFERENCES[model]
    assert results["test"]["ndcg@10"] == pytest.approx(ndcg, abs=0.002)
    assert results["test"]["hr@10"] == pytest.approx(hr, abs=0.002)
