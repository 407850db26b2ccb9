"""Where a training step's time goes: a `TrainerCallback` that times a window of steps (the card's clock,
power and temperature read through NVML meanwhile), then profiles the steps after it: device time by kernel
category under torch.profiler, one step in CUDA's sync debug mode (which names every host-device
synchronisation), and the training thread's Python functions under cProfile."""

from __future__ import annotations

import cProfile
import gzip
import pstats
import shutil
import statistics
import threading
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

KERNEL_CATEGORIES = [  # first match wins; kernel names lower-cased
    ("attention", ("flash", "fmha", "attention", "sdpa", "cudnn")),
    ("gemm", ("triton_tem", "gemm", "nvjet", "xmma", "cutlass", "splitk")),
    ("optimizer", ("adam", "multi_tensor", "foreach", "norm_kernel", "clip")),
    ("inductor (triton)", ("triton",)),
    ("copy / fill", ("memcpy", "memset", "copy", "fill", "cast")),
    ("nccl", ("nccl",)),
]


def kernel_category(name: str) -> str:
    lowered = name.lower()
    return next((category for category, keys in KERNEL_CATEGORIES if any(k in lowered for k in keys)), "other")


def profile_summary(profiler: torch.profiler.profile, steps: int, wall_s: float) -> dict[str, Any]:
    """Device time per step by kernel category, the 25 kernels that take the most, and the 25 host
    operations that take the most CPU time of their own."""
    from torch.autograd import DeviceType

    per_kernel = []
    for event in profiler.key_averages():
        if event.device_type != (DeviceType.CUDA if torch.cuda.is_available() else DeviceType.CPU):
            continue  # on the CPU (the smoke test) the CPU operators stand in for kernels
        if getattr(event, "is_user_annotation", False) or "#" in event.key:
            continue  # ranges such as Optimizer.step#AdamW.step span kernels already counted
        total_us = getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0)
        per_kernel.append((event.key, total_us / 1e3 / steps, event.count / steps))
    categories: dict[str, float] = {}
    for name, ms, _ in per_kernel:
        categories[kernel_category(name)] = categories.get(kernel_category(name), 0.0) + ms
    per_kernel.sort(key=lambda item: -item[1])
    # the host's side: operators and runtime calls (cudaLaunchKernel...) by their own CPU time, every thread
    host = sorted(
        (
            (event.key, event.self_cpu_time_total / 1e3 / steps, event.count / steps)
            for event in profiler.key_averages()
            if event.device_type == DeviceType.CPU and event.self_cpu_time_total > 0
        ),
        key=lambda item: -item[1],
    )
    return {
        "profiled_steps": steps,
        "wall_ms_per_step": round(wall_s * 1e3 / steps, 2),
        "kernel_ms_per_step": round(sum(ms for _, ms, _ in per_kernel), 2),
        "category_ms_per_step": {k: round(v, 2) for k, v in sorted(categories.items(), key=lambda kv: -kv[1])},
        "top_kernels": [[name[:160], round(ms, 3), round(count, 1)] for name, ms, count in per_kernel[:25]],
        "host_self_ms_per_step": round(sum(ms for _, ms, _ in host), 2),
        "top_host_operations": [[name[:160], round(ms, 3), round(count, 1)] for name, ms, count in host[:25]],
    }


def host_profile_summary(profiler: cProfile.Profile, steps: int, wall_s: float) -> dict[str, Any]:
    """The 30 functions of the training thread with the most time of their own, and the 30 with the most in
    all (callees included), per step, under cProfile (which slows Python down: compare the shares, not the
    times, with unprofiled steps)."""
    stats = pstats.Stats(profiler)

    def rows(key: int) -> list:
        ranked = sorted(stats.stats.items(), key=lambda item: -item[1][key])[:30]
        return [
            [
                f"{Path(file).name}:{line} {function}"[:120],
                round(own * 1e3 / steps, 2),
                round(total * 1e3 / steps, 2),
                round(calls / steps, 1),
            ]
            for (file, line, function), (_, calls, own, total, _) in ranked
        ]

    return {
        "host_profiled_steps": steps,
        "wall_ms_per_step": round(wall_s * 1e3 / steps, 2),
        "columns": ["function", "own ms/step", "total ms/step", "calls/step"],
        "by_own_time": rows(2),
        "by_total_time": rows(3),
    }


def write_trace(profiler: torch.profiler.profile, path: Path) -> str:
    """The profile as a gzipped Chrome trace at ``path`` + ".gz"; returns its file name."""
    profiler.export_chrome_trace(str(path))
    with open(path, "rb") as source, gzip.open(f"{path}.gz", "wb") as target:
        shutil.copyfileobj(source, target)
    path.unlink()
    return f"{path.name}.gz"


