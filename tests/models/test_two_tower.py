"""TwoTowerModule and its towers: shapes, unit norm, cold items from features, planted structure learned."""

import functools

import numpy as np
import pytest
import torch
from omegaconf import open_dict

from rectorch.data.csr import Csr
from rectorch.data.prepared import FeatureTable
from rectorch.data.spec import DataSpec, FeatureSpec
from rectorch.data.views import PairView
from rectorch.models.components.history_pooling import AttentionPooling, MeanPooling
from rectorch.models.components.retrieval_losses import InBatchSoftmaxLoss
from rectorch.models.components.towers import FeatureEmbedding, ItemTower, UserTower
from rectorch.models.two_tower import TwoTowerModule, pair_target_counts
from rectorch.training.train import train

pytestmark = pytest.mark.filterwarnings("ignore:.*self.log.*")

ITEM_FEATURES = {
    "category": FeatureSpec("categorical", 4),
    "tags": FeatureSpec("multi", 6, 2),
    "price": FeatureSpec("numeric"),
}
USER_FEATURES = {"segment": FeatureSpec("categorical", 3)}
SPEC = DataSpec("tiny", num_users=4, num_items=6, item_features=ITEM_FEATURES, user_features=USER_FEATURES)
ITEMS = FeatureTable(
    columns={
        "category": np.array([0, 1, 1, 2, 2, 3, 3]),
        "tags": np.array([[0, 0], [1, 2], [1, 0], [3, 4], [3, 0], [5, 1], [5, 0]]),
        "price": np.array([0, 1, 2, 3, 4, 5, 60], dtype=np.float32),
    },
    kinds=ITEM_FEATURES,
)
USERS = FeatureTable(columns={"segment": np.array([0, 1, 2, 1, 2])}, kinds=USER_FEATURES)
# users 1..3 have training rows; user 4 and item 6 never occur in training
TRAIN = Csr(np.array([0, 0, 3, 5, 8, 8]), np.array([1, 2, 3, 2, 4, 5, 1, 3]))


def make(pooler: type = AttentionPooling, user_id_dim: int = 0, item_bias: bool = False) -> TwoTowerModule:
    torch.manual_seed(0)
    model = TwoTowerModule(
        SPEC,
        PairView(history_len=4),
        functools.partial(
            ItemTower, id_dim=8, feature_dim=4, hidden=[16], out_dim=8, id_dropout=0.5, item_bias=item_bias
        ),
        functools.partial(
            UserTower, pooler=pooler(8, 4), user_id_dim=user_id_dim, feature_dim=4, hidden=[16], out_dim=8
        ),
        InBatchSoftmaxLoss(temperature=0.1, uniform_negatives=3),
    )
    model.fit_catalog(ITEMS, USERS, TRAIN)
    return model.eval()


