"""The recurrent parts every kind's network shares; each kind's own network is model/<kind>/network.py.

make_rnn builds an LSTM, GRU or plain RNN by name; run_padded runs one over a padded batch densely (each direction
on its own, the reverse one within each row's length), giving the real positions what packing gives; and the
parameter count and dynamic int8 quantization every kind's network can use.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Hidden = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


RNN_CLASSES: dict[str, Callable[..., nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def make_rnn(
    cell: str, input_size: int, hidden_size: int, num_layers: int, dropout: float, bidirectional: bool
) -> nn.RNNBase:
    return RNN_CLASSES[cell](
        input_size,
        hidden_size,
        num_layers=num_layers,
        batch_first=True,
        dropout=dropout if num_layers > 1 else 0.0,
        bidirectional=bidirectional,
    )


# each cell's own kernel, the one nn.RNNBase.forward calls with all its layers and directions at once
RNN_KERNELS: dict[str, Callable[..., tuple[torch.Tensor, ...]]] = {
    "LSTM": torch.lstm, "GRU": torch.gru, "RNN_TANH": torch.rnn_tanh, "RNN_RELU": torch.rnn_relu,
}  # fmt: skip


def reverse_within(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each row's first `lengths[b]` positions in reverse order, its padding left in place: (B, T, F)."""
    steps = torch.arange(x.shape[1], device=x.device)[None, :]  # (1, T)
    back = lengths.to(x.device)[:, None] - 1 - steps  # (B, T)
    index = torch.where(back >= 0, back, steps)
    return x.gather(1, index[:, :, None].expand(-1, -1, x.shape[2]))


def run_padded(rnn: nn.RNNBase, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """`rnn` (batch_first) over right-padded `x` (B, T, F), each row's real positions getting what packing would
    give them, without packing: every direction of every layer runs over the dense batch, the reverse one over each
    row reversed within its length, so it starts from the row's own last word. Dense input takes oneDNN's fused
    CPU kernels, which packed input does not reach (the tagger's encoder forward and backward take a quarter less
    time: commit 37f45be). Positions past a row's length hold no meaningful output. (B, T, D * H)."""
    kernel, directions = RNN_KERNELS[rnn.mode], 2 if rnn.bidirectional else 1
    zero = x.new_zeros(1, x.shape[0], rnn.hidden_size)
    hx: Hidden = (zero, zero) if rnn.mode == "LSTM" else zero
    h = x
    for layer in range(rnn.num_layers):
        outs = []
        for d in range(directions):
            suffix = f"_l{layer}{'_reverse' if d else ''}"
            names = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if rnn.bias else ())
            weights = [getattr(rnn, name + suffix) for name in names]
            inp = reverse_within(h, lengths) if d else h
            out = kernel(inp, hx, weights, rnn.bias, 1, 0.0, rnn.training, False, True)[0]  # (B, T, H)
            outs.append(reverse_within(out, lengths) if d else out)
        h = torch.cat(outs, dim=-1) if directions == 2 else outs[0]
        if layer < rnn.num_layers - 1 and rnn.dropout > 0:
            h = nn.functional.dropout(h, rnn.dropout, rnn.training)
    return h


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def quantize_int8(net: nn.Module) -> nn.Module:
    """A copy with dynamic int8 quantization of its recurrent and linear layers (weights int8, activations
    quantized per batch), for CPU inference. bench/quantization.py measures what it costs and gains."""
    import copy
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the eager-mode API's notice that it moves to torchao
        layers: set[type[nn.Module]] = {nn.LSTM, nn.GRU, nn.RNN, nn.Linear}
        quantized: nn.Module = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
            copy.deepcopy(net), layers, dtype=torch.qint8
        )
    return quantized
