"""The PinSage graph convolution as a torch-geometric ``MessagePassing`` layer."""

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.typing import OptTensor, PairTensor
from torch_geometric.utils import scatter


class PinSageConv(MessagePassing):
    r"""The importance-pooling convolution from the `"Graph Convolutional Neural Networks for Web-Scale
    Recommender Systems" <https://arxiv.org/abs/1806.01973>`_ paper (Algorithm 1)

    .. math::
        \mathbf{n}_i = \sum_{j \in \mathcal{N}(i)} \alpha_{j,i} \,
        \mathrm{ReLU}(\mathbf{Q} \mathbf{x}_j + \mathbf{q}), \qquad
        \alpha_{j,i} = \frac{w_{j,i}}{\sum_{k \in \mathcal{N}(i)} w_{k,i}}

        \mathbf{x}^{\prime}_i = \frac{\mathrm{ReLU}(\mathbf{W} [\mathbf{x}_i \,\|\, \mathbf{n}_i] + \mathbf{b})}
        {\| \mathrm{ReLU}(\mathbf{W} [\mathbf{x}_i \,\|\, \mathbf{n}_i] + \mathbf{b}) \|_2}

    where :math:`w_{j,i}` is the importance of neighbour :math:`j` to node :math:`i` (PinSage: the visit
    count of random walks from :math:`i`). Weights are normalised per target node, so only their ratios
    matter; without :obj:`edge_weight` every neighbour counts the same (a mean). A node without
    neighbours aggregates zeros.

    Args:
        in_channels (int or tuple): Size of each input sample, or a tuple of the source and target sizes
            for bipartite graphs.
        out_channels (int): Size of each output sample.
        hidden_channels (int, optional): Size of the transformed neighbour vectors :math:`\mathbf{Q}
            \mathbf{x}_j`. (default: :obj:`None` = :obj:`out_channels`)
        normalize (bool, optional): If set to :obj:`False`, the output is not :math:`\ell_2`-normalised.
            (default: :obj:`True`)
        bias (bool, optional): If set to :obj:`False`, the layer will not learn additive biases.
            (default: :obj:`True`)

    Shapes:
        - **inputs:** node features :math:`(|\mathcal{V}|, F_{in})` or
          :math:`((|\mathcal{V_s}|, F_{s}), (|\mathcal{V_t}|, F_{t}))` if bipartite,
          edge indices :math:`(2, |\mathcal{E}|)` (source, target),
          edge weights :math:`(|\mathcal{E}|)` *(optional)*
        - **output:** node features :math:`(|\mathcal{V}|, F_{out})` or :math:`(|\mathcal{V_t}|, F_{out})`
          if bipartite
    """

    def __init__(
        self,
        in_channels: int | tuple[int, int],
        out_channels: int,
        hidden_channels: int | None = None,
        normalize: bool = True,
        bias: bool = True,
    ) -> None:
        super().__init__(aggr="add")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.hidden_channels = hidden_channels or out_channels
        self.normalize = normalize
        source, target = (in_channels, in_channels) if isinstance(in_channels, int) else in_channels
        self.lin_neighbor = Linear(source, self.hidden_channels, bias=bias)
        self.lin = Linear(target + self.hidden_channels, out_channels, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.lin_neighbor.reset_parameters()
        self.lin.reset_parameters()

    def forward(self, x: Tensor | PairTensor, edge_index: Tensor, edge_weight: OptTensor = None) -> Tensor:
        if isinstance(x, Tensor):
            x = (x, x)
        source, target = x
        if edge_weight is None:
            edge_weight = torch.ones(edge_index.shape[1], dtype=source.dtype, device=source.device)
        totals = scatter(edge_weight, edge_index[1], dim=0, dim_size=target.shape[0], reduce="sum")
        alpha = edge_weight / totals[edge_index[1]].clamp_min(torch.finfo(edge_weight.dtype).tiny)
        neighbors = self.lin_neighbor(source).relu()
        pooled = self.propagate(edge_index, x=(neighbors, target), alpha=alpha, size=(source.shape[0], target.shape[0]))
        out = self.lin(torch.cat([target, pooled], dim=-1)).relu()
        return F.normalize(out, p=2.0, dim=-1) if self.normalize else out

    def message(self, x_j: Tensor, alpha: Tensor) -> Tensor:
        return alpha.unsqueeze(-1) * x_j

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
            f"hidden_channels={self.hidden_channels})"
        )
