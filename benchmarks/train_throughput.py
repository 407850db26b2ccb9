"""Training and prediction throughput of the project's fine-tuning path on the GPU.

Runs `finetune.trainer.build_trainer` + `Trainer.train()` (the code path of `kedro run --pipelines=train
--env erlangshen`) on random CJK texts that fill 512 tokens, with Erlangshen-MegatronBert-1.3B built with
random weights from its real config.json (`benchmarks/erlangshen_config.json`), or the encoder a training
path names (`benchmarks.parameters.PATHS`: winning_recipe, default, default_zero2, bert_large_hf_default,
bert_large). Random weights cost exactly what pretrained ones do.

Each configuration runs in its own process (fresh CUDA context, compile state and peak memory), one after
another; NAME@N runs under torchrun on N GPUs. `matmul` measures the card's bf16 matmul rate, which the
later configurations' TFLOP/s are divided by; `attention` times the attention kernels and the projections'
GEMMs at the model's shapes. Each result is a record (`benchmarks.records`) of the experiment
`benchmarks.train_throughput`; a table is printed last.

    python -m benchmarks.train_throughput --configs matmul,winning_recipe,default --out results.jsonl
    python -m benchmarks.train_throughput --configs matmul,bert_large_hf_default,bert_large --infer 1024
    python -m benchmarks.train_throughput --configs attention --attention-heads 16 --head-size 64
    python -m benchmarks.train_throughput --configs matmul,default_zero2,default_zero2@2
    python -m benchmarks.train_throughput --tiny --configs default --warmup 1 --steps 2   # CPU smoke

FLOPs: a 512-token training sample costs 6 * N_nonembedding * 512 + 3 * (4 * 512^2 * hidden * layers) =
3.88 TFLOP for the 1.3B model (attention's QK^T and PV: 4*s^2*h per layer forward, x3 with the backward);
a prediction a third of that. With `--profile-steps N`, N more steps run under torch.profiler after the
timed ones, then one in CUDA's sync debug mode (`benchmarks.profiling`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.parameters import PATHS, TINY_MODEL, path_parameters
from benchmarks.records import Recorder, command_line, log_to_mlflow, read_records
from benchmarks.texts import ALPHABET, synthetic_texts

MODULE = EXPERIMENT = "benchmarks.train_throughput"
MICRO_BENCHMARKS = ("matmul", "attention")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--configs",
        default="matmul,winning_recipe,default",
        help="comma-separated: " + ", ".join([*MICRO_BENCHMARKS, *PATHS]) + "; NAME@N runs on N GPUs",
    )
    parser.add_argument("--warmup", type=int, default=8, help="untimed optimizer steps (compilation happens here)")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps")
    parser.add_argument("--batch", type=int, default=32, help="per-device train batch")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--attention-heads", type=int, default=8, help="`attention`: heads (BERT-large: 16)")
    parser.add_argument("--head-size", type=int, default=256, help="`attention`: head size (BERT-large: 64)")
    parser.add_argument("--infer", type=int, default=0, help="after training, time predictions of this many texts")
    parser.add_argument("--infer-batch", type=int, default=None, help="per-device eval batch (default: the conf's)")
    parser.add_argument("--out", help="records appended here (default: records.jsonl in --workdir, emptied first)")
    parser.add_argument("--workdir", default="/tmp/throughput_work")
    parser.add_argument(
        "--deadline", type=float, default=0, help="seconds after which no configuration starts and a running one stops"
    )
    parser.add_argument("--tiny", action="store_true", help="a tiny model, to test this script on the CPU")
    parser.add_argument("--init-device", default="auto", help="where the random weights are drawn (auto: cuda)")
    parser.add_argument("--peak-tflops", type=float, default=0, help="bf16 matmul TFLOP/s (default: `matmul`'s)")
    parser.add_argument("--profile-steps", type=int, default=0, help="profile this many steps after the timed ones")
    parser.add_argument("--host-profile-steps", type=int, default=0, help="then this many under cProfile")
    parser.add_argument("--trace", default="", help="configurations whose profile is written as a Chrome trace")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # one configuration, in this process
    parser.add_argument("--command", help=argparse.SUPPRESS)  # the driver's command line, for the records
    return parser.parse_args(argv)


def make_job(name: str, args: argparse.Namespace, world_size: int):
    """A fold job of random texts, enough for every step, on training path ``name``."""
    from sentence_reduction.finetune.job import FoldJob
    from sentence_reduction.finetune.text import build_character_vocabulary, build_tokenizer

    model, training = path_parameters(name)
    model.update(max_length=args.max_length, vocabulary_min_frequency=1)
    if args.tiny:
        model["config_overrides"] = dict(model.get("config_overrides") or {}, **TINY_MODEL)
    # One untimed step at least after the window: the last step of `train()` takes longer on most paths.
    total_steps = args.warmup + args.steps + args.profile_steps + args.host_profile_steps + 1
    training["arguments"].update(
        max_steps=total_steps,
        per_device_train_batch_size=args.batch,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        logging_steps=total_steps,  # one log line, at the end
    )
    if args.infer_batch:
        training["arguments"]["per_device_eval_batch_size"] = args.infer_batch
    if args.tiny:
        training["arguments"]["dataloader_num_workers"] = 0
    characters = args.max_length + 64  # one token per character: cut to max_length
    train_texts = synthetic_texts(args.batch * world_size * total_steps, characters, seed=1)
    eval_texts = synthetic_texts(8, characters, seed=3)
    rng = random.Random(4)
    return FoldJob(
        name=f"throughput-{name}",
        train_texts=train_texts,
        train_labels=[rng.randrange(34) for _ in train_texts],
        eval_texts=eval_texts,
        eval_labels=[rng.randrange(34) for _ in eval_texts],
        predict_texts=synthetic_texts(max(args.infer, 1), characters, seed=2),
        # every text draws from ALPHABET: one text of all of it gives their vocabulary, in milliseconds
        tokenizer=build_tokenizer(build_character_vocabulary(["".join(ALPHABET)])),
        class_months=list(range(34)),
        model=model,
        training=training,
    )


def flops_per_sample(model, seq_len: int) -> dict[str, int]:
    """Training and prediction FLOPs of one sample of ``seq_len`` tokens (matmuls only)."""
    config = model.config
    non_embedding = sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)
    attention_forward = 4 * seq_len * seq_len * config.hidden_size * config.num_hidden_layers
    return {
        "params_non_embedding": non_embedding,
        "train_flop_per_sample": 6 * non_embedding * seq_len + 3 * attention_forward,
        "infer_flop_per_sample": 2 * non_embedding * seq_len + attention_forward,
    }


def train_worker(name: str, args: argparse.Namespace, recorder: Recorder) -> None:
    import torch

    from benchmarks.profiling import StepTimer
    from sentence_reduction.finetune.arguments import compiled_region, effective_arguments
    from sentence_reduction.finetune.trainer import build_trainer

    world_size, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    on_gpu = torch.cuda.is_available()
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if on_gpu else "cpu")
    if on_gpu:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    spec = name if world_size == 1 else f"{name}@{world_size}"
    started = time.perf_counter()
    job = make_job(name, args, world_size)
    init_device = args.init_device if args.init_device != "auto" else ("cuda" if on_gpu else "cpu")
    with torch.device(init_device):  # where the random initial weights are drawn; speeds start-up only
        trainer = build_trainer(job, Path(args.workdir) / name)
    trace = Path(args.out).with_name(f"trace_{name}.json") if name in args.trace.split(",") else None
    timer = StepTimer(args.warmup, args.steps, args.profile_steps, args.host_profile_steps, trace)
    trainer.add_callback(timer)
    if on_gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    built = time.perf_counter()
    trainer.train()
    if on_gpu:
        torch.cuda.synchronize()
    trained = time.perf_counter()
    if rank != 0:
        return
    flops = flops_per_sample(trainer.model, args.max_length)
    samples_per_s = args.batch * world_size * args.steps / timer.window_seconds()
    tflops_per_gpu = samples_per_s * flops["train_flop_per_sample"] / world_size / 1e12
    host_steps = timer.host_step_seconds()
    used, card = trainer.args, dict(timer.card_readings)
    metrics = {
        "samples_per_s": samples_per_s,
        "step_s": timer.window_seconds() / args.steps,
        "host_step_s_median": sorted(host_steps)[len(host_steps) // 2] if host_steps else None,
        "tflops_per_gpu": tflops_per_gpu,
        "peak_bf16_matmul_tflops": args.peak_tflops or None,
        "share_of_peak": tflops_per_gpu / args.peak_tflops if args.peak_tflops else None,
        "tflop_per_sample": flops["train_flop_per_sample"] / 1e12,
        "params_non_embedding": flops["params_non_embedding"],
        "first_step_s": timer.marks[1] - timer.train_begin if 1 in timer.marks else None,
        "warmup_s": timer.marks[args.warmup] - timer.train_begin,
        "build_s": built - started,
        "train_s": trained - built,
        **{key: value for key, value in card.items() if key != "clock_event_reasons"},
        **(memory_gib() if on_gpu else {}),
    }
    model, training = job.model, job.training
    params = {
        "config": spec,
        "world_size": world_size,
        "batch_per_device": args.batch,
        "seq_len": args.max_length,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "tiny": args.tiny,
        "architecture": trainer.model.config.model_type,
        "attention": trainer.model.config._attn_implementation,
        "attention_dropout": getattr(trainer.model.config, "attention_probs_dropout_prob", None),
        "fused_attention": model.fused_attention,
        "unpadded_without_mask": model.unpadded_without_mask,
        "residual_in_autocast_dtype": model.residual_in_autocast_dtype,
        "dropout_masks_from_aten": model.dropout_masks_from_aten,
        "clip_in_fused_optimizer": trainer._fused_adam_to_clip_in() is not None,
        "bf16_master_weights": training.bf16_master_weights,
        "master_weight_update": training.master_weight_update,
        "inductor_config": training.inductor_config,
        "torch_compile": bool(used.torch_compile),
        "compiled_region": compiled_region(training, on_gpu=on_gpu),
        "torch_compile_mode": effective_arguments(training, on_gpu).get("torch_compile_mode"),
        "logging_nan_inf_filter": used.logging_nan_inf_filter,
        "non_blocking": bool(getattr(used.accelerator_config, "non_blocking", False)),
        "optim": str(getattr(used.optim, "value", used.optim)),
        "bf16": bool(used.bf16),
        "tf32": used.tf32,
        "deepspeed": Path(used.deepspeed).name if isinstance(used.deepspeed, str) else None,
        "param_dtype": str(next(trainer.model.parameters()).dtype),
    }
    tags = {"host_steps_s": [round(seconds, 4) for seconds in host_steps], **card}
    recorder.log(spec, params, metrics, tags)
    for kind, summary in (("profile", timer.profile), ("host_profile", timer.host_profile)):
        if summary:
            numbers = {key: value for key, value in summary.items() if isinstance(value, (int, float))}
            numbers.update({f"ms_per_step.{k}": v for k, v in summary.get("category_ms_per_step", {}).items()})
            texts = {key: value for key, value in summary.items() if not isinstance(value, (int, float, dict))}
            recorder.log(f"{spec}+{kind}", {"config": spec}, numbers, texts)
    if args.infer and world_size == 1:
        try:
            predict(spec, job, trainer, flops, args, recorder, bool(PATHS[name].get("predict_with_trainer")))
        except ValueError as error:
            # After a DeepSpeed run, the prediction's Trainer inherits the process-wide accelerate state
            # (the DeepSpeed plugin) and refuses ZeRO-1/2 inference (docs/performance.md).
            recorder.log(f"{spec}+predict", {"config": spec}, {}, {"failed": f"{type(error).__name__}: {error}"})


def memory_gib() -> dict[str, float]:
    import torch

    return {
        "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
        "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30,
    }


def predict(spec: str, job, trainer, flops: dict, args: argparse.Namespace, recorder: Recorder, with_trainer: bool):
    """Test-set prediction as the predict pipeline makes it (`predictor.predict_probabilities` on the trained,
    uncompiled module), or ``with_trainer``: the Trainer's own `predict` (the HF default path)."""
    import torch

    from sentence_reduction.finetune.predictor import predict_probabilities
    from sentence_reduction.finetune.text import TokenisedTexts
    from sentence_reduction.scoring import softmax

    model = trainer.model
    if getattr(model, "_compiled_call_impl", None) is not None:  # DeepSpeed compiles in place
        model._compiled_call_impl = None
    model.eval()

    def probabilities(texts):
        if with_trainer:
            dataset = TokenisedTexts(trainer.processing_class, texts, job.model.max_length)
            return softmax(trainer.predict(dataset).predictions)
        return predict_probabilities(model, job.load_tokenizer(), texts, job.model, job.training)

    probabilities(job.predict_texts[:256])  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    predicted = probabilities(job.predict_texts)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    assert predicted.shape == (len(job.predict_texts), 34) and (abs(predicted.sum(1) - 1) < 1e-3).all()
    samples_per_s = len(job.predict_texts) / seconds
    tflops = samples_per_s * flops["infer_flop_per_sample"] / 1e12
    params = {
        "config": spec,
        "texts": len(job.predict_texts),
        "eval_batch": job.training.arguments.get("per_device_eval_batch_size"),
        "with_trainer": with_trainer,
        "param_dtype": str(next(model.parameters()).dtype),
    }
    metrics = {
        "samples_per_s": samples_per_s,
        "tflops_per_gpu": tflops,
        "share_of_peak": tflops / args.peak_tflops if args.peak_tflops else None,
        "tflop_per_sample": flops["infer_flop_per_sample"] / 1e12,
        "seconds": seconds,
        **(memory_gib() if torch.cuda.is_available() else {}),
    }
    recorder.log(f"{spec}+predict", params, metrics)


