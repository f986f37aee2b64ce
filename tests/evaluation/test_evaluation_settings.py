"""Settings validation and the protocol record."""

import json

import pytest

from rectorch.evaluation import EvaluationSettings, Protocol


def test_ks_from_a_list_become_a_sorted_tuple() -> None:
    assert EvaluationSettings(ks=[20, 5, 5, 10]).ks == (5, 10, 20)
    assert EvaluationSettings(ks=10).ks == (10,)
    assert EvaluationSettings().max_k == 20


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (EvaluationSettings(ks=[5000]), "k=5000 exceeds the catalog of 3416 items"),
        (EvaluationSettings(ks=[0, 10]), "k=0 must be positive"),
        (EvaluationSettings(ks=[]), "ks is empty"),
        (EvaluationSettings(sampled_negatives=0), "sampled_negatives=0 must be between 1 and 3415"),
        (EvaluationSettings(sampled_negatives=3416), "smaller than the catalog of 3416 items"),
        (EvaluationSettings(batch_users=0), "batch_users=0 must be positive"),
    ],
)
def test_validate_explains_the_problem(settings: EvaluationSettings, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings.validate(3416)


def test_valid_settings_pass() -> None:
    EvaluationSettings(ks=[1, 3416], sampled_negatives=3415).validate(3416)


def test_protocol_record_and_description() -> None:
    protocol = Protocol("ml1m", "loo", "full", mask_seen=True, ks=[10, 20], users=6040)
    assert json.loads(json.dumps(protocol.as_dict())) == {
        "dataset": "ml1m",
        "split": "loo",
        "ranking": "full",
        "mask_seen": True,
        "k": [10, 20],
        "users": 6040,
    }
    assert protocol.describe() == "ml1m | split=loo | ranking=full | mask_seen=True | k=10,20 | users=6040"
    assert protocol.metric_prefix() == ""
    assert not protocol.sampled


def test_sampled_protocol_is_labelled() -> None:
    protocol = Protocol("ml1m", "loo", "sampled-100", mask_seen=True, ks=(10,), users=1)
    assert protocol.sampled
    assert protocol.metric_prefix() == "sampled-100/"
    assert "ranking=sampled-100" in protocol.describe()


@pytest.mark.parametrize("ranking", ["sampled", "sampled-0", "sampled100", "Full"])
def test_protocol_rejects_unknown_ranking(ranking: str) -> None:
    with pytest.raises(ValueError, match="must be 'full' or 'sampled-<N>'"):
        Protocol("ml1m", "loo", ranking, mask_seen=True, ks=(10,), users=1)