@pytest.mark.parametrize("pooler", [MeanPooling, AttentionPooling])
def test_towers_give_unit_vectors_of_the_right_shape(pooler: type) -> None:
    model = make(pooler)
    history = torch.tensor([[0, 1, 2, 3], [0, 0, 0, 0], [4, 5, 1, 2]])
    query = model.encode_query(history, torch.tensor([1, 4, 2]), {"segment": torch.tensor([1, 0, 2])})
    items = model.item_vectors()
    assert query.shape == (3, 8) and items.shape == (7, 8)
    assert torch.allclose(query.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(items.norm(dim=1), torch.ones(7), atol=1e-5)
    assert model.score(history=history, user_features={"segment": torch.tensor([1, 0, 2])}).shape == (3, 7)


def test_item_bias_is_an_extra_coordinate_matched_by_a_constant_one() -> None:
    model = make(item_bias=True)
    history = torch.tensor([[0, 1, 2, 3], [0, 0, 0, 0]])
    query = model.encode_query(history, user_features={"segment": torch.tensor([1, 0])})
    items = model.item_vectors()
    assert query.shape == (2, 9) and items.shape == (7, 9)
    assert torch.equal(query[:, -1], torch.ones(2))
    assert torch.allclose(query[:, :-1].norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.allclose(items[:, :-1].norm(dim=1), torch.ones(7), atol=1e-5)
    with torch.no_grad():
        model.item_tower.bias.bias.add_(0.25)  # the bias shifts every item's score by the same amount
    shifted = model.encode_query(history, user_features={"segment": torch.tensor([1, 0])}) @ model.item_vectors().T
    assert torch.allclose(shifted, query @ items.T + 0.25, atol=1e-5)


def test_datasets_without_side_features_still_train_and_embed() -> None:
    spec = DataSpec("bare", num_users=4, num_items=6)
    model = TwoTowerModule(
        spec,
        PairView(history_len=4),
        functools.partial(ItemTower, id_dim=8, hidden=[], out_dim=8),
        functools.partial(UserTower, pooler=MeanPooling(8, 4), hidden=[], out_dim=8),
        InBatchSoftmaxLoss(),
    )
    model.fit_catalog(FeatureTable(), FeatureTable(), TRAIN)
    batch = {"users": torch.tensor([1, 2]), "history": torch.tensor([[0, 0, 0, 1], [0, 0, 0, 2]])}
    loss = model.training_step({**batch, "item": torch.tensor([2, 4]), "user_features": {}, "item_features": {}}, 0)
    assert torch.isfinite(loss) and model.item_vectors().shape == (7, 8)


def test_feature_embedding_shapes_and_numeric_standardisation() -> None:
    embedding = FeatureEmbedding(ITEM_FEATURES, dim=5)
    embedding.fit_numeric(ITEMS.columns)
    values = ITEMS.columns["price"][1:]
    assert torch.allclose(embedding.numeric_stats[0], torch.tensor([values.mean(), values.std(ddof=1)]), rtol=1e-5)
    out = embedding({name: torch.as_tensor(col[[1, 2, 3]]) for name, col in ITEMS.columns.items()})
    assert out.shape == (3, 15) and embedding.out_dim == 15


def test_mean_pooling_starts_as_a_plain_mean_and_handles_empty_history() -> None:
    history = torch.randn(2, 3, 4)
    mask = torch.tensor([[False, True, True], [False, False, False]])
    pooled = MeanPooling(4, 3)(history, mask)
    assert torch.allclose(pooled[0], history[0, 1:].mean(dim=0), atol=1e-6)
    assert torch.equal(pooled[1], torch.zeros(4))
    assert torch.isfinite(AttentionPooling(4, 3)(history, mask)).all()


@pytest.mark.parametrize("item_bias", [False, True])
def test_cold_item_vectors_depend_only_on_features(item_bias: bool) -> None:
    model = make(item_bias=item_bias)
    assert not model.item_known[6] and model.item_known[1:6].all()
    vectors = model.item_vectors()
    with torch.no_grad():
        model.item_tower.id_embedding.weight[6].add_(10.0)
        model.item_tower.id_embedding.weight[1].add_(10.0)
    changed = model.item_vectors()
    assert torch.allclose(vectors[6], changed[6]) and not torch.allclose(vectors[1], changed[1])
    new = model.encode_new_items({name: torch.as_tensor(col[[6]]) for name, col in ITEMS.columns.items()})
    assert torch.allclose(new[0], vectors[6], atol=1e-6)


def test_user_features_as_named_onnx_inputs_match_the_dict_form() -> None:
    model = make(user_id_dim=4)
    inputs = model.export_inputs()
    assert set(inputs) == {"history", "users", "user_segment"}
    named = model.encode_query(**inputs)
    nested = model.encode_query(inputs["history"], inputs["users"], {"segment": inputs["user_segment"]})
    assert named.shape == (2, 8) and torch.allclose(named, nested)


def test_sampling_probability_counts_pair_view_positives() -> None:
    model = make()
    # each user's first item is never a positive: 1|2 3, 2|4, 5|1 3
    assert pair_target_counts(TRAIN, 6).tolist() == [0, 1, 1, 2, 1, 0, 0]
    assert torch.allclose(model.sampling_prob, torch.tensor([0, 1, 1, 2, 1, 0, 0]) / 5.0)


def test_training_step_backpropagates_to_both_towers() -> None:
    model = make().train()
    batch = {
        "users": torch.tensor([1, 2, 3]),
        "history": torch.tensor([[0, 0, 0, 1], [0, 0, 0, 2], [0, 0, 1, 2]]),
        "item": torch.tensor([2, 4, 3]),
        "user_features": {"segment": torch.tensor([1, 2, 1])},
        "item_features": {},
    }
    loss = model.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.item_tower.mlp.layers[0].weight.grad.abs().sum() > 0
    assert model.user_tower.mlp.layers[0].weight.grad.abs().sum() > 0


def test_planted_synthetic_structure_is_learned_above_popularity(compose_train) -> None:
    scores = {}
    for model, epochs in (("popularity", 1), ("two_tower", 4)):
        cfg = compose_train(f"model={model}", "logger=none", "callbacks=none", f"trainer.max_epochs={epochs}")
        with open_dict(cfg):
            cfg.data.batch_size = 256
        scores[model] = train(cfg)["test"]["ndcg@10"]
    assert scores["two_tower"] > 1.5 * scores["popularity"], scores
