"""`MasterWeightAdamW`: bf16 weights, fp32 master weights, torch's AdamW update, state that survives a save."""

from __future__ import annotations

import io

import pytest
import torch

from sentence_reduction.finetune.master_weights import MasterWeightAdamW

SHAPES = [(6, 4), (4,), (3, 6), (6,)]
BETAS, EPS = (0.9, 0.98), 1e-8


def _initial_weights(seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator) for shape in SHAPES]


def _groups(parameters: list[torch.nn.Parameter]) -> list[dict]:
    """Weights with decay, biases without: the Trainer's two groups."""
    return [{"params": parameters[0::2], "weight_decay": 0.1}, {"params": parameters[1::2], "weight_decay": 0.0}]


def _gradients(step: int) -> list[torch.Tensor]:
    """Gradients as a bf16 model produces them (bf16 values), large enough for the clip to act."""
    generator = torch.Generator().manual_seed(100 + step)
    return [(3 * torch.randn(shape, generator=generator)).bfloat16() for shape in SHAPES]


def _master_weight_run(steps: int, max_norm: float | None, compiled: bool = False, device: str = "cpu"):
    parameters = [torch.nn.Parameter(weight.to(device)) for weight in _initial_weights()]
    optimizer = MasterWeightAdamW(_groups(parameters), lr=1e-2, betas=BETAS, eps=EPS, compiled=compiled)
    norms = []
    for step in range(steps):
        for parameter, gradient in zip(parameters, _gradients(step)):
            parameter.grad = gradient.to(device)
        if max_norm is not None:
            norms.append(optimizer.clip_gradients(max_norm))
        for group in optimizer.param_groups:  # a scheduler moving the learning rate
            group["lr"] = 1e-2 / (step + 1)
        optimizer.step()
    return parameters, optimizer, norms


def _reference_run(steps: int, max_norm: float | None):
    """torch's AdamW on fp32 weights fed the same gradients, clipped by `clip_grad_norm_`."""
    parameters = [torch.nn.Parameter(weight) for weight in _initial_weights()]
    optimizer = torch.optim.AdamW(_groups(parameters), lr=1e-2, betas=BETAS, eps=EPS, foreach=False)
    norms = []
    for step in range(steps):
        for parameter, gradient in zip(parameters, _gradients(step)):
            parameter.grad = gradient.float()
        if max_norm is not None:
            norms.append(torch.nn.utils.clip_grad_norm_(parameters, max_norm))
        for group in optimizer.param_groups:
            group["lr"] = 1e-2 / (step + 1)
        optimizer.step()
    return parameters, norms


@pytest.mark.parametrize("max_norm", [None, 1.0], ids=["unclipped", "clipped"])
def test_master_weights_follow_torch_adamw_and_the_weights_are_their_bf16_rounding(max_norm):
    parameters, optimizer, norms = _master_weight_run(steps=6, max_norm=max_norm)
    reference, reference_norms = _reference_run(steps=6, max_norm=max_norm)
    for parameter, expected in zip(parameters, reference):
        master = optimizer.state[parameter]["master"]
        assert master.dtype == torch.float32 and parameter.dtype == torch.bfloat16
        torch.testing.assert_close(master, expected.detach(), rtol=1e-6, atol=1e-7)
        assert torch.equal(parameter.detach(), master.to(torch.bfloat16))
    torch.testing.assert_close(
        torch.stack(norms) if norms else None, torch.stack(reference_norms) if reference_norms else None
    )
    if max_norm is not None:
        assert min(float(norm) for norm in norms) > max_norm  # the clip acted at every step


def test_the_parameters_stay_the_same_objects_and_turn_bf16():
    parameters = [torch.nn.Parameter(weight) for weight in _initial_weights()]
    identities = [id(parameter) for parameter in parameters]
    MasterWeightAdamW(_groups(parameters))
    assert [id(parameter) for parameter in parameters] == identities
    assert all(parameter.dtype == torch.bfloat16 and parameter.requires_grad for parameter in parameters)


def test_a_parameter_without_a_gradient_is_left_as_it_is():
    parameters = [torch.nn.Parameter(weight) for weight in _initial_weights()]
    optimizer = MasterWeightAdamW(_groups(parameters), lr=1e-2)
    before = [parameter.detach().clone() for parameter in parameters]
    for parameter, gradient in zip(parameters[1:], _gradients(0)[1:]):
        parameter.grad = gradient
    optimizer.step()
    assert torch.equal(parameters[0].detach(), before[0])
    assert float(optimizer.state[parameters[0]]["step"]) == 0
    assert all(not torch.equal(p.detach(), b) for p, b in zip(parameters[1:], before[1:]))


