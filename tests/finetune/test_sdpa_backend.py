"""`model.attention_backend`: transformers' SDPA attention with a chosen SDPA kernel tried first."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from sentence_reduction.finetune.model import ModelSettings, apply_runtime_settings, build_model, compile_layers
from sentence_reduction.finetune.sdpa_backend import BACKENDS, attention_implementation

TINY_BERT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
LENGTHS = [16, 11, 5]


def bert(attention_dropout: float = 0.0) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100,
        max_position_embeddings=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=attention_dropout,
        initializer_range=0.2,  # peaked attention: a key that should be masked shows in the outputs
        num_labels=3,
        **TINY_BERT,
    )
    return BertForSequenceClassification(config).eval()


def padded_batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(1, 100, (len(LENGTHS), max(LENGTHS)), generator=generator)
    attention_mask = (torch.arange(max(LENGTHS))[None, :] < torch.tensor(LENGTHS)[:, None]).long()
    return {"input_ids": input_ids.masked_fill(attention_mask == 0, 0), "attention_mask": attention_mask}


def priority_order() -> list[int]:
    return list(torch._C._get_sdp_priority_order())


def enabled_backends() -> list[bool]:
    return [
        torch.backends.cuda.flash_sdp_enabled(),
        torch.backends.cuda.mem_efficient_sdp_enabled(),
        torch.backends.cuda.cudnn_sdp_enabled(),
        torch.backends.cuda.math_sdp_enabled(),
    ]


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_the_chosen_kernel_is_first_while_attention_runs_and_torchs_order_is_back_after(backend, monkeypatch):
    """Every attention call runs with ``backend`` first in SDPA's priority order and every kernel still
    enabled (a call the backend refuses falls through to the next); torch's own order afterwards."""
    before = priority_order(), enabled_backends()
    seen = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kwargs):
        seen.append((priority_order()[0], all(enabled_backends())))
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    model = apply_runtime_settings(bert(), ModelSettings(attention_backend=backend))
    with torch.no_grad():
        model(**padded_batch())
    assert seen == [(int(BACKENDS[backend]), True)] * TINY_BERT["num_hidden_layers"]
    assert (priority_order(), enabled_backends()) == before


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["flash", "math"])
def test_a_padded_batch_keeps_its_mask_eager_and_with_compiled_layers(backend):
    """Each padded row gives the logits its text gives alone (transformers builds the SDPA mask for the
    registered name), the same as plain SDPA, and the compiled layers trace the kernel choice without a
    graph break."""
    torch._dynamo.reset()
    plain = apply_runtime_settings(bert(), ModelSettings())
    chosen = apply_runtime_settings(copy.deepcopy(plain), ModelSettings(attention_backend=backend))
    assert chosen.config._attn_implementation == attention_implementation(backend) != "sdpa"
    batch = padded_batch()
    with torch.no_grad():
        expected = plain(**batch).logits
        alone = torch.cat(
            [chosen(input_ids=batch["input_ids"][row : row + 1, :length]).logits for row, length in enumerate(LENGTHS)]
        )
        eager = chosen(**batch).logits
        counters = torch._dynamo.utils.counters
        counters.clear()
        compile_layers(chosen, dynamic=False)
        compiled = chosen(**batch).logits
    torch.testing.assert_close(eager, alone, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(eager, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(compiled, expected, rtol=1e-4, atol=1e-5)
    assert sum(counters["graph_break"].values()) == 0
    assert counters["stats"]["unique_graphs"] == 1


def test_an_attention_backend_is_refused_where_it_would_choose_nothing():
    with pytest.raises(ValueError, match="one of flash, efficient, cudnn, math"):
        attention_implementation("flash_attention_2")
    with pytest.raises(ValueError, match="needs fused_attention"):
        apply_runtime_settings(bert(), ModelSettings(fused_attention=False, attention_backend="flash"))
    megatron = {"config": TINY_BERT, "architecture": "megatron-bert", "attention_backend": "flash"}
    with pytest.raises(ValueError, match="not MegatronBert's own"):
        build_model(ModelSettings.from_params(megatron), num_labels=3, vocab_size=100)


# How each backend's kernels are named (cuDNN's Hopper kernels also have "flash" in their names).
IS_BACKENDS_KERNEL = {
    "flash": lambda name: "flash" in name and "cudnn" not in name,
    "efficient": lambda name: "fmha_cutlass" in name,
    "cudnn": lambda name: "cudnn" in name,
}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="SDPA's kernels differ only on a GPU")
@pytest.mark.parametrize("backend", list(IS_BACKENDS_KERNEL))
def test_the_chosen_kernel_runs_in_the_compiled_layers_forward_and_backward_on_gpu(backend):
    """On a GPU (bf16, 16 heads of 64, attention dropout) the compiled layers run ``backend``'s kernels,
    forward and backward, and no other attention kernel."""
    from torch.autograd import DeviceType

    torch._dynamo.reset()
    settings = ModelSettings.from_params(
        {
            "architecture": "bert",
            "config": {
                **TINY_BERT,
                "hidden_size": 1024,
                "num_attention_heads": 16,
                "attention_probs_dropout_prob": 0.1,
            },
            "attention_backend": backend,
        }
    )
    model = build_model(settings, num_labels=3, vocab_size=100).cuda().to(torch.bfloat16).train()
    compile_layers(model, dynamic=False)
    input_ids = torch.randint(1, 100, (4, 128), device="cuda")
    model(input_ids=input_ids).logits.sum().backward()  # compiles
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
        model(input_ids=input_ids).logits.sum().backward()
        torch.cuda.synchronize()
    kernels = {event.key.lower() for event in profile.key_averages() if event.device_type == DeviceType.CUDA}
    attention = {name for name in kernels if any(key in name for key in ("flash", "fmha", "cudnn", "attention"))}
    assert len(attention) >= 2, kernels  # forward and backward
    assert all(IS_BACKENDS_KERNEL[backend](name) for name in attention), attention
