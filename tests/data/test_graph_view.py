"""Random-walk neighbourhoods on a hand-made graph, reproducibility, and the training-only graph."""

import numpy as np
import pytest

from rectorch.data.csr import Csr
from rectorch.data.graph_view import GraphView
from rectorch.data.prepare import Preprocessing, load_or_prepare
from rectorch.data.random_walks import BipartiteGraph, RandomWalks
from rectorch.data.splits import LeaveOneOut
from rectorch.data.synthetic import SyntheticSource

# users 0..3 (user 0 = padding row, empty): 1 -> [1, 2], 2 -> [2, 3], 3 -> [4]; item 5 has no user
HAND_MADE = Csr(np.array([0, 0, 2, 4, 5]), np.array([1, 2, 2, 3, 4]))
ONE_HOP = RandomWalks(num_walks=400, walk_length=1, restart_prob=0.0, top_k=3)


def _view(**kwargs) -> GraphView:
    walks = RandomWalks(num_walks=8, walk_length=2, top_k=3)
    defaults = {"num_negatives": 6, "num_hard": 2, "hard_ranks": (1, 4), "history_len": 5}
    return GraphView(walks, walks, RandomWalks(num_walks=64, top_k=1), **{**defaults, **kwargs})


def test_one_hop_neighbourhoods_on_a_hand_made_graph() -> None:
    graph = BipartiteGraph.from_interactions(HAND_MADE, num_items=5)
    assert graph.item_users.row(2).tolist() == [1, 2] and graph.degree().tolist() == [0, 1, 2, 1, 1, 0]
    neighbours, weights = ONE_HOP.neighbours(graph, np.array([1, 2, 4, 5]), np.random.default_rng(0))
    assert neighbours[0].tolist() == [2, 0, 0] and weights[0].tolist() == [1.0, 0.0, 0.0]
    assert sorted(neighbours[1, :2].tolist()) == [1, 3] and neighbours[1, 2] == 0
    assert abs(weights[1, 0] - 0.5) < 0.1 and np.isclose(weights[1].sum(), 1.0)
    assert not neighbours[2:].any() and not weights[2:].any()  # no co-engaged item, or no user at all


def test_walks_are_reproducible_by_seed() -> None:
    rng = np.random.default_rng(1)
    train = Csr(np.arange(0, 401, 4), rng.integers(1, 60, 400))
    graph = BipartiteGraph.from_interactions(train, num_items=60)
    walks, seeds = RandomWalks(num_walks=16, walk_length=3, top_k=5), np.arange(61)
    first = walks.neighbours(graph, seeds, np.random.default_rng(7))
    again = walks.neighbours(graph, seeds, np.random.default_rng(7))
    other = walks.neighbours(graph, seeds, np.random.default_rng(8))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[1], other[1])
    band = walks.band(graph, seeds, (2, 6), np.random.default_rng(7))
    assert band.shape == (61, 4) and (band >= 1).all() and (band != seeds[:, None]).all()


def test_training_graph_has_no_validation_or_test_edges() -> None:
    source = SyntheticSource(num_users=60, num_items=40, seq_len_mean=10, seed=3)
    dataset = load_or_prepare(source, Preprocessing(), None)
    split = LeaveOneOut()(dataset)
    graph = BipartiteGraph.from_interactions(split.train, dataset.num_items)
    edges = set(zip(graph.user_items.row_ids().tolist(), graph.user_items.items.tolist(), strict=True))
    assert len(edges) == len(split.train.items) < dataset.num_interactions
    for held_out in (split.val, split.test):
        pairs = zip(held_out.users.tolist(), held_out.targets.items.tolist(), strict=True)
        assert not any(pair in edges for pair in pairs)
    reverse = set(zip(graph.item_users.items.tolist(), graph.item_users.row_ids().tolist(), strict=True))
    assert reverse == edges


def test_batches_are_consistent_computation_graphs() -> None:
    view = _view(window=2)
    train = Csr(np.array([0, 0, 6, 10]), np.array([1, 2, 3, 4, 5, 6, 6, 7, 8, 9]))
    dataset = view.train_dataset(train, ({}, {}))
    assert len(dataset) == 8  # every position but each user's last
    batch = dataset.collate(list(range(8)))
    nodes, sizes = batch["nodes"].numpy(), batch["sizes"]
    assert len(sizes) == 3 and sizes[0] >= sizes[1] >= sizes[2] and len(set(nodes.tolist())) == sizes[0]
    assert batch["neighbors"].shape == (sizes[1], 3) and int(batch["neighbors"].max()) < sizes[0]
    query, positive = nodes[batch["query"].numpy()], nodes[batch["positive"].numpy()]
    assert (positive - query >= 1).all() and (positive - query <= 2).all()  # the next one or two items
    for key in ("query", "positive", "negatives", "hard"):
        assert int(batch[key].max()) < sizes[2] and int(batch[key].min()) >= 0
    assert batch["hard"].shape == (8, 2) and batch["negatives"].shape == (6,)
    again = _view(window=2).train_dataset(train, ({}, {})).collate(list(range(8)))
    assert all(np.array_equal(np.asarray(batch[k]), np.asarray(again[k])) for k in batch)


def test_query_reads_the_recent_history() -> None:
    history = Csr(np.array([0, 3, 3]), np.array([4, 5, 6]))
    query = _view(history_len=2).query(np.array([1, 2]), history, np.array([0, 1]), ({}, {}))
    assert query["history"].tolist() == [[5, 6], [0, 0]]


@pytest.mark.parametrize("kwargs", [{"hard_ranks": (5, 5)}, {"window": 0}, {"num_negatives": -1}])
def test_invalid_settings_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        _view(**kwargs)