def test_saved_state_loads_in_fp32_and_continues_as_if_never_interrupted():
    uninterrupted, _, _ = _master_weight_run(steps=5, max_norm=1.0)

    parameters, optimizer, _ = _master_weight_run(steps=3, max_norm=1.0)
    buffer = io.BytesIO()
    torch.save({"model": [p.detach().clone() for p in parameters], "optimizer": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)

    # A new process: the model is built afresh (fp32), given the checkpoint's bf16 weights, and a new
    # optimizer loads the saved state (as the Trainer resumes).
    resumed = [torch.nn.Parameter(weight.float()) for weight in saved["model"]]
    optimizer = MasterWeightAdamW(_groups(resumed), lr=1e-2, betas=BETAS, eps=EPS)
    optimizer.load_state_dict(saved["optimizer"])
    assert all(optimizer.state[p]["master"].dtype == torch.float32 for p in resumed)
    for step in (3, 4):
        for parameter, gradient in zip(resumed, _gradients(step)):
            parameter.grad = gradient
        optimizer.clip_gradients(1.0)
        for group in optimizer.param_groups:
            group["lr"] = 1e-2 / (step + 1)
        optimizer.step()
    for parameter, expected in zip(resumed, uninterrupted):
        assert torch.equal(parameter.detach(), expected.detach())


def test_a_state_of_other_groups_is_refused():
    parameters = [torch.nn.Parameter(weight) for weight in _initial_weights()]
    optimizer = MasterWeightAdamW(_groups(parameters))
    other = MasterWeightAdamW([torch.nn.Parameter(weight) for weight in _initial_weights()])
    with pytest.raises(ValueError, match="parameter groups"):
        optimizer.load_state_dict(other.state_dict())


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="the Triton kernel needs a GPU")
        ),
    ],
)
def test_the_compiled_update_follows_torch_adamw_with_one_graph_per_rank(device):
    """Compiled as on GPU (inductor's C++ kernels on the CPU, a Triton kernel on a GPU): the same
    weights as torch's AdamW, and no new graph for another shape of the same rank, another learning
    rate or another weight decay."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    graphs = counters["stats"]["unique_graphs"]
    compiled, optimizer, _ = _master_weight_run(steps=3, max_norm=1.0, compiled=True, device=device)
    reference, _ = _reference_run(steps=3, max_norm=1.0)
    for parameter, expected in zip(compiled, reference):
        master = optimizer.state[parameter]["master"].cpu()
        torch.testing.assert_close(master, expected.detach(), rtol=1e-6, atol=1e-7)
        assert torch.equal(parameter.detach().cpu(), master.to(torch.bfloat16))
    assert counters["stats"]["unique_graphs"] - graphs == 2  # weights (2-D) and biases (1-D)


@pytest.mark.parametrize("max_norm", [None, 1.0], ids=["unclipped", "clipped"])
def test_the_multi_tensor_update_follows_torch_adamw(max_norm):
    """The update of a group in a few launches (torch's fused AdamW over fp32 copies of the gradients):
    the same masters as torch's AdamW, the weights their bf16 rounding, a missing gradient skipped."""
    parameters = [torch.nn.Parameter(weight) for weight in _initial_weights()]
    optimizer = MasterWeightAdamW(_groups(parameters), lr=1e-2, betas=BETAS, eps=EPS, multi_tensor=True)
    for step in range(6):
        for parameter, gradient in zip(parameters, _gradients(step)):
            parameter.grad = gradient
        if max_norm is not None:
            optimizer.clip_gradients(max_norm)
        for group in optimizer.param_groups:
            group["lr"] = 1e-2 / (step + 1)
        optimizer.step()
    reference, _ = _reference_run(steps=6, max_norm=max_norm)
    for parameter, expected in zip(parameters, reference):
        master = optimizer.state[parameter]["master"]
        torch.testing.assert_close(master, expected.detach(), rtol=1e-6, atol=1e-7)
        assert torch.equal(parameter.detach(), master.to(torch.bfloat16))
        assert float(optimizer.state[parameter]["step"]) == 6

    before = parameters[0].detach().clone()
    parameters[0].grad = None
    optimizer.step()
    assert torch.equal(parameters[0].detach(), before) and float(optimizer.state[parameters[0]]["step"]) == 6
