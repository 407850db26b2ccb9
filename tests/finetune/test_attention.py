"""CPU tests of the fused (SDPA) MegatronBert attention against transformers' eager attention."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from transformers import MegatronBertConfig, MegatronBertForSequenceClassification
from transformers.models.megatron_bert.modeling_megatron_bert import MegatronBertModel, MegatronBertSelfAttention

from sentence_reduction.finetune.attention import MegatronBertSdpaSelfAttention, use_fused_attention

LENGTHS = [12, 9, 4, 1]  # the last row is [CLS] alone: every other key is padding
SEQ_LEN = max(LENGTHS)
NUM_LABELS = 5
# The tiny encoder's shape, for MegatronBert and BERT alike.
TINY_SHAPE = {
    "vocab_size": 100,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "max_position_embeddings": 32,
}


def make_config(hidden_dropout: float = 0.0, attention_dropout: float = 0.0) -> MegatronBertConfig:
    # initializer_range 0.2 (not 0.02) gives peaked attention, so a wrong mask shows up in the outputs.
    return MegatronBertConfig(
        **TINY_SHAPE,
        hidden_dropout_prob=hidden_dropout,
        attention_probs_dropout_prob=attention_dropout,
        initializer_range=0.2,
        num_labels=NUM_LABELS,
    )


def make_model(config: MegatronBertConfig, seed: int = 0) -> MegatronBertForSequenceClassification:
    torch.manual_seed(seed)
    return MegatronBertForSequenceClassification(config).eval()


def make_batch(seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, 100, (len(LENGTHS), SEQ_LEN), generator=generator)
    attention_mask = (torch.arange(SEQ_LEN)[None, :] < torch.tensor(LENGTHS)[:, None]).long()
    input_ids = input_ids.masked_fill(attention_mask == 0, 0)  # [PAD] = 0
    labels = torch.tensor([0, 1, 2, 4])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def eager_and_fused(config: MegatronBertConfig) -> tuple[torch.nn.Module, torch.nn.Module]:
    eager = make_model(config)
    fused = use_fused_attention(copy.deepcopy(eager))
    return eager, fused


def self_attentions(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(m, MegatronBertSelfAttention)]


def test_swaps_every_self_attention_in_place_keeping_weights() -> None:
    model = make_model(make_config())
    weights_before = [(m.query.weight, m.key.weight, m.value.weight) for m in self_attentions(model)]

    returned = use_fused_attention(model)

    assert returned is model
    swapped = self_attentions(model)
    assert len(swapped) == 2
    assert all(type(m) is MegatronBertSdpaSelfAttention for m in swapped)
    # The very same Parameter objects: nothing was copied or re-created.
    for m, (q, k, v) in zip(swapped, weights_before):
        assert m.query.weight is q and m.key.weight is k and m.value.weight is v
    assert use_fused_attention(model) is model  # idempotent
    assert all(type(m) is MegatronBertSdpaSelfAttention for m in self_attentions(model))


def test_rejects_a_model_without_megatron_bert_attention() -> None:
    with pytest.raises(ValueError, match="no MegatronBert self-attention"):
        use_fused_attention(torch.nn.Linear(2, 2))


def test_eval_parity_with_eager_on_padded_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    eager, fused = eager_and_fused(make_config(hidden_dropout=0.1, attention_dropout=0.1))
    batch = make_batch()
    valid = batch["attention_mask"].bool()
    sdpa_calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def counting_sdpa(*args, **kwargs):
        sdpa_calls.append(kwargs.get("attn_mask"))
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting_sdpa)
    with torch.no_grad():
        out_eager = eager(**batch, output_hidden_states=True)
        # The padding mask must matter for this batch, or parity would prove nothing about it.
        unmasked = eager(input_ids=batch["input_ids"], attention_mask=torch.ones_like(batch["attention_mask"]))
        assert not sdpa_calls  # transformers' eager path does not use SDPA...
        out_fused = fused(**batch, output_hidden_states=True)

    # ...so parity compares two different code paths: one SDPA call per layer, with the mask.
    assert len(sdpa_calls) == 2 and all(mask is not None for mask in sdpa_calls)
    assert (unmasked.logits - out_eager.logits).abs().max() > 1e-2
    assert (out_fused.logits - out_eager.logits).abs().max() < 1e-4
    assert len(out_fused.hidden_states) == len(out_eager.hidden_states) == 3
    for h_fused, h_eager in zip(out_fused.hidden_states, out_eager.hidden_states):
        assert (h_fused[valid] - h_eager[valid]).abs().max() < 1e-4


def test_padded_tokens_do_not_leak_into_valid_positions() -> None:
    _, fused = eager_and_fused(make_config())
    batch = make_batch()
    padding = batch["attention_mask"] == 0
    valid = ~padding
    changed = dict(batch, input_ids=batch["input_ids"].masked_fill(padding, 57))

    with torch.no_grad():
        out = fused(**batch, output_hidden_states=True)
        out_changed = fused(**changed, output_hidden_states=True)

    assert (out.hidden_states[-1][valid] - out_changed.hidden_states[-1][valid]).abs().max() < 1e-5
    assert (out.logits - out_changed.logits).abs().max() < 1e-5
    # Padded positions did change, so the comparison above is not vacuous.
    assert (out.hidden_states[-1][padding] - out_changed.hidden_states[-1][padding]).abs().max() > 1e-3


def test_backward_matches_eager() -> None:
    eager, fused = eager_and_fused(make_config())
    batch = make_batch()

    eager(**batch).loss.backward()
    fused(**batch).loss.backward()

    eager_grads = {name: p.grad for name, p in eager.named_parameters()}
    checked = 0
    for name, p in fused.named_parameters():
        g_eager = eager_grads[name]
        if g_eager is None:  # e.g. embedding rows never used
            assert p.grad is None
            continue
        assert p.grad is not None, name
        # Relative to the tensor's largest gradient; the absolute floor is for gradients that are
        # zero in exact arithmetic (the key bias cannot change a softmax) and float noise here.
        assert (p.grad - g_eager).abs().max() <= 1e-4 * g_eager.abs().max() + 1e-6, name
        checked += 1
    assert checked > 0
    # Gradients reach the attention projections through the fused kernel.
    for m in self_attentions(fused):
        for linear in (m.query, m.key, m.value):
            assert linear.weight.grad.abs().max() > 0


def test_state_dict_keys_unchanged_and_save_pretrained_round_trip(tmp_path: Path) -> None:
    eager, fused = eager_and_fused(make_config())
    batch = make_batch()

    assert list(fused.state_dict()) == list(eager.state_dict())
    for (name, t_fused), t_eager in zip(fused.state_dict().items(), eager.state_dict().values()):
        assert torch.equal(t_fused, t_eager), name

    fused.save_pretrained(tmp_path)
    reloaded, info = MegatronBertForSequenceClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    reloaded.eval()
    # The swap is not persisted: a re-loaded model is plain eager until switched again.
    assert all(type(m) is MegatronBertSelfAttention for m in self_attentions(reloaded))
    use_fused_attention(reloaded)

    with torch.no_grad():
        logits_fused = fused(**batch).logits
        logits_reloaded = reloaded(**batch).logits
        logits_eager = eager(**batch).logits
    assert (logits_reloaded - logits_fused).abs().max() < 1e-6
    assert (logits_reloaded - logits_eager).abs().max() < 1e-4


def test_train_mode_applies_attention_dropout_inside_the_kernel() -> None:
    # Hidden dropout off: any randomness comes from the attention dropout alone.
    _, fused = eager_and_fused(make_config(hidden_dropout=0.0, attention_dropout=0.5))
    batch = make_batch()
    fused.train()

    with torch.no_grad():
        first = fused(**batch).logits
        second = fused(**batch).logits
        fused.eval()
        eval_first = fused(**batch).logits
        eval_second = fused(**batch).logits

    assert (first - second).abs().max() > 1e-3
    assert (first - eval_first).abs().max() > 1e-3
    assert torch.equal(eval_first, eval_second)


def test_train_mode_without_dropout_is_deterministic_and_matches_eager() -> None:
    eager, fused = eager_and_fused(make_config(hidden_dropout=0.0, attention_dropout=0.0))
    batch = make_batch()
    eager.train()
    fused.train()

    with torch.no_grad():
        first = fused(**batch).logits
        second = fused(**batch).logits
        reference = eager(**batch).logits

    assert torch.equal(first, second)
    assert (first - reference).abs().max() < 1e-4


def test_output_attentions_falls_back_to_eager() -> None:
    eager, fused = eager_and_fused(make_config())
    batch = make_batch()

    with torch.no_grad():
        out_eager = eager(**batch, output_attentions=True)
        out_fused = fused(**batch, output_attentions=True)

    assert len(out_fused.attentions) == 2
    for a_fused, a_eager in zip(out_fused.attentions, out_eager.attentions):
        assert a_fused.shape == (len(LENGTHS), 4, SEQ_LEN, SEQ_LEN)
        assert (a_fused - a_eager).abs().max() < 1e-6


def test_row_without_visible_keys_averages_like_eager_under_autocast() -> None:
    # An all-padding row: eager's finite mask gives uniform attention. Cast to bf16 unclamped,
    # the fp32 min would become -inf and SDPA would return zeros for that row instead.
    eager, fused = eager_and_fused(make_config())
    batch = make_batch()
    batch["attention_mask"][-1] = 0
    with torch.no_grad():
        reference = eager(**batch, output_hidden_states=True).hidden_states[1][-1]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = fused(**batch, output_hidden_states=True).hidden_states[1][-1].float()

    assert torch.isfinite(got).all()
    assert (got - reference).abs().max() < 0.05 * reference.abs().max()


@pytest.mark.parametrize("mode", ["autocast", "bf16_weights"])
def test_bf16_masks_are_accepted_and_close_to_eager(mode: str) -> None:
    # autocast: the mask is fp32 (from fp32 embeddings) while queries are bf16, so the mask must
    # be cast; bf16_weights: the mask is built in bf16 already (DeepSpeed bf16 without autocast).
    eager, fused = eager_and_fused(make_config())
    batch = make_batch()
    with torch.no_grad():
        reference = eager(**batch).logits
        if mode == "autocast":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = fused(**batch).logits
        else:
            logits = fused.to(torch.bfloat16)(**batch).logits

    assert torch.isfinite(logits).all()
    assert (logits.float() - reference).abs().max() < 0.1 * reference.abs().max()


def test_fused_forward_compiles_without_graph_breaks() -> None:
    model = use_fused_attention(make_model(make_config()))
    attention = self_attentions(model)[0]
    hidden = torch.randn(len(LENGTHS), SEQ_LEN, 64)
    valid = make_batch()["attention_mask"].bool()
    mask = torch.zeros(len(LENGTHS), 1, SEQ_LEN, SEQ_LEN).masked_fill(
        ~valid[:, None, None, :], torch.finfo(torch.float32).min
    )

    torch._dynamo.reset()
    compiled = torch.compile(attention, fullgraph=True, backend="eager")  # fullgraph: a break raises
    with torch.no_grad():
        expected = attention(hidden, attention_mask=mask)[0]
        got = compiled(hidden, attention_mask=mask)[0]
    torch._dynamo.reset()

    assert (got - expected).abs().max() < 1e-6


# --- Fused query/key/value projection --------------------------------------------------------


def make_unpadded_input_ids(seed: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(1, 100, (len(LENGTHS), SEQ_LEN), generator=generator)


def spy_on_sdpa(monkeypatch: pytest.MonkeyPatch) -> list:
    """Record the attn_mask of every SDPA call made by the fused attention module."""
    import sentence_reduction.finetune.attention as attention_module

    masks = []
    sdpa = attention_module.F.scaled_dot_product_attention

    def recording_sdpa(*args, **kwargs):
        masks.append(kwargs.get("attn_mask"))
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention", recording_sdpa)
    return masks


def test_unpadded_batch_without_mask_runs_sdpa_unmasked_and_matches_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    from sentence_reduction.finetune.attention import MegatronBertModelUnmaskedWhenUnpadded

    eager, fused = eager_and_fused(make_config())
    assert type(fused.bert) is MegatronBertModelUnmaskedWhenUnpadded
    assert type(eager.bert) is not MegatronBertModelUnmaskedWhenUnpadded
    input_ids = make_unpadded_input_ids()
    ones = torch.ones_like(input_ids)
    masks = spy_on_sdpa(monkeypatch)

    with torch.no_grad():
        reference = eager(input_ids=input_ids, attention_mask=ones)
        assert not masks
        out = fused(input_ids=input_ids, output_hidden_states=True)
        assert len(masks) == 2 and all(mask is None for mask in masks)
        masks.clear()
        batch = make_batch()
        padded = fused(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        padded_reference = eager(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        as_tuple = fused(input_ids=input_ids, return_dict=False)

    assert (out.logits - reference.logits).abs().max() < 1e-5
    assert len(out.hidden_states) == 3  # output_hidden_states is honoured on the unmasked path
    # A padded batch's mask still reaches SDPA, and still matters.
    assert len(masks) == 4 and all(mask is not None for mask in masks[:2])
    assert (padded.logits - padded_reference.logits).abs().max() < 1e-5
    assert isinstance(as_tuple, tuple)
    assert torch.equal(as_tuple[0], out.logits)


def test_base_model_without_mask_matches_eager_and_returns_tuples() -> None:
    eager, fused = eager_and_fused(make_config())
    input_ids = make_unpadded_input_ids()
    token_type_ids = (torch.arange(SEQ_LEN) >= SEQ_LEN // 2).long().expand(len(LENGTHS), -1)
    with torch.no_grad():
        reference = eager.bert(
            input_ids=input_ids, attention_mask=torch.ones_like(input_ids), token_type_ids=token_type_ids
        )
        out = fused.bert(input_ids=input_ids, token_type_ids=token_type_ids)
        no_types = fused.bert(input_ids=input_ids)
        as_tuple = fused.bert(input_ids=input_ids, token_type_ids=token_type_ids, return_dict=False)

    assert (out.last_hidden_state - reference.last_hidden_state).abs().max() < 1e-5
    assert (out.pooler_output - reference.pooler_output).abs().max() < 1e-5
    # token_type_ids are not dropped on the unmasked path.
    assert (no_types.last_hidden_state - out.last_hidden_state).abs().max() > 1e-3
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 2
    assert torch.equal(as_tuple[0], out.last_hidden_state) and torch.equal(as_tuple[1], out.pooler_output)


@pytest.mark.parametrize("flag", ["output_hidden_states", "output_attentions"])
def test_unmasked_path_honours_config_output_flags(flag: str) -> None:
    config = make_config()
    setattr(config, flag, True)
    eager, fused = eager_and_fused(config)
    input_ids = make_unpadded_input_ids()
    with torch.no_grad():
        expected = getattr(eager(input_ids=input_ids), flag.removeprefix("output_"))
        got = getattr(fused(input_ids=input_ids), flag.removeprefix("output_"))
    assert expected is not None
    assert got is not None and len(got) == len(expected)


def test_unmasked_model_compiles_fullgraph_and_keeps_sdpa_unmasked(monkeypatch: pytest.MonkeyPatch) -> None:
    # Under torch.compile transformers always expands a missing mask into a (batch, 1, seq, seq)
    # one; the unmasked forward is what keeps it away from SDPA there.
    eager, fused = eager_and_fused(make_config())
    input_ids = make_unpadded_input_ids()
    masks = spy_on_sdpa(monkeypatch)

    torch._dynamo.reset()
    try:
        compiled = torch.compile(fused, fullgraph=True, backend="eager")  # fullgraph: a break raises
        with torch.no_grad():
            got = compiled(input_ids=input_ids).logits
            reference = eager(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits
        assert len(masks) == 2 and all(mask is None for mask in masks)

        # Without the unmasked forward, the compiled model hands SDPA a mask: the check above can fail.
        masks.clear()
        torch._dynamo.reset()
        plain = copy.deepcopy(fused)
        plain.bert.__class__ = MegatronBertModel
        with torch.no_grad():
            torch.compile(plain, fullgraph=True, backend="eager")(input_ids=input_ids)
        assert len(masks) == 2 and all(mask is not None for mask in masks)
    finally:
        torch._dynamo.reset()

    assert (got - reference).abs().max() < 1e-4


# --- Collator and settings -------------------------------------------------------------------


def test_padding_collator_omits_the_mask_only_of_unpadded_batches() -> None:
    from sentence_reduction.finetune.text import build_character_vocabulary, build_tokenizer, padding_collator

    same_length = ["今天天气很好", "我们去公园吧"]
    different_length = ["今天天气很好", "好"]
    tokenizer = build_tokenizer(build_character_vocabulary(same_length + different_length))

    def features(texts: list[str]) -> list[dict]:
        return [dict(tokenizer(text), labels=i) for i, text in enumerate(texts)]

    omitting = padding_collator(tokenizer, on_gpu=False, omit_full_mask=True)
    keeping = padding_collator(tokenizer, on_gpu=False, omit_full_mask=False)
    default = padding_collator(tokenizer, on_gpu=False)

    unpadded = omitting(features(same_length))
    assert "attention_mask" not in unpadded
    assert unpadded["input_ids"].shape == (2, 8)  # [CLS] + 6 characters + [SEP]
    assert unpadded["labels"].tolist() == [0, 1]

    padded = omitting(features(different_length))
    assert padded["attention_mask"].tolist() == [[1] * 8, [1, 1, 1] + [0] * 5]

    for collator in (keeping, default):
        for texts in (same_length, different_length):
            batch = collator(features(texts))
            assert "attention_mask" in batch
            assert batch["attention_mask"].shape == batch["input_ids"].shape
        assert bool(collator(features(same_length))["attention_mask"].all())

    # On GPU a batch is padded to a multiple of 8: 3 tokens become 8, so the mask stays.
    gpu_batch = padding_collator(tokenizer, on_gpu=True, omit_full_mask=True)(features(["好", "好"]))
    assert gpu_batch["input_ids"].shape == (2, 8)
    assert gpu_batch["attention_mask"][:, 3:].sum() == 0


@pytest.mark.parametrize("multiple_of", [None, 8])
@pytest.mark.parametrize("omit_full_mask", [False, True])
def test_padded_batch_pads_as_the_collator_does(multiple_of, omit_full_mask) -> None:
    """Prediction's fast padding gives the collator's ids and mask (and the mask only when needed)."""
    from transformers import DataCollatorWithPadding

    from sentence_reduction.finetune.text import build_character_vocabulary, build_tokenizer, padded_batch

    texts_of = {"same": ["今天天气很好", "我们去公园吧"], "different": ["今天天气很好", "好", "我们去"]}
    tokenizer = build_tokenizer(build_character_vocabulary(texts_of["same"] + texts_of["different"]))
    collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=multiple_of)
    for kind, texts in texts_of.items():
        ids = [tokenizer(text)["input_ids"] for text in texts]
        expected = collator([{"input_ids": row} for row in ids])
        batch = padded_batch(ids, tokenizer.pad_token_id, multiple_of, omit_full_mask)
        assert torch.equal(batch["input_ids"], expected["input_ids"])
        unpadded = kind == "same"  # 8 tokens each: a multiple of 8 already
        if omit_full_mask and unpadded:
            assert set(batch) == {"input_ids"}
        else:
            assert torch.equal(batch["attention_mask"], expected["attention_mask"])
            assert set(batch) == {"input_ids", "attention_mask"}


def test_omits_full_masks_follows_the_model_settings() -> None:
    from sentence_reduction.finetune.model import ModelSettings, omits_full_masks

    assert omits_full_masks(ModelSettings()) is True
    assert omits_full_masks(ModelSettings(fused_attention=False)) is False
    assert omits_full_masks(ModelSettings(unpadded_without_mask=False)) is False


def test_residual_stream_is_bf16_under_autocast_and_unchanged_without() -> None:
    from sentence_reduction.finetune.model import ModelSettings, apply_runtime_settings

    config = make_config()
    plain = make_model(config).train()
    model = apply_runtime_settings(copy.deepcopy(plain), ModelSettings())
    apply_runtime_settings(model, ModelSettings())  # applying again adds no second hook
    assert len(model.bert.embeddings._forward_hooks) == 1
    layer_inputs: list[torch.dtype] = []
    model.bert.encoder.layer[1].register_forward_pre_hook(lambda module, args: layer_inputs.append(args[0].dtype))
    batch = make_batch()

    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**batch).loss
    loss.backward()
    assert layer_inputs == [torch.bfloat16]  # the residual stream between layers
    assert loss.dtype == torch.float32
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters() if p.requires_grad)

    # The fp32 stream of the same model under autocast, for comparison: plain MegatronBert.
    plain_inputs: list[torch.dtype] = []
    plain.bert.encoder.layer[1].register_forward_pre_hook(lambda module, args: plain_inputs.append(args[0].dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain_loss = plain(**batch).loss
    assert plain_inputs == [torch.float32]
    assert abs(plain_loss.item() - loss.item()) < 0.05  # same model, bf16 rounding apart

    # Without autocast nothing changes: fp32 throughout, same logits as the plain model.
    model.eval(), plain.eval()
    with torch.no_grad():
        difference = (model(**batch).logits - plain(**batch).logits).abs().max().item()
    assert layer_inputs[-1] == torch.float32
    assert difference < 1e-5


def test_residual_setting_off_leaves_the_embeddings_alone() -> None:
    from sentence_reduction.finetune.model import ModelSettings, apply_runtime_settings

    model = apply_runtime_settings(make_model(make_config()), ModelSettings(residual_in_autocast_dtype=False))
    assert len(model.bert.embeddings._forward_hooks) == 0


def test_a_post_ln_encoders_residual_stream_is_each_layer_norms_output_in_bf16_under_autocast() -> None:
    """BERT (post-LN): the embeddings and every layer norm of the encoder hand on bf16 under autocast;
    without autocast the logits are the plain model's; with the setting off no hook is added."""
    from transformers import BertConfig, BertForSequenceClassification

    from sentence_reduction.finetune.model import ModelSettings, apply_runtime_settings

    config = BertConfig(
        **TINY_SHAPE,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=NUM_LABELS,
    )
    torch.manual_seed(0)
    plain = BertForSequenceClassification(config).train()
    model = apply_runtime_settings(copy.deepcopy(plain), ModelSettings())
    apply_runtime_settings(model, ModelSettings())  # applying again adds no second hook
    norms = [module for module in model.bert.encoder.modules() if isinstance(module, torch.nn.LayerNorm)]
    assert len(norms) == 2 * config.num_hidden_layers
    assert all(len(module._forward_hooks) == 1 for module in [model.bert.embeddings, *norms])
    outputs: list[torch.dtype] = []
    for module in [model.bert.encoder.layer[1].attention.output, model.bert.encoder.layer[1]]:
        module.register_forward_hook(lambda module, args, output: outputs.append(output[0].dtype))
    batch = make_batch()

    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**batch).loss
    loss.backward()
    assert outputs == [torch.bfloat16, torch.bfloat16]  # the stream after each layer norm of the layer
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain_loss = plain(**batch).loss
    assert abs(plain_loss.item() - loss.item()) < 0.05  # same model, bf16 rounding apart

    model.eval(), plain.eval()
    with torch.no_grad():
        difference = (model(**batch).logits - plain(**batch).logits).abs().max().item()
    assert outputs[-1] == torch.float32
    assert difference < 1e-5

    untouched = apply_runtime_settings(copy.deepcopy(plain), ModelSettings(residual_in_autocast_dtype=False))
    assert not any(module._forward_hooks for module in untouched.modules())
