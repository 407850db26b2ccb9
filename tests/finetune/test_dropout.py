"""Dropout with ATen-drawn masks: nn.Dropout's distribution and gradient, the same mask compiled or
not, and the model switch that keeps every weight."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from transformers import MegatronBertConfig, MegatronBertForSequenceClassification

from sentence_reduction.finetune.dropout import AtenMaskDropout, draw_dropout_masks_with_aten
from sentence_reduction.finetune.model import ModelSettings, build_model


def aten_dropout(p: float) -> AtenMaskDropout:
    module = nn.Dropout(p)
    draw_dropout_masks_with_aten(module)  # a module is among its own modules()
    return module


def test_drops_at_rate_p_and_scales_the_rest() -> None:
    torch.manual_seed(0)
    hidden = torch.rand(1000, 1000) + 0.5  # no zeros of its own
    output = aten_dropout(0.1).train()(hidden)
    dropped = output == 0
    assert abs(dropped.float().mean().item() - 0.1) < 0.002  # 1e6 draws: 6 standard deviations
    assert torch.allclose(output[~dropped], hidden[~dropped] / 0.9)


def test_gradient_is_the_mask_over_keep_probability() -> None:
    torch.manual_seed(0)
    hidden = (torch.rand(64, 128) + 0.5).requires_grad_()
    output = aten_dropout(0.25).train()(hidden)
    output.sum().backward()
    kept = (output != 0).float()
    assert torch.equal(hidden.grad, kept / 0.75)


def test_evaluation_and_p_zero_pass_through() -> None:
    hidden = torch.randn(8, 16)
    assert aten_dropout(0.5).eval()(hidden) is hidden
    assert aten_dropout(0.0).train()(hidden) is hidden


@pytest.mark.slow
def test_compiled_draws_the_same_mask_as_eager() -> None:
    """Under torch.compile the mask still comes from ATen's generator (the custom op is not
    replaced by inductor's own random numbers): the same seed gives the same output and gradient."""
    dropout = aten_dropout(0.3).train()

    def layer(hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(dropout(hidden) * 2.0 + 1.0)

    def run(function) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = torch.linspace(-2, 2, 4096).reshape(64, 64).requires_grad_()
        torch.manual_seed(5)
        output = function(hidden)
        output.sum().backward()
        return output.detach(), hidden.grad

    torch._dynamo.reset()
    compiled = torch.compile(layer, fullgraph=True)  # inductor; fullgraph: a graph break raises
    expected, expected_grad = run(layer)
    got, got_grad = run(compiled)
    torch._dynamo.reset()
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(got_grad, expected_grad, atol=1e-6)
    assert (expected == torch.tanh(torch.tensor(1.0))).any()  # some elements were dropped


def test_model_switch_keeps_weights_and_evaluation_outputs() -> None:
    config = MegatronBertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        hidden_dropout_prob=0.1,
        num_labels=3,
    )
    torch.manual_seed(0)
    model = MegatronBertForSequenceClassification(config).eval()
    switched = copy.deepcopy(model)
    draw_dropout_masks_with_aten(switched)

    dropouts = [module for module in switched.modules() if isinstance(module, nn.Dropout)]
    assert dropouts and all(type(module) is AtenMaskDropout for module in dropouts)
    assert switched.state_dict().keys() == model.state_dict().keys()
    input_ids = torch.randint(1, 50, (2, 10))
    with torch.no_grad():
        assert torch.equal(switched(input_ids=input_ids).logits, model(input_ids=input_ids).logits)

    switched.train()
    switched(input_ids=input_ids, labels=torch.tensor([0, 2])).loss.backward()
    assert all(parameter.grad is not None for parameter in switched.classifier.parameters())


def test_the_model_parameter_turns_it_on() -> None:
    config = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    on = build_model(ModelSettings(config=config, dropout_masks_from_aten=True), num_labels=3, vocab_size=40)
    off = build_model(ModelSettings(config=config), num_labels=3, vocab_size=40)
    assert any(type(module) is AtenMaskDropout for module in on.modules())
    assert not any(type(module) is AtenMaskDropout for module in off.modules())
