"""The recurrent network, in torch: GRU or LSTM layers and a linear head per time step.

With ``stride`` > 1 a linear front end (with a ReLU) maps each run of ``stride``
samples (all channels) to one input vector, and the recurrent layers step once per
such patch: ``stride`` times fewer recurrent steps at the same width. The input length
must be a multiple of ``stride``; output k belongs to samples up to (k + 1) * stride.

``Ensemble`` averages several such networks (``arch.members``): its output is the mean
of their log-probabilities, so its softmax is the normalised geometric mean of theirs,
and its state is theirs stacked along the layer axis.

Imported only by the torch backend and by training; the gateway never needs it.
``ExportWrapper`` is the same network with its state as explicit inputs and outputs
and a softmax on top, which is what ``model.onnx`` contains.
"""

from __future__ import annotations

import torch
from torch import nn

from harstream.core.bundle import ArchSpec

__all__ = ["Ensemble", "ExportWrapper", "HarNet", "Net", "build_net"]

RnnState = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


class HarNet(nn.Module):
    def __init__(
        self,
        kind: str,
        input_size: int,
        hidden: int,
        layers: int,
        dropout: float,
        n_classes: int,
        stride: int = 1,
    ) -> None:
        super().__init__()
        rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[kind]
        self.kind = kind
        self.stride = stride
        self.patch = stride * input_size
        self.front = nn.Sequential(nn.Linear(self.patch, hidden), nn.ReLU()) if stride > 1 else None
        self.rnn = rnn(
            hidden if stride > 1 else input_size,
            hidden,
            layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, n_classes)

    @classmethod
    def from_arch(cls, arch: ArchSpec, n_classes: int, input_size: int) -> HarNet:
        return cls(
            arch.type, input_size, arch.hidden, arch.layers, arch.dropout, n_classes, arch.stride
        )

    def forward(
        self, x: torch.Tensor, state: RnnState | None = None
    ) -> tuple[torch.Tensor, RnnState]:
        """x (B, T, input) -> logits (B, T / stride, classes) and the state after the
        last step."""
        if self.front is not None:
            x = self.front(x.reshape(x.shape[0], -1, self.patch))
        y, state = self.rnn(x, state)
        return self.head(self.dropout(y)), state


class Ensemble(nn.Module):
    """Members of one shape side by side: log-probabilities averaged, states stacked."""

    def __init__(self, members: list[HarNet]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.kind = members[0].kind
        self.stride = members[0].stride
        self._layers = members[0].rnn.num_layers

    def forward(
        self, x: torch.Tensor, state: RnnState | None = None
    ) -> tuple[torch.Tensor, RnnState]:
        """As ``HarNet.forward``; the logits are the members' mean log-probabilities."""
        n = self._layers
        logits, states = [], []
        for k, member in enumerate(self.members):
            own: RnnState | None = None
            if isinstance(state, tuple):
                own = (state[0][k * n : (k + 1) * n], state[1][k * n : (k + 1) * n])
            elif state is not None:
                own = state[k * n : (k + 1) * n]
            out, new = member(x, own)
            logits.append(torch.log_softmax(out, dim=-1))
            states.append(new)
        mean = torch.stack(logits).mean(dim=0)
        if isinstance(states[0], tuple):
            return mean, (torch.cat([s[0] for s in states]), torch.cat([s[1] for s in states]))
        return mean, torch.cat(states)


Net = HarNet | Ensemble


def build_net(arch: ArchSpec, n_classes: int, input_size: int) -> Net:
    """The network of a bundle's ``arch``: one ``HarNet``, or an ``Ensemble`` of
    ``arch.members`` of them."""
    if arch.members == 1:
        return HarNet.from_arch(arch, n_classes, input_size)
    return Ensemble([HarNet.from_arch(arch, n_classes, input_size) for _ in range(arch.members)])


class ExportWrapper(nn.Module):
    """Explicit state in and out, probabilities out: the ONNX graph's signature."""

    def __init__(self, net: Net) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        rnn_state: RnnState = (state[0], state[1]) if self.net.kind == "lstm" else state[0]
        logits, new = self.net(x, rnn_state)
        probs = torch.softmax(logits, dim=-1)
        return (probs, *new) if isinstance(new, tuple) else (probs, new)