def run_driver(args: argparse.Namespace, argv: list[str]) -> None:
    """Each configuration in a process of its own; then the call's records into MLflow and a table."""
    started = time.perf_counter()
    out = Path(args.out or Path(args.workdir) / "records.jsonl")
    if not args.out:
        out.unlink(missing_ok=True)
    earlier = len(read_records(out)) if out.is_file() else 0  # records of earlier calls in the same file
    recorder = Recorder(EXPERIMENT, args.command, out, to_mlflow=False)
    specs = [spec for spec in args.configs.split(",") if spec]
    for spec in specs:
        if spec.partition("@")[0] not in (*MICRO_BENCHMARKS, *PATHS):
            raise SystemExit(f"--configs: unknown configuration {spec.partition('@')[0]!r}")
    for spec in specs:
        name, _, gpus = spec.partition("@")
        remaining = args.deadline - (time.perf_counter() - started) if args.deadline else None
        if remaining is not None and remaining < 30:
            recorder.log(spec, {"config": spec}, {}, {"skipped": "deadline"})
            continue
        worker = ["-m", MODULE, *argv, f"--worker={name}", f"--out={out}", f"--peak-tflops={args.peak_tflops}"]
        worker += [f"--command={args.command}"]
        launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}"] if gpus else []
        command = [sys.executable, *launcher, *worker]
        print(f"=== {spec}: {' '.join(command)}", flush=True)
        began = time.perf_counter()
        process = subprocess.Popen(command, start_new_session=True)
        try:
            code = process.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            code = "killed at deadline"
        print(f"=== {spec}: exit {code} after {time.perf_counter() - began:.0f} s", flush=True)
        if code != 0:
            recorder.log(spec, {"config": spec}, {}, {"failed": str(code)})
        if name == "matmul" and not args.peak_tflops:
            matmuls = [r for r in call_records(out, earlier) if r["run_name"].startswith("matmul")]
            args.peak_tflops = min((r["metrics"]["tflops_max"] for r in matmuls), default=0.0)  # the slowest GPU's
    written = call_records(out, earlier)
    log_to_mlflow(written)
    print_table(written)


