"""Micro-benchmarks of single kernels on the GPU, timed with CUDA events: the card's bf16 matmul rate (the
peak the training throughput is divided by), and the attention kernels and the projections' GEMMs at a
model's shapes."""

from __future__ import annotations

import contextlib

import torch
from torch.nn import functional as F

from benchmarks.records import Recorder


def matmul(recorder: Recorder, n: int = 8192) -> list[float]:
    """bf16 ``n``³ matmuls on random data on every visible GPU; records each GPU's median and best rate and
    returns the best rates (TFLOP/s)."""
    best = []
    for index in range(torch.cuda.device_count()):
        device = torch.device("cuda", index)
        with torch.cuda.device(device):
            inputs = [
                (
                    torch.randn(n, n, device=device, dtype=torch.bfloat16),
                    torch.randn(n, n, device=device, dtype=torch.bfloat16),
                )
                for _ in range(3)
            ]
            out = torch.empty(n, n, device=device, dtype=torch.bfloat16)
            # Short warm-up (cuBLAS handle, clocks up): two seconds of back-to-back products were seen
            # to read 18% lower (power-limited) than the model's own GEMMs ran in training.
            for a, b in inputs * 3:
                torch.matmul(a, b, out=out)
            rates = []
            for _ in range(9):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for a, b in inputs * 4:
                    torch.matmul(a, b, out=out)
                end.record()
                end.synchronize()
                rates.append(2 * n**3 * 12 / (start.elapsed_time(end) / 1e3) / 1e12)
            rates.sort()
            assert torch.isfinite(out.float().sum()).item()
            recorder.log(
                f"matmul gpu {index}",
                {"n": n, "gpu_index": index},
                {"tflops_median": round(rates[len(rates) // 2], 1), "tflops_max": round(rates[-1], 1)},
                {"device_name": torch.cuda.get_device_name(index)},
            )
            best.append(round(rates[-1], 1))
            del inputs, out
            torch.cuda.empty_cache()
    return best


def attention(recorder: Recorder, batch: int, heads: int, seq: int, head: int) -> None:
    """SDPA forward + backward per backend, with no mask and with the additive (batch, 1, seq, seq) mask a
    model passes when a batch has padding, with and without dropout; then the projections' GEMMs (query, key
    and value; the feed-forward's up and down). A case its backend refuses is recorded as failed."""
    hidden = heads * head

    def time_ms(function, repeats: int = 10) -> float:
        for _ in range(3):
            function()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            function()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / repeats

    def make(shape):
        return torch.randn(*shape, device="cuda", dtype=torch.bfloat16, requires_grad=True)

    query, key, value = (make((batch, heads, seq, head)) for _ in range(3))
    grad = torch.randn(batch, heads, seq, head, device="cuda", dtype=torch.bfloat16)
    masks = {"none": None, "additive": torch.zeros(batch, 1, seq, seq, device="cuda", dtype=torch.bfloat16)}
    backends = {
        "default": None,
        "flash": torch.nn.attention.SDPBackend.FLASH_ATTENTION,
        "cudnn": torch.nn.attention.SDPBackend.CUDNN_ATTENTION,
        "efficient": torch.nn.attention.SDPBackend.EFFICIENT_ATTENTION,
    }
    shape = {"batch": batch, "heads": heads, "seq_len": seq, "head_size": head}
    forward_flop = 4 * batch * heads * seq * seq * head
    for dropout in (0.1, 0.0):
        for mask_name, mask in masks.items():
            for backend_name, backend in backends.items():

                def step(mask=mask, dropout=dropout):
                    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout)
                    out.backward(grad)

                case = {"backend": backend_name, "mask": mask_name, "dropout": dropout}
                name = f"sdpa {backend_name} mask={mask_name} dropout={dropout}"
                try:
                    with torch.nn.attention.sdpa_kernel(backend) if backend else contextlib.nullcontext():
                        ms = time_ms(step)
                    recorder.log(name, {**shape, **case}, {"fwd_bwd_ms": ms, "tflops": 3 * forward_flop / ms / 1e9})
                except RuntimeError as error:
                    recorder.log(name, {**shape, **case}, {}, {"failed": str(error).splitlines()[0][:200]})
                query.grad = key.grad = value.grad = None

    tokens = batch * seq
    inputs = torch.randn(tokens, hidden, device="cuda", dtype=torch.bfloat16)
    weights = [torch.randn(hidden, hidden, device="cuda", dtype=torch.bfloat16) for _ in range(3)]
    up = torch.randn(4 * hidden, hidden, device="cuda", dtype=torch.bfloat16)
    wide = torch.randn(tokens, 4 * hidden, device="cuda", dtype=torch.bfloat16)
    down = torch.randn(hidden, 4 * hidden, device="cuda", dtype=torch.bfloat16)
    cases = {
        "query, key, value (h -> h, three)": (lambda: [inputs @ w.T for w in weights], 6 * tokens * hidden * hidden),
        "ffn up (h -> 4h)": (lambda: inputs @ up.T, 8 * tokens * hidden * hidden),
        "ffn down (4h -> h)": (lambda: wide @ down.T, 8 * tokens * hidden * hidden),
    }
    for case, (function, flop) in cases.items():
        ms = time_ms(function, repeats=20)
        recorder.log(f"gemm {case}", shape, {"ms": ms, "tflops": flop / ms / 1e9})