class CardMonitor:
    """The card's SM clock, power and temperature, sampled through NVML every 50 ms while running.

    A card at its power limit lowers its clocks: these readings say whether two timings ran at the same
    clocks. Empty where NVML (nvidia-ml-py) or a GPU is missing.
    """

    def __init__(self, index: int):
        self.samples: list[tuple[float, float, float]] = []
        self.reasons = 0
        self.stop: threading.Event | None = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml, self.handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(index)
        except Exception:  # no NVML here (the CPU smoke test): no readings
            self.nvml = None

    def start(self) -> None:
        if self.nvml is None:
            return
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        nvml, handle = self.nvml, self.handle
        while not self.stop.wait(0.05):
            self.samples.append(
                (
                    nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM),
                    nvml.nvmlDeviceGetPowerUsage(handle) / 1e3,
                    nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU),
                )
            )
            self.reasons |= nvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle)

    def finish(self) -> dict[str, Any]:
        if self.stop is None:
            return {}
        self.stop.set()
        self.thread.join()
        if not self.samples:
            return {}
        clocks, watts, temperatures = zip(*self.samples)
        return {
            "sm_clock_mhz_mean": round(statistics.mean(clocks)),
            "sm_clock_mhz_min": min(clocks),
            "power_w_mean": round(statistics.mean(watts)),
            "power_w_max": round(max(watts)),
            "power_limit_w": round(self.nvml.nvmlDeviceGetEnforcedPowerLimit(self.handle) / 1e3),
            "temperature_c_max": max(temperatures),
            "clock_event_reasons": hex(self.reasons),
        }


class StepTimer(TrainerCallback):
    """Wall time from the end of optimizer step ``warmup`` to the end of step ``warmup + steps``, the device
    synchronised at both ends only; then ``profile_steps`` steps under torch.profiler (written as a Chrome
    trace to ``trace`` when given) and one in CUDA's sync debug mode; then ``host_profile_steps`` under
    cProfile (the training thread only: the backward's host work runs on autograd's thread)."""

    def __init__(
        self, warmup: int, steps: int, profile_steps: int = 0, host_profile_steps: int = 0, trace: Path | None = None
    ):
        self.warmup, self.steps = warmup, steps
        self.profile_steps, self.host_profile_steps, self.trace = profile_steps, host_profile_steps, trace
        self.on_gpu = torch.cuda.is_available()
        self.marks: dict[int, float] = {}
        self.host_step_ends: list[float] = []  # the host's end of each step up to the window's last
        self.card = CardMonitor(torch.cuda.current_device() if self.on_gpu else 0)
        self.card_readings: dict[str, Any] = {}
        self.profile: dict[str, Any] = {}
        self.host_profile: dict[str, Any] = {}

    def window_seconds(self) -> float:
        return self.marks[self.warmup + self.steps] - self.marks[self.warmup]

    def host_step_seconds(self) -> list[float]:
        """The host's time of each timed step."""
        ends = self.host_step_ends[max(self.warmup - 1, 0) :]
        return [b - a for a, b in zip(ends, ends[1:])]

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        self.train_begin = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs) -> None:
        step, last = state.global_step, self.warmup + self.steps
        if step in (1, self.warmup, last):
            if self.on_gpu:
                torch.cuda.synchronize()
            self.marks[step] = time.perf_counter()
        if step == self.warmup:
            self.card.start()
        elif step == last:
            self.card_readings = self.card.finish()
        if step <= last:
            self.host_step_ends.append(time.perf_counter())
        if self.profile_steps:
            try:
                self._profile(step - last)
            except Exception as error:  # a profiling failure must not lose the measurement
                self.profile = {"failed": f"{type(error).__name__}: {error}"}
                self.profile_steps = 0
        if self.host_profile_steps:
            self._host_profile(step - last - (self.profile_steps + 1 if self.profile_steps else 0))

    def _profile(self, after: int) -> None:
        """``after`` steps after the window: the profiler from 0 to ``profile_steps``, then sync debug mode."""
        if after == 0:
            activities = [torch.profiler.ProfilerActivity.CPU]
            activities += [torch.profiler.ProfilerActivity.CUDA] if self.on_gpu else []
            self.profiler = torch.profiler.profile(activities=activities)
            self.profiler.__enter__()
            self.profile_start = time.perf_counter()
        elif after == self.profile_steps:
            if self.on_gpu:
                torch.cuda.synchronize()
            wall = time.perf_counter() - self.profile_start
            self.profiler.__exit__(None, None, None)
            self.profile = profile_summary(self.profiler, self.profile_steps, wall)
            if self.trace:
                self.profile["trace"] = write_trace(self.profiler, self.trace)
            self.sync_warnings = warnings.catch_warnings()
            self.sync_warnings.__enter__()
            warnings.simplefilter("always")
            self.sync_places: list[str] = []
            warnings.showwarning = self._record_sync
            if self.on_gpu:
                torch.cuda.set_sync_debug_mode("warn")
        elif after == self.profile_steps + 1:
            if self.on_gpu:
                torch.cuda.set_sync_debug_mode("default")
            self.sync_warnings.__exit__(None, None, None)
            self.profile["syncs_in_one_step"] = len(self.sync_places)
            self.profile["sync_places"] = sorted(set(self.sync_places))

    def _record_sync(self, message, category, filename, lineno, file=None, line=None) -> None:
        """Where a synchronising operation was called from: the innermost Python frames."""
        if "synchroniz" in str(message):
            try:
                frames = traceback.extract_stack()[:-1][-4:]
                self.sync_places.append(
                    " < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames))
                )
            except Exception:  # never break the step being checked
                self.sync_places.append(f"{Path(filename).name}:{lineno}")

    def _host_profile(self, after: int) -> None:
        if after == 0:
            self.host_profiler = cProfile.Profile()
            self.host_profile_start = time.perf_counter()
            self.host_profiler.enable()
        elif after == self.host_profile_steps:
            self.host_profiler.disable()
            wall = time.perf_counter() - self.host_profile_start
            self.host_profile = host_profile_summary(self.host_profiler, self.host_profile_steps, wall)