def call_records(out: Path, earlier: int) -> list[dict[str, Any]]:
    return read_records(out)[earlier:] if out.is_file() else []


def print_table(records: list[dict[str, Any]]) -> None:
    print("\n| config | card | samples/s | TFLOP/s per GPU | share of peak | peak GiB | first step s | SM MHz, W |")
    print("|---|---|---|---|---|---|---|---|")
    for written in records:
        name, metrics, tags = written["run_name"], written["metrics"], written["tags"]
        if name.startswith("matmul"):
            row = ["", metrics["tflops_median"], "1", "", "", ""]
        elif "samples_per_s" in metrics:
            row = [metrics["samples_per_s"], metrics["tflops_per_gpu"], metrics.get("share_of_peak")]
            row += [metrics.get("peak_allocated_gib"), metrics.get("first_step_s")]
            row += [f"{metrics.get('sm_clock_mhz_mean', '')} {metrics.get('power_w_mean', '')}"]
        elif name.endswith("+profile"):
            kernels = {key: value for key, value in metrics.items() if key.startswith("ms_per_step.")}
            row = [f"ms/step: wall {metrics.get('wall_ms_per_step')}, kernels {metrics.get('kernel_ms_per_step')}"]
            row += [json.dumps(kernels), f"syncs {metrics.get('syncs_in_one_step')}", "", "", ""]
        else:
            row = [tags.get("failed") or tags.get("skipped") or json.dumps(metrics), "", "", "", "", ""]
        cells = [round(cell, 3) if isinstance(cell, float) else cell for cell in row]
        print(f"| {name} | {tags['card']} | " + " | ".join("" if cell is None else str(cell) for cell in cells) + " |")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    args.command = args.command or command_line(MODULE, argv)
    if not args.worker:
        run_driver(args, argv)
        return
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", "/tmp/ext")
    recorder = Recorder(EXPERIMENT, args.command, args.out, to_mlflow=False)  # the driver logs the call's records
    if args.worker == "matmul":
        from benchmarks import kernels

        kernels.matmul(recorder, n=1024 if args.tiny else 8192)
    elif args.worker == "attention":
        from benchmarks import kernels

        shape = (2, 2, 64, 32) if args.tiny else (args.batch, args.attention_heads, args.max_length, args.head_size)
        kernels.attention(recorder, *shape)
    else:
        train_worker(args.worker, args, recorder)


if __name__ == "__main__":
    main()
