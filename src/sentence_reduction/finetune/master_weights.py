"""AdamW over bf16 weights that keeps fp32 master weights: DeepSpeed's bf16 numerics in one pass.

With bf16 autocast over fp32 weights, every step casts each weight to bf16 for the forward (4 bytes
read, 2 written a parameter), casts each bf16 weight gradient to fp32 (2 read, 4 written) and runs
torch's fused AdamW over fp32 weight, gradient and moments, writing back the gradient too when it
clips (32 bytes): 44 bytes a parameter, 55 GB a step for the 1.3B model. Here the model's weights are
bf16, so their gradients come out bf16 and nothing is cast, and one fused update per parameter reads
the fp32 master weight, the bf16 gradient and the two fp32 moments and writes the master, the moments
and the bf16 weight: 28 bytes. The numerics are those of DeepSpeed's bf16 mode (the winning
solution's): bf16 weights and gradients, fp32 master weights and optimizer state.

torch's fused AdamW cannot mix dtypes, so the update is written here in torch operations; compiled
(``compiled=True``, as the engine asks on GPU), inductor makes one kernel of it per parameter, from
two graphs (2-D and 1-D parameters) that every layer and every later fold of the run reuse.

That is one call of a compiled function per parameter, each some tens of microseconds of the host's
time: for the 1.3B model (steps of a quarter second) the host stays ahead of the GPU, but a BERT-large
(about 390 parameter tensors, steps under 0.1 s) waits on it. ``multi_tensor=True`` updates a parameter
group in a handful of launches instead: the bf16 gradients gathered into one fp32 buffer (a concatenation
and a cast), torch's fused AdamW kernel over the lists of masters, gradients and moments (torch's own
AdamW, the clip as its gradient scale), and one multi-tensor copy of the masters into the bf16 weights.
It moves 40 bytes a parameter instead of 28, so it is the choice where the host, not the memory, is the
limit (`training.master_weight_update`: docs/encoders.md; measured: benchmarks/results/history_gpu.jsonl).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, overload

import torch

__all__ = ["MasterWeightAdamW"]

STATE_KEYS = ("step", "master", "exp_avg", "exp_avg_sq")


def _adamw_update(
    master: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    weight: torch.Tensor,
    step: torch.Tensor,
    lr: torch.Tensor,
    grad_scale: torch.Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
) -> None:
    """torch.optim.AdamW's update of ``master`` (decoupled weight decay, bias correction), with the
    gradient divided by ``grad_scale`` (the clip) as it is read; then the bf16 ``weight`` from it."""
    gradient = grad.float() / grad_scale
    step.add_(1)
    master.mul_(1 - lr * weight_decay)
    exp_avg.lerp_(gradient, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(gradient, gradient, value=1 - beta2)
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    denominator = (exp_avg_sq.sqrt() / bias_correction2.sqrt()).add_(eps)
    master.sub_(lr / bias_correction1 * exp_avg / denominator)
    weight.copy_(master)


_compiled_update = None


def _compiled() -> Any:
    """The update compiled once per process: every parameter and every later fold reuse its graph."""
    global _compiled_update
    if _compiled_update is None:
        _compiled_update = torch.compile(_adamw_update, dynamic=True, fullgraph=True)
    return _compiled_update


class MasterWeightAdamW(torch.optim.Optimizer):
    """AdamW whose parameters are bf16 while its master weights and moments are fp32.

    It is given the model's parameters in fp32: it keeps an fp32 copy of each as the master weight
    and turns the parameter itself into bf16 (in place; the parameter objects stay, so the model, the
    scheduler and the Trainer hold the same ones). Each step updates the masters with AdamW and
    writes them back to the parameters rounded to bf16. The state (per parameter: step, master and
    the two moments, all fp32) saves and loads as any optimizer's, except that loading keeps it fp32
    where torch's base class would cast it to the parameters' bf16.

    Gradient clipping: `clip_gradients` computes the total norm and sets the scale the next step
    divides each gradient by, the clip `clip_grad_norm_` would make, in the same pass as the update.
    A parameter without a gradient in a step is left as it is, as torch's AdamW leaves it.
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        compiled: bool = False,
        multi_tensor: bool = False,
    ):
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})
        self.multi_tensor = multi_tensor
        self.update = _compiled() if compiled and not multi_tensor else _adamw_update
        self.grad_scale: torch.Tensor | None = None
        self._learning_rates: dict[int, torch.Tensor] = {}
        self._unit_scale: torch.Tensor | None = None
        with torch.no_grad():
            for group in self.param_groups:
                for parameter in group["params"]:
                    master = parameter.detach().to(torch.float32, copy=True)
                    self.state[parameter] = {
                        "step": torch.zeros((), dtype=torch.float32, device=parameter.device),
                        "master": master,
                        "exp_avg": torch.zeros_like(master),
                        "exp_avg_sq": torch.zeros_like(master),
                    }
                    parameter.data = parameter.data.to(torch.bfloat16)

    def clip_gradients(self, max_norm: float) -> torch.Tensor:
        """The gradients' total L2 norm (in fp32); the next step scales them to at most ``max_norm``."""
        gradients = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not gradients:
            return torch.zeros(())
        norms = torch._foreach_norm(gradients, 2.0, dtype=torch.float32)
        total = torch.linalg.vector_norm(torch.stack(norms))
        self.grad_scale = torch.clamp((total + 1e-6) / max_norm, min=1.0)
        return total

    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for index, group in enumerate(self.param_groups):
            parameters = [p for p in group["params"] if p.grad is not None]
            if not parameters:
                continue
            if self.multi_tensor:
                self._multi_tensor_step(parameters, group)
                continue
            device = parameters[0].device
            learning_rate, scale = self._learning_rate(index, group, device), self._scale(device)
            beta1, beta2 = group["betas"]
            for parameter in parameters:
                state = self.state[parameter]
                # The weight as a plain tensor on the parameter's storage: torch.compile keeps the shapes
                # of nn.Parameter inputs static, which would compile a graph per parameter shape.
                self.update(
                    state["master"],
                    parameter.grad,
                    state["exp_avg"],
                    state["exp_avg_sq"],
                    parameter.detach(),
                    state["step"],
                    learning_rate,
                    scale,
                    beta1,
                    beta2,
                    group["eps"],
                    group["weight_decay"],
                )
        self.grad_scale = None
        return loss

    def _multi_tensor_step(self, parameters: list[torch.nn.Parameter], group: dict[str, Any]) -> None:
        """One group's update in a few launches: the gradients as one fp32 buffer, torch's fused AdamW
        over the lists (its ``grad_scale`` divides each gradient by the clip's scale as it is read),
        then the masters copied into the bf16 weights by one multi-tensor copy."""
        states = [self.state[parameter] for parameter in parameters]
        gradients = [parameter.grad for parameter in parameters if parameter.grad is not None]  # all of them (`step`)
        flat = torch.cat([gradient.reshape(-1) for gradient in gradients]).float()
        gradients32 = [
            part.view_as(gradient) for part, gradient in zip(flat.split([g.numel() for g in gradients]), gradients)
        ]
        masters = [state["master"] for state in states]
        steps = [state["step"] for state in states]
        torch._foreach_add_(steps, 1)
        beta1, beta2 = group["betas"]
        torch._fused_adamw_(
            masters,
            gradients32,
            [state["exp_avg"] for state in states],
            [state["exp_avg_sq"] for state in states],
            [],
            steps,
            lr=float(group["lr"]),
            beta1=beta1,
            beta2=beta2,
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            amsgrad=False,
            maximize=False,
            grad_scale=self.grad_scale,
            found_inf=None,
        )
        torch._foreach_copy_([parameter.detach() for parameter in parameters], masters)

    def _learning_rate(self, index: int, group: dict[str, Any], device: torch.device) -> torch.Tensor:
        """The group's learning rate as a device tensor, refilled each step from the scheduler's float:
        a float would be baked into the compiled graph and recompile it whenever the schedule moves."""
        rate = self._learning_rates.get(index)
        if rate is None:
            rate = self._learning_rates[index] = torch.empty((), dtype=torch.float32, device=device)
        return rate.fill_(group["lr"])

    def _scale(self, device: torch.device) -> torch.Tensor:
        """The clip's gradient scale of this step; 1 when `clip_gradients` was not called."""
        if self.grad_scale is not None:
            return self.grad_scale
        if self._unit_scale is None:
            self._unit_scale = torch.ones((), dtype=torch.float32, device=device)
        return self._unit_scale

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """The saved masters, moments and steps copied into this optimizer's fp32 tensors, the groups'
        hyperparameters restored, and the bf16 parameters set from the masters."""
        saved_groups = state_dict["param_groups"]
        if [len(g["params"]) for g in saved_groups] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError("the saved optimizer state does not match this optimizer's parameter groups")
        with torch.no_grad():
            for group, saved_group in zip(self.param_groups, saved_groups):
                for parameter, saved_index in zip(group["params"], saved_group["params"]):
                    saved = state_dict["state"][saved_index]
                    for key in STATE_KEYS:
                        self.state[parameter][key].copy_(saved[key])
                    parameter.copy_(self.state[parameter]["master"])
                group.update({key: value for key, value in saved_group.items() if key != "params"})
