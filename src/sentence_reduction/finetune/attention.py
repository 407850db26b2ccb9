"""Fused attention for transformers' MegatronBert, which ships eager attention only.

Eager attention builds the (batch, heads, seq, seq) score and probability tensors in
memory and runs softmax and dropout as separate kernels. At 512 tokens and 8 heads this is
a large share of the activation memory of Erlangshen-MegatronBert-1.3B.
`use_fused_attention` makes every MegatronBert self-attention call
`torch.nn.functional.scaled_dot_product_attention` (SDPA) instead, with the same weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndCrossAttentions
from transformers.models.megatron_bert.modeling_megatron_bert import MegatronBertModel, MegatronBertSelfAttention

__all__ = ["MegatronBertModelUnmaskedWhenUnpadded", "MegatronBertSdpaSelfAttention", "use_fused_attention"]


class MegatronBertSdpaSelfAttention(MegatronBertSelfAttention):
    """`MegatronBertSelfAttention` whose forward runs SDPA; same submodules, same state-dict keys.

    Never built directly: `use_fused_attention` re-labels the class of existing modules, so the
    pretrained query/key/value `nn.Linear` layers, and any hooks DeepSpeed put on them, stay.
    """

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        cache: Cache | None = None,
        output_attentions: bool | None = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # Cross-attention, a KV cache and returned attention probabilities are not needed for
        # encoder fine-tuning, and SDPA cannot return probabilities: keep the eager code there.
        # These are None / bool tests, which torch.compile turns into guards (no graph break).
        if encoder_hidden_states is not None or cache is not None or output_attentions:
            return super().forward(
                hidden_states,
                attention_mask=attention_mask,
                encoder_hidden_states=encoder_hidden_states,
                cache=cache,
                output_attentions=output_attentions,
                **kwargs,
            )

        batch, seq_len, _ = hidden_states.shape
        # (batch, seq, hidden) -> (batch, heads, seq, head_size), as the eager forward does.
        # Calling the Linear submodules (not reading their .weight) keeps DeepSpeed ZeRO-3's
        # per-module gather hooks in charge of partitioned parameters. (One GEMM over the
        # concatenated query/key/value weights measured no faster: benchmarks/results/history_gpu.jsonl.)
        heads_shape = (batch, seq_len, -1, self.attention_head_size)
        query = self.query(hidden_states).view(heads_shape).transpose(1, 2)
        key = self.key(hidden_states).view(heads_shape).transpose(1, 2)
        value = self.value(hidden_states).view(heads_shape).transpose(1, 2)

        # The model hands every layer the eager mask (config._attn_implementation stays "eager"):
        # an additive float tensor (batch, 1, q_len, kv_len), 0 where a key is attended and
        # finfo(embedding dtype).min at padding. It is None for a batch given without a mask
        # (MegatronBertModelUnmaskedWhenUnpadded), and in eager runs for a batch without padding.
        # We pass it on as an additive mask (a boolean one is turned into this form inside SDPA
        # anyway). Flash attention takes no mask at all; with a mask, on H100/H200 in bf16, SDPA
        # runs cuDNN attention (the default choice seen with torch 2.11) or the memory-efficient
        # kernel, which both accept an additive bias.
        # Under bf16 autocast the mask is fp32 while the query is bf16: we cast it to the query's
        # dtype so the kernel reads half the bytes. Clamping first keeps it finite (fp32 min
        # rounds to -inf in bf16), so a row with no visible key averages the values as eager
        # does rather than returning zeros.
        if attention_mask is not None and attention_mask.is_floating_point():
            attention_mask = attention_mask.clamp(min=torch.finfo(query.dtype).min).to(query.dtype)

        # Dropout on the attention probabilities runs inside the kernel, as eager's self.dropout
        # does after softmax. The default scale 1/sqrt(head_size) matches eager's.
        context = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=attention_mask,
            dropout_p=self.dropout.p if self.training else 0.0,
        )
        context = context.transpose(1, 2).reshape(batch, seq_len, self.all_head_size)
        # Callers index [0] and only read [1] when output_attentions is set (handled above).
        return context, None


class MegatronBertModelUnmaskedWhenUnpadded(MegatronBertModel):
    """`MegatronBertModel` that, given no attention mask, runs its layers with no mask at all.

    transformers turns a missing mask into an all-ones one and, under torch.compile, always expands
    it into a (batch, 1, seq, seq) additive mask, which keeps SDPA off its faster mask-free kernels
    (the step's gain is in benchmarks/results/history_gpu.jsonl, "no mask on an unpadded batch").
    A batch with no padding needs no mask: the collator leaves it out
    (`text.padding_collator`) and this forward passes None down to SDPA. Anything else (a mask, a
    decoder, cross-attention, a cache, returned attentions) takes transformers' own forward.
    """

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPoolingAndCrossAttentions | tuple:
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        special = (
            attention_mask is not None
            or self.config.is_decoder
            or output_attentions
            or any(value is not None for value in kwargs.values())
        )
        if special:
            return super().forward(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=token_type_ids,
                position_ids=position_ids,
                inputs_embeds=inputs_embeds,
                output_attentions=output_attentions,
                output_hidden_states=output_hidden_states,
                return_dict=return_dict,
                **kwargs,
            )
        embedding_output = self.embeddings(
            input_ids=input_ids, position_ids=position_ids, token_type_ids=token_type_ids, inputs_embeds=inputs_embeds
        )
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        encoded = self.encoder(
            embedding_output, attention_mask=None, output_hidden_states=output_hidden_states, return_dict=True
        )
        sequence_output = encoded.last_hidden_state
        output = BaseModelOutputWithPoolingAndCrossAttentions(
            last_hidden_state=sequence_output,
            pooler_output=self.pooler(sequence_output) if self.pooler is not None else None,
            hidden_states=encoded.hidden_states,
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return output if return_dict else output.to_tuple()


def use_fused_attention(model: nn.Module) -> nn.Module:
    """Make every MegatronBert self-attention in `model` run SDPA, in place; return `model`.

    Swapping the class (rather than building new modules) touches no parameter data, so it
    works on a model loaded with `from_pretrained`, keeps `state_dict`/`save_pretrained` keys
    unchanged, and is safe on DeepSpeed ZeRO-partitioned parameters. Call it before
    `torch.compile`. Calling it twice is harmless. The change is not saved: a model re-loaded
    with `from_pretrained` is eager again until this is called on it. The MegatronBert model
    itself also learns to run a batch given without an attention mask with no mask at all.
    """
    found = False
    for module in model.modules():
        if isinstance(module, MegatronBertSelfAttention):
            found = True
            if type(module) is MegatronBertSelfAttention:
                module.__class__ = MegatronBertSdpaSelfAttention
        elif type(module) is MegatronBertModel:
            module.__class__ = MegatronBertModelUnmaskedWhenUnpadded
    if not found:
        # Doing nothing silently would hide a wrong call (e.g. on another architecture).
        raise ValueError(f"no MegatronBert self-attention found in {type(model).__name__}")
    return model
