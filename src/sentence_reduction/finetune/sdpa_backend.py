"""transformers' SDPA attention with a chosen SDPA kernel tried first (`model.attention_backend`).

`scaled_dot_product_attention` runs the first kernel, in torch's priority order, that takes the call:
on an H200 with torch 2.11, cuDNN's for BERT-large's 16 heads of 64 with dropout (docs/encoders.md).
For each backend this module registers an attention function with transformers (``sdpa_first_<backend>``,
and the SDPA mask for it) that runs transformers' own `sdpa_attention_forward` with that backend first and
the others after it, so a call it cannot take (flash attention given a mask) still runs. Under
torch.compile, dynamo traces the `sdpa_kernel` context and the kernel is chosen when the graph is traced.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

__all__ = ["BACKENDS", "attention_implementation"]

BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "math": SDPBackend.MATH,
}
# transformers takes any implementation whose name holds "flash" for a flash-attention package to load.
_NAMES = {
    "flash": "sdpa_first_fa2",
    "efficient": "sdpa_first_efficient",
    "cudnn": "sdpa_first_cudnn",
    "math": "sdpa_first_math",
}


def attention_implementation(backend: str | None) -> str:
    """The ``attn_implementation`` name of transformers' SDPA attention with ``backend`` first (registered
    with transformers on first use); plain ``sdpa`` (torch's own order) when ``backend`` is None."""
    if backend is None:
        return "sdpa"
    if backend not in BACKENDS:
        raise ValueError(f"model.attention_backend: one of {', '.join(BACKENDS)} or null, not {backend!r}")
    name = _NAMES[backend]
    if name not in AttentionInterface._global_mapping:
        AttentionInterface.register(name, _sdpa_with_first(BACKENDS[backend]))
        # Without a mask function of its own transformers would build no mask at all for the name.
        AttentionMaskInterface.register(name, sdpa_mask)
    return name


def _sdpa_with_first(first: SDPBackend) -> Callable[..., tuple[torch.Tensor, None]]:
    order = [first, *(backend for backend in BACKENDS.values() if backend != first)]

    def attention(module, query, key, value, attention_mask, **kwargs) -> tuple[torch.Tensor, None]:
        with sdpa_kernel(order, set_priority=True):
            return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    return attention
