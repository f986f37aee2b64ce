"""``PinSageConv`` on a 4-node graph built inline, in the style of torch-geometric's layer tests."""

import pytest
import torch

pytest.importorskip("torch_geometric")

from rectorch.models.components.pinsage_conv import PinSageConv

# node 0 <- {1, 2}; node 1 <- {3}; node 2 <- {0}; node 3 has no neighbours
EDGE_INDEX = torch.tensor([[1, 2, 3, 0], [0, 0, 1, 2]])


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(4, 8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("normalize", [True, False])
def test_shapes_and_repr(x: torch.Tensor, normalize: bool) -> None:
    conv = PinSageConv(8, 32, normalize=normalize)
    assert repr(conv) == "PinSageConv(8, 32, hidden_channels=32)"
    out = conv(x, EDGE_INDEX)
    assert out.shape == (4, 32)
    if normalize:
        torch.testing.assert_close(out.norm(dim=-1), torch.ones(4))
    assert torch.equal(conv((x, x), EDGE_INDEX), out)

    bipartite = PinSageConv((8, 16), 32, hidden_channels=24)
    assert repr(bipartite) == "PinSageConv((8, 16), 32, hidden_channels=24)"
    assert bipartite((x, torch.randn(3, 16)), EDGE_INDEX).shape == (3, 32)
    out.sum().backward()
    assert conv.lin_neighbor.weight.grad is not None


def test_importance_weights(x: torch.Tensor) -> None:
    conv = PinSageConv(8, 16, normalize=False)
    uniform = conv(x, EDGE_INDEX)
    weights = torch.tensor([3.0, 1.0, 1.0, 1.0])
    weighted = conv(x, EDGE_INDEX, weights)
    # only node 0 has neighbours of unequal importance; its output changes, the others do not
    assert not torch.allclose(weighted[0], uniform[0])
    torch.testing.assert_close(weighted[1:], uniform[1:])
    # weights are normalised per target node: only their ratios matter
    torch.testing.assert_close(conv(x, EDGE_INDEX, 10.0 * weights), weighted)
    torch.testing.assert_close(conv(x, EDGE_INDEX, torch.ones(4)), uniform)
    # a zero weight removes the neighbour: node 0 then sees only node 1
    only_first = conv(x, EDGE_INDEX[:, [0, 2, 3]])
    torch.testing.assert_close(conv(x, EDGE_INDEX, torch.tensor([1.0, 0.0, 1.0, 1.0]))[0], only_first[0])
    # weights 3:1 make node 0 pool 0.75 of neighbour 1 and 0.25 of neighbour 2
    neighbours = conv.lin_neighbor(x).relu()
    pooled = 0.75 * neighbours[1] + 0.25 * neighbours[2]
    expected = conv.lin(torch.cat([x[0], pooled])).relu()
    torch.testing.assert_close(weighted[0], expected)


def test_node_without_neighbours_aggregates_zeros(x: torch.Tensor) -> None:
    conv = PinSageConv(8, 16)
    expected = torch.nn.functional.normalize(conv.lin(torch.cat([x[3], torch.zeros(16)])).relu(), dim=-1)
    torch.testing.assert_close(conv(x, EDGE_INDEX)[3], expected)
