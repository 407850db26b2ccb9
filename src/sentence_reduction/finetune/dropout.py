"""Dropout whose mask is drawn by ATen's Bernoulli kernel, which torch.compile cannot inline.

Under torch.compile, inductor fuses each hidden dropout into the layer norm and residual addition
around it, and torch 2.11's inductor draws every element's random number with a Philox call of its
own, keeping one of the four numbers each call makes: those fused kernels are bound by the random
numbers, not by memory (benchmarks/results/history_gpu.jsonl, "ATen dropout masks"). ATen's Bernoulli
kernel uses all four. Drawn inside a custom op, the mask stays a kernel of its own; the multiplication
by it still fuses. Same distribution as `nn.Dropout`, another random stream.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["AtenMaskDropout", "bernoulli_keep_mask", "draw_dropout_masks_with_aten"]


@torch.library.custom_op("sentence_reduction::bernoulli_keep_mask", mutates_args=())
def bernoulli_keep_mask(shape: Sequence[int], device: torch.device, keep_probability: float) -> torch.Tensor:
    """A bool tensor of ``shape``, each element True with ``keep_probability``."""
    return torch.empty(shape, dtype=torch.bool, device=device).bernoulli_(keep_probability)


@bernoulli_keep_mask.register_fake
def _(shape: Sequence[int], device: torch.device, keep_probability: float) -> torch.Tensor:
    return torch.empty(shape, dtype=torch.bool, device=device)


class AtenMaskDropout(nn.Dropout):
    """`nn.Dropout` with its mask from `bernoulli_keep_mask`; same state, same `p`.

    Never built directly: `draw_dropout_masks_with_aten` re-labels the class of existing modules.
    """

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return hidden_states
        keep = 1.0 - self.p
        mask = bernoulli_keep_mask(hidden_states.shape, hidden_states.device, keep)
        return hidden_states * mask * (1.0 / keep)


def draw_dropout_masks_with_aten(model: nn.Module) -> None:
    """Every `nn.Dropout` module of ``model`` (hidden and classifier dropout) draws its mask with
    ATen; in place. Attention dropout happens inside the SDPA kernel and is not a module call."""
    for module in model.modules():
        if type(module) is nn.Dropout:
            module.__class__ = AtenMaskDropout
