"""Training and inference throughput of the project's own fine-tuning path on GPU.

Runs `sentence_reduction.finetune.trainer.build_trainer` + `Trainer.train()` (the code path of
`kedro run --pipelines=train --env erlangshen`) on synthetic data: texts of random CJK characters
long enough to fill 512 tokens, a character vocabulary built from them with
`text.build_character_vocabulary`, and Erlangshen-MegatronBert-1.3B built with random weights from
its real config.json (`benchmarks/erlangshen_config.json`, via `model.config_path`), or another
encoder of `ENCODERS` from its config. Random weights cost exactly what the pretrained ones do.

Each configuration runs in its own process (fresh CUDA context, DeepSpeed and compile state, peak
memory), one after another; a configuration name ending in `@N` runs under
`torchrun --nproc_per_node N`. Results are JSON lines on stdout (prefixed `RESULT `) and appended
to `--out`; a table is printed last.

    # one GPU: the bf16 matmul peak, the baseline, the project's path (with a kernel profile and
    # a Chrome trace), inference
    python benchmarks/train_throughput.py --configs matmul,winning_recipe,default --profile-steps 3 \
        --trace default --infer 1024 --out results.jsonl
    # a BERT-large-shaped encoder on the HF Trainer's default path and on the project's
    python benchmarks/train_throughput.py --configs matmul,bert_large_hf_default,bert_large --infer 1024
    # the attention backends and projection GEMMs at the model's shapes (and at BERT-large's)
    python benchmarks/train_throughput.py --configs attention --out results.jsonl
    python benchmarks/train_throughput.py --configs attention --attention-heads 16 --head-size 64
    # 1 GPU vs 2 GPUs with ZeRO-2
    python benchmarks/train_throughput.py --configs matmul,default_zero2,default_zero2@2
    # CPU smoke test of the script itself (tiny model, few steps)
    python benchmarks/train_throughput.py --tiny --configs winning_recipe,default,bert_large --warmup 1 --steps 2

FLOPs: a 512-token training sample costs 6 * N_nonembedding * 512 + 3 * (4 * 512^2 * hidden *
layers) = 3.88 TFLOP for this model (N_nonembedding = 1.2129e9 counted from the built model;
attention matmuls QK^T and PV: 4*s^2*h per layer forward, x3 for backward); inference is a third
of that. Achieved TFLOP/s are divided by the best bf16 matmul rate (8192^3, random data) measured
in the same call (`matmul`, written to the results file first).

With `--profile-steps N`, N more steps after the timed ones run under torch.profiler: device time
per step by kernel category (GEMM, attention, inductor's fused kernels, optimizer...), the top
kernels, and then one step with CUDA's sync debug mode, which names every host-device
synchronisation and where it was called from.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import cProfile
import gzip
import json
import os
import pstats
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

CONFIG_JSON = ROOT / "benchmarks" / "erlangshen_config.json"
DEEPSPEED = ROOT / "conf" / "base" / "deepspeed"

# Each configuration: changes to the `model`, `training` and `training.gpu_arguments` parameters of
# the `erlangshen` environment (conf/base merged with conf/erlangshen, as Kedro's soft merge does), and
# the encoder it trains (`encoder`: Erlangshen-MegatronBert-1.3B unless named).
# One process trains without DeepSpeed unless `training.deepspeed_single_process` asks for it.
#
#   configuration                  what it is
#   winning_recipe                 the winning solution's path (eager attention, DeepSpeed ZeRO-1, no compilation)
#   default                        the project's one-GPU path as conf/erlangshen sets it
#   default_<change>               the project's path with that one change (or diagnostic)
#   bert_large_hf_default          a BERT-large-shaped encoder on the HF Trainer's default path
#   bert_large                     the same encoder on the project's path
#   bert_large_<change>            the same with one part of the project's path taken out, or one change
SYNCHRONISING = {"logging_nan_inf_filter": True, "accelerator_config": {"non_blocking": False}}
# The Hugging Face Trainer as a user gets it: bf16 autocast over fp32 weights, the model's own attention
# (transformers' SDPA for BERT) and fp32 residual stream, its fused AdamW and clip, no compilation, no
# DeepSpeed on one GPU, a mask on every batch, and the Trainer's per-step synchronisations.
HF_TRAINER_DEFAULT = {
    "model": {"unpadded_without_mask": False, "dropout_masks_from_aten": False, "residual_in_autocast_dtype": False},
    "training": {
        "compiled_region": "model",
        "bf16_master_weights": False,
        "clip_in_fused_optimizer": False,
        "compile_predictions": False,
    },
    "gpu": {"torch_compile": False, "optim": "adamw_torch_fused", "tf32": None, **SYNCHRONISING},
    "predict_with_trainer": True,
}
# chinese-roberta-wwm-ext-large's shape (a BERT: 24 layers, hidden 1024, 16 heads), random weights.
ENCODERS = {
    "bert_large": {
        "architecture": "bert",
        "config": {
            "hidden_size": 1024,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "intermediate_size": 4096,
            "max_position_embeddings": 512,
            "type_vocab_size": 2,
            "vocab_size": 21128,
        },
    },
}
# The project's path for BERT-family encoders (docs/encoders.md): the master weights updated by torch's
# fused AdamW over each group's lists, not one kernel per parameter (a BERT-large has about 390 parameter
# tensors; finetune/master_weights.py), the residual stream in bf16 (each layer norm's output: conf/base's
# residual_in_autocast_dtype), no dropout on the attention probabilities (cuDNN's attention kernel
# runs 1.4x faster without it at this shape), and the stack of layers compiled as one graph (a step's
# host time below the GPU's).
BERT_CANDIDATE = {
    "encoder": "bert_large",
    "model": {"config_overrides": {"attention_probs_dropout_prob": 0.0}},
    "training": {"master_weight_update": "multi_tensor", "compiled_region": "encoder"},
}


def deep_merge_specs(base: dict, over: dict) -> dict:
    """A configuration's changes with more changes merged in key by key."""
    merged = copy.deepcopy(base)
    for key, value in over.items():
        merged[key] = deep_merge_specs(merged[key], value) if isinstance(merged.get(key), dict) else value
    return merged


CONFIGS: dict[str, dict] = {
    # The winning solution's path: transformers' eager attention, no compilation, DeepSpeed ZeRO-1,
    # bf16, the Trainer's AdamW as it defaulted before torch 2.8 (adamw_torch, foreach), no tf32.
    "winning_recipe": {
        "model": {"fused_attention": False},
        "training": {"deepspeed_single_process": True},
        "gpu": {
            "bf16": True,
            "tf32": False,
            "optim": "adamw_torch",
            "torch_compile": False,
            "deepspeed": str(DEEPSPEED / "zero1.json"),
            **SYNCHRONISING,
        },
    },
    # The project's one-GPU path as it is: no DeepSpeed (bf16 weights from fp32 master weights in one
    # compiled AdamW update, clipping inside it), SDPA with no mask for unpadded batches, a bf16
    # residual stream, hidden dropout's masks from ATen, each layer compiled with programmatic
    # dependent launch, and no host-device synchronisation in the step.
    "default": {},
    # the project's path with one change each
    "default_deepspeed": {"training": {"deepspeed_single_process": True}},  # ZeRO-1 kept on one GPU
    "default_deepspeed_uncompiled": {"training": {"deepspeed_single_process": True}, "gpu": {"torch_compile": False}},
    "default_fp32_weights": {"training": {"bf16_master_weights": False}},  # bf16 autocast over fp32 weights
    "default_whole_model_compiled": {"training": {"compiled_region": "model"}},  # by the Trainer
    "default_encoder_compiled": {"training": {"compiled_region": "encoder"}},  # the layers as one graph
    "default_fp32_residual": {"model": {"residual_in_autocast_dtype": False}},
    "default_synchronising": {"gpu": SYNCHRONISING},  # the Trainer's NaN/inf loss filter, blocking copies
    "default_masked_fp32_residual_synchronising": {
        "model": {"unpadded_without_mask": False, "residual_in_autocast_dtype": False},
        "gpu": SYNCHRONISING,
    },
    "default_trainer_clip": {"training": {"clip_in_fused_optimizer": False}},  # clip_grad_norm_'s own pass
    "default_no_pdl": {"training": {"inductor_config": {"triton.enable_pdl": False}}},
    # inductor compiles a persistent and a looped variant of each reduction (layer norms) and keeps
    # the faster one. torch 2.11 fails to read or write its cache of picked kernels ("'NoneType' object
    # does not support the context manager protocol"), hence the variable.
    "default_multi_kernel": {
        "training": {"inductor_config": {"triton.multi_kernel": 1}},
        "env": {"TORCHINDUCTOR_DISABLE_MULTI_KERNEL_CACHE": "1"},
    },
    # hidden dropout's masks drawn inside inductor's fused kernels instead of by ATen (finetune/dropout.py)
    "default_inductor_dropout_masks": {"model": {"dropout_masks_from_aten": False}},
    # every dropout as ATen's own kernel (four random numbers per Philox call), unfused from the
    # residual add and layer norm around it: more memory traffic, fewer random-number instructions
    "default_fallback_random": {"training": {"inductor_config": {"fallback_random": True}}},
    # diagnostics, not training recipes: what dropout's random numbers cost (inductor's layer-norm
    # kernels draw the hidden dropout's, cuDNN's attention kernels the attention dropout's)
    "default_no_hidden_dropout": {"model": {"config_overrides": {"hidden_dropout_prob": 0.0}}},
    "default_no_dropout": {
        "model": {"config_overrides": {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}}
    },
    # CUDA graphs for the compiled forward and backward (torch.compile's reduce-overhead mode)
    "default_cudagraphs": {"gpu": {"torch_compile_mode": "reduce-overhead"}},
    # inductor autotunes its GEMMs and fuses their epilogues. Fails with torch 2.11 + transformers
    # 5.24: TrainingArguments switches tf32 on through the new precision API whenever it compiles
    # in bf16, and inductor's GEMM templates then refuse ("mix of the legacy and new APIs to set
    # the matmul precision"), whatever `tf32` says.
    "default_max_autotune": {"gpu": {"torch_compile_mode": "max-autotune-no-cudagraphs", "tf32": None}},
    # inductor tunes the block sizes of its own (elementwise, layer norm) kernels
    "default_coordinate_descent_tuning": {"env": {"TORCHINDUCTOR_COORDINATE_DESCENT_TUNING": "1"}},
    # ZeRO-2 (the multi-GPU configuration), also on one GPU
    "default_zero2": {
        "training": {"deepspeed_single_process": True},
        "gpu": {"deepspeed": str(DEEPSPEED / "zero2.json")},
    },
    # plain DDP (no DeepSpeed), for several GPUs
    "default_ddp": {"gpu": {"deepspeed": None}},
    # A BERT-large-shaped encoder: the HF Trainer's default path, the project's path, and the project's
    # path less one part each (transformers' SDPA, regional compilation, bf16 master weights).
    "bert_large_hf_default": {"encoder": "bert_large", **HF_TRAINER_DEFAULT},
    "bert_large": {"encoder": "bert_large", **BERT_CANDIDATE},
    "bert_large_eager_attention": deep_merge_specs(BERT_CANDIDATE, {"model": {"fused_attention": False}}),
    "bert_large_uncompiled": deep_merge_specs(BERT_CANDIDATE, {"gpu": {"torch_compile": False}}),
    "bert_large_fp32_weights": deep_merge_specs(BERT_CANDIDATE, {"training": {"bf16_master_weights": False}}),
    # the master weights updated one compiled kernel per parameter (the 1.3B model's update)
    "bert_large_per_parameter_update": deep_merge_specs(
        BERT_CANDIDATE, {"training": {"master_weight_update": "per_parameter"}}
    ),
    # BERT's own dropout of 0.1 on the attention probabilities
    "bert_large_attention_dropout": deep_merge_specs(
        BERT_CANDIDATE, {"model": {"config_overrides": {"attention_probs_dropout_prob": 0.1}}}
    ),
    # the residual stream in fp32, as transformers' BERT has it under autocast
    "bert_large_fp32_residual": deep_merge_specs(BERT_CANDIDATE, {"model": {"residual_in_autocast_dtype": False}}),
    # both: the project's path for BERT-family encoders before 2026-12-04
    "bert_large_attention_dropout_fp32_residual": deep_merge_specs(
        BERT_CANDIDATE,
        {"model": {"residual_in_autocast_dtype": False, "config_overrides": {"attention_probs_dropout_prob": 0.1}}},
    ),
    # SDPA's flash or memory-efficient kernel tried first (torch 2.11 picks cuDNN's, the fastest of the
    # three at 16 heads of 64 with and without dropout; finetune/sdpa_backend.py)
    "bert_large_flash_attention": deep_merge_specs(BERT_CANDIDATE, {"model": {"attention_backend": "flash"}}),
    "bert_large_efficient_attention": deep_merge_specs(BERT_CANDIDATE, {"model": {"attention_backend": "efficient"}}),
    # each layer compiled on its own (the 1.3B model's region), with and without CUDA graphs for each
    # compiled layer's forward and backward (torch.compile's reduce-overhead mode)
    "bert_large_layers_compiled": deep_merge_specs(BERT_CANDIDATE, {"training": {"compiled_region": "layers"}}),
    "bert_large_layers_cudagraphs": deep_merge_specs(
        BERT_CANDIDATE, {"training": {"compiled_region": "layers"}, "gpu": {"torch_compile_mode": "reduce-overhead"}}
    ),
    # CUDA graphs for the compiled stack of layers, forward and backward
    "bert_large_cudagraphs": deep_merge_specs(BERT_CANDIDATE, {"gpu": {"torch_compile_mode": "reduce-overhead"}}),
    # the whole model compiled by the Trainer (forward and backward one graph each), with CUDA graphs
    "bert_large_whole_model_compiled": deep_merge_specs(BERT_CANDIDATE, {"training": {"compiled_region": "model"}}),
    "bert_large_whole_model_cudagraphs": deep_merge_specs(
        BERT_CANDIDATE, {"training": {"compiled_region": "model"}, "gpu": {"torch_compile_mode": "reduce-overhead"}}
    ),
}

TINY_MODEL = {"num_hidden_layers": 1, "hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 128}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--configs",
        default="matmul,winning_recipe,default",
        help="comma-separated: matmul, attention, " + ", ".join(CONFIGS) + "; NAME@N runs on N GPUs",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # one configuration, in this process
    parser.add_argument("--warmup", type=int, default=8, help="untimed optimizer steps (compilation happens here)")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps")
    parser.add_argument("--batch", type=int, default=32, help="per-device train batch")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--attention-heads", type=int, default=8, help="`attention`: heads (BERT-large: 16)")
    parser.add_argument("--head-size", type=int, default=256, help="`attention`: head size (BERT-large: 64)")
    parser.add_argument(
        "--infer",
        type=int,
        default=0,
        help="after training, time the predictions on this many texts (0: skip)",
    )
    parser.add_argument("--infer-batch", type=int, default=None, help="per-device eval batch (default: the conf's)")
    parser.add_argument("--out", default="benchmarks/results.jsonl", help="JSON lines appended here")
    parser.add_argument("--workdir", default="/tmp/throughput_work")
    parser.add_argument(
        "--deadline",
        type=float,
        default=0,
        help="seconds from the start after which no configuration starts and a running one is stopped",
    )
    parser.add_argument("--tiny", action="store_true", help="tiny model on CPU/GPU, to test this script")
    parser.add_argument(
        "--init-device",
        default="auto",
        help="device the random weights are drawn on (auto: cuda when present; only start-up speed)",
    )
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=0,
        help="bf16 matmul TFLOP/s to divide by (default: the matmul record in --out)",
    )
    parser.add_argument(
        "--profile-steps",
        type=int,
        default=0,
        help="after the timed steps, profile this many steps (kernel time by category), "
        "then report the host-device synchronisations of one more step",
    )
    parser.add_argument(
        "--host-profile-steps",
        type=int,
        default=0,
        help="after the timed (and profiled) steps, run this many under cProfile: the training thread's "
        "Python and builtin functions by their own time per step",
    )
    parser.add_argument(
        "--trace", default="", help="comma-separated configurations whose profile is also written as a Chrome trace"
    )
    return parser.parse_args(argv)


# ---------------------------------------------------------------- parameters and data


def deep_merge(base: dict, over: dict) -> dict:
    """The project's key-by-key merge (`finetune.arguments.deep_merge`), imported when first used: it
    imports torch, which a configuration's process must import after its environment is set."""
    from sentence_reduction.finetune.arguments import deep_merge as merge

    return merge(base, over)


def project_parameters() -> dict:
    """conf/base/parameters_train.yml with conf/erlangshen/parameters_train.yml merged key by key, and
    the `megatron_bert` candidate's model settings as `model`."""
    import yaml

    base = yaml.safe_load((ROOT / "conf/base/parameters_train.yml").read_text(encoding="utf-8"))
    env = yaml.safe_load((ROOT / "conf/erlangshen/parameters_train.yml").read_text(encoding="utf-8"))
    params = deep_merge(base, env)
    params["model"] = params["transformer_candidates"]["megatron_bert"]["model"]
    return params


ALPHABET = [chr(code) for code in range(0x4E00, 0x4E00 + 4096)]  # CJK: one token per character


def synthetic_texts(count: int, characters: int, seed: int) -> list[str]:
    """Random CJK characters (U+4E00..U+5DFF), each one token for BertTokenizer."""
    rng = random.Random(seed)
    return ["".join(rng.choices(ALPHABET, k=characters)) for _ in range(count)]


def configured_parameters(name: str) -> tuple[dict, dict]:
    """The `model` and `training` parameters of the erlangshen environment with configuration
    ``name``'s changes applied (its `gpu` changes into `training.gpu_arguments`)."""
    spec = CONFIGS[name]
    params = project_parameters()
    model = deep_merge(params["model"], spec.get("model", {}))
    training = deep_merge(params["training"], spec.get("training", {}))
    training["gpu_arguments"] = {**(training.get("gpu_arguments") or {}), **spec.get("gpu", {})}
    return model, training


def make_job(name: str, args: argparse.Namespace, world_size: int):
    from sentence_reduction.finetune.job import FoldJob
    from sentence_reduction.finetune.text import build_character_vocabulary, build_tokenizer

    model, training = configured_parameters(name)
    encoder = CONFIGS[name].get("encoder")
    if encoder:
        model.update(ENCODERS[encoder], config_path=None)
    else:
        model.update(config_path=str(CONFIG_JSON))
    model.update(max_length=args.max_length, vocabulary_min_frequency=1)
    if args.tiny:
        model["config_overrides"] = dict(model.get("config_overrides") or {}, **TINY_MODEL)
    # One untimed step at least after the window: on 2026-12-04 the window's last step, then the last of
    # `train()`, took 0.3-0.5 s more than the others on every path but DeepSpeed's (docs/encoders.md).
    total_steps = args.warmup + args.steps + args.profile_steps + args.host_profile_steps + 1
    training["arguments"].update(
        max_steps=total_steps,
        per_device_train_batch_size=args.batch,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        logging_steps=max(total_steps, 1),  # one log line, at the end
    )
    if args.infer_batch:
        training["arguments"]["per_device_eval_batch_size"] = args.infer_batch
    if args.tiny:
        training["arguments"]["dataloader_num_workers"] = 0

    characters = args.max_length + 64  # one token per character: truncated to max_length
    train_count = args.batch * world_size * total_steps
    train_texts = synthetic_texts(train_count, characters, seed=1)
    predict_texts = synthetic_texts(max(args.infer, 1), characters, seed=2)
    eval_texts = synthetic_texts(8, characters, seed=3)
    rng = random.Random(4)
    # Every text draws from ALPHABET, so one text holding each character gives the same vocabulary
    # as all of them (and takes milliseconds instead of seconds).
    vocabulary = build_character_vocabulary(["".join(ALPHABET)])
    return FoldJob(
        name=f"throughput-{name}",
        train_texts=train_texts,
        train_labels=[rng.randrange(34) for _ in train_texts],
        eval_texts=eval_texts,
        eval_labels=[rng.randrange(34) for _ in eval_texts],
        predict_texts=predict_texts,
        tokenizer=build_tokenizer(vocabulary),
        class_months=list(range(34)),
        model=model,
        training=training,
    )


def flops_per_sample(model, seq_len: int) -> dict:
    """Training and inference FLOPs of one sample of seq_len tokens (matmuls only)."""
    config = model.config
    non_embedding = sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)
    attention_forward = 4 * seq_len * seq_len * config.hidden_size * config.num_hidden_layers
    return {
        "params_non_embedding": non_embedding,
        "train_flop_per_sample": 6 * non_embedding * seq_len + 3 * attention_forward,
        "infer_flop_per_sample": 2 * non_embedding * seq_len + attention_forward,
    }


# ---------------------------------------------------------------- workers


def emit(record: dict, out: str) -> None:
    line = json.dumps(record, sort_keys=True)
    print("RESULT " + line, flush=True)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")


def device_description() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"device": "cpu"}
    props = torch.cuda.get_device_properties(0)
    return {
        "device": props.name,
        "device_memory_gib": round(props.total_memory / 2**30, 1),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
    }


def matmul_worker(args: argparse.Namespace) -> None:
    """bf16 8192^3 matmul on random data, every visible GPU, timed with CUDA events."""
    import torch

    n = 8192 if not args.tiny else 1024
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
            emit(
                {
                    "config": "matmul",
                    "gpu_index": index,
                    "n": n,
                    "tflops_median": round(rates[len(rates) // 2], 1),
                    "tflops_max": round(rates[-1], 1),
                    **device_description(),
                    "device_name": torch.cuda.get_device_name(index),
                },
                args.out,
            )
            del inputs, out
            torch.cuda.empty_cache()


def peak_from_results(args: argparse.Namespace) -> float:
    """The peak to divide by: the best of the timed matmul repeats (of the slowest GPU)."""
    if args.peak_tflops:
        return args.peak_tflops
    path = Path(args.out)
    if path.is_file():
        rates = [
            json.loads(line).get("tflops_max")
            for line in path.read_text().splitlines()
            if line.startswith("{") and '"matmul"' in line
        ]
        rates = [rate for rate in rates if rate]
        if rates:
            return min(rates)  # the slowest visible GPU
    return 0.0


def attention_worker(args: argparse.Namespace) -> None:
    """The model's attention and projection shapes alone (batch 32 x 512, bf16; 8 heads of 256, or
    ``--attention-heads`` of ``--head-size``: 16 of 64 for the BERT-large shape).

    SDPA forward + backward per backend, with no mask and with the additive (batch, 1, seq, seq)
    mask the model passes when a batch has padding; and the query/key/value projection as three
    GEMMs or one. Timed with CUDA events; each case skipped when its backend refuses it.
    """
    import torch
    from torch.nn import functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    batch, heads, seq, head = (
        (2, 2, 64, 32) if args.tiny else (args.batch, args.attention_heads, args.max_length, args.head_size)
    )
    hidden = heads * head

    def time_ms(function, repeats=10) -> float:
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
        "flash": SDPBackend.FLASH_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
    }
    forward_flop = 4 * batch * heads * seq * seq * head
    for dropout in (0.1, 0.0):
        for mask_name, mask in masks.items():
            for backend_name, backend in backends.items():

                def step(mask=mask, dropout=dropout):
                    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout)
                    out.backward(grad)

                record = {
                    "config": "attention",
                    "case": f"sdpa {backend_name} mask={mask_name} dropout={dropout}",
                    "shape": [batch, heads, seq, head],
                }
                try:
                    with sdpa_kernel(backend) if backend is not None else contextlib.nullcontext():
                        ms = time_ms(step)
                    record.update(fwd_bwd_ms=round(ms, 3), tflops=round(3 * forward_flop / ms / 1e9, 1))
                except RuntimeError as error:
                    record["failed"] = str(error).splitlines()[0][:200]
                emit(record, args.out)
                query.grad = key.grad = value.grad = None

    tokens = batch * seq
    inputs = torch.randn(tokens, hidden, device="cuda", dtype=torch.bfloat16)
    weights = [torch.randn(hidden, hidden, device="cuda", dtype=torch.bfloat16) for _ in range(3)]
    fused_weight = torch.cat(weights)
    cases = {
        "qkv as 3 GEMMs": (lambda: [inputs @ w.T for w in weights], 3 * 2 * tokens * hidden * hidden),
        "qkv as 1 GEMM": (lambda: inputs @ fused_weight.T, 3 * 2 * tokens * hidden * hidden),
    }
    up = torch.randn(4 * hidden, hidden, device="cuda", dtype=torch.bfloat16)
    wide = torch.randn(tokens, 4 * hidden, device="cuda", dtype=torch.bfloat16)
    down = torch.randn(hidden, 4 * hidden, device="cuda", dtype=torch.bfloat16)
    cases["ffn up (h -> 4h)"] = (lambda: inputs @ up.T, 8 * tokens * hidden * hidden)
    cases["ffn down (4h -> h)"] = (lambda: wide @ down.T, 8 * tokens * hidden * hidden)
    for case, (function, flop) in cases.items():
        ms = time_ms(function, repeats=20)
        emit({"config": "gemm", "case": case, "ms": round(ms, 3), "tflops": round(flop / ms / 1e9, 1)}, args.out)


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


def profile_summary(profiler, steps: int, wall_s: float) -> dict:
    """Device time per step by kernel category, the 25 kernels that take the most, and the 25 host
    operations that take the most CPU time of their own."""
    import torch
    from torch.autograd import DeviceType

    per_kernel = []
    for event in profiler.key_averages():
        if event.device_type != (DeviceType.CUDA if torch.cuda.is_available() else DeviceType.CPU):
            continue  # on the CPU (the script's own test) the CPU operators stand in for kernels
        if getattr(event, "is_user_annotation", False) or "#" in event.key:
            continue  # ranges such as Optimizer.step#AdamW.step span kernels already counted
        total_us = getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0)
        per_kernel.append((event.key, total_us / 1e3 / steps, event.count / steps))
    categories: dict[str, float] = {}
    for name, ms, _ in per_kernel:
        category = kernel_category(name)
        categories[category] = categories.get(category, 0.0) + ms
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


def host_profile_summary(profiler, steps: int, wall_s: float) -> dict:
    """The 30 functions of the training thread with the most time of their own, and the 30 with the
    most in all (callees included), per step, under cProfile (which slows Python down: compare the
    shares, not the times, with unprofiled steps)."""
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


class CardMonitor:
    """The card's SM clock, power and temperature, sampled through NVML every 50 ms while running.

    The optimised step keeps the tensor cores busier than the baseline does, and a card that reaches
    its power limit lowers its clocks: these readings say whether two timings ran at the same clocks.
    Empty where NVML (nvidia-ml-py) or a GPU is missing.
    """

    def __init__(self, index: int):
        self.samples: list[tuple[float, float, float]] = []
        self.reasons = 0
        self.stop = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml, self.handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(index)
        except Exception:  # no NVML here (the CPU smoke test): no readings
            self.nvml = None

    def start(self) -> None:
        import threading

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

    def finish(self) -> dict:
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


def train_worker(name: str, args: argparse.Namespace) -> None:
    import torch
    from transformers import TrainerCallback

    from sentence_reduction.finetune import trainer as fold_trainer
    from sentence_reduction.finetune.arguments import compiled_region, effective_arguments

    os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", "/tmp/ext")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    on_gpu = torch.cuda.is_available()
    if on_gpu:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))

    t_start = time.perf_counter()
    job = make_job(name, args, world_size)
    warmup, steps = args.warmup, args.steps

    class StepTimer(TrainerCallback):
        """Wall time between the end of step `warmup` and the end of step `warmup + steps`, with the
        device synchronised at both ends only (no sync inside the timed window)."""

        def __init__(self):
            self.marks: dict[int, float] = {}
            self.host_step_ends: list[float] = []
            self.card = CardMonitor(torch.cuda.current_device() if on_gpu else 0)

        def on_train_begin(self, args_, state, control, **kwargs):
            self.train_begin = time.perf_counter()

        def on_step_end(self, args_, state, control, **kwargs):
            step = state.global_step
            if step in (1, warmup, warmup + steps):
                if on_gpu:
                    torch.cuda.synchronize()
                self.marks[step] = time.perf_counter()
            if step == warmup:
                self.card.start()  # the card's readings over the timed window
            elif step == warmup + steps:
                self.card_record = self.card.finish()
            if step <= warmup + steps:
                self.host_step_ends.append(time.perf_counter())
            if args.profile_steps:
                try:
                    self.profile(step)
                except Exception as error:  # a profiling failure must not lose the measurement
                    self.profile_record = {"failed": f"{type(error).__name__}: {error}"}
                    args.profile_steps = 0
            if args.host_profile_steps:
                self.host_profile(step)

        # Last, `host_profile_steps` steps under cProfile (the training thread only: the backward's
        # host work runs on autograd's device thread and shows as the time waited in it).
        def host_profile(self, step: int):
            first = warmup + steps + (args.profile_steps + 1 if args.profile_steps else 0)
            if step == first:
                self.host_profiler = cProfile.Profile()
                self.host_profile_start = time.perf_counter()
                self.host_profiler.enable()
            elif step == first + args.host_profile_steps:
                self.host_profiler.disable()
                wall = time.perf_counter() - self.host_profile_start
                self.host_profile_record = host_profile_summary(self.host_profiler, args.host_profile_steps, wall)

        # After the timed window: `profile_steps` steps under torch.profiler, then one step with
        # CUDA's sync debug mode on, which warns at every operation that waits for the device.
        def profile(self, step: int):
            first = warmup + steps
            activities = [torch.profiler.ProfilerActivity.CPU]
            activities += [torch.profiler.ProfilerActivity.CUDA] if on_gpu else []
            if step == first:
                self.profiler = torch.profiler.profile(activities=activities)
                self.profiler.__enter__()
                self.profile_start = time.perf_counter()
            elif step == first + args.profile_steps:
                if on_gpu:
                    torch.cuda.synchronize()
                wall = time.perf_counter() - self.profile_start
                self.profiler.__exit__(None, None, None)
                self.profile_record = profile_summary(self.profiler, args.profile_steps, wall)
                if name in args.trace.split(","):
                    self.profile_record["trace"] = write_trace(self.profiler, name, args.out)
                self.sync_warnings = warnings.catch_warnings()
                self.sync_warnings.__enter__()
                warnings.simplefilter("always")
                self.sync_stacks: list[str] = []
                warnings.showwarning = self.record_sync
                if on_gpu:
                    torch.cuda.set_sync_debug_mode("warn")
            elif step == first + args.profile_steps + 1:
                if on_gpu:
                    torch.cuda.set_sync_debug_mode("default")
                self.sync_warnings.__exit__(None, None, None)
                self.profile_record["syncs_in_one_step"] = len(self.sync_stacks)
                self.profile_record["sync_places"] = sorted(set(self.sync_stacks))

        def record_sync(self, message, category, filename, lineno, file=None, line=None):
            """Where a synchronising operation was called from: the innermost Python frames."""
            if "synchroniz" in str(message):
                try:
                    frames = traceback.extract_stack()[:-1][-4:]
                    self.sync_stacks.append(
                        " < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames))
                    )
                except Exception:  # never break the step being checked
                    self.sync_stacks.append(f"{Path(filename).name}:{lineno}")

    init_device = args.init_device if args.init_device != "auto" else ("cuda" if on_gpu else "cpu")
    output_dir = Path(args.workdir) / name
    with torch.device(init_device):  # where the random initial weights are drawn; speeds start-up only
        trainer = fold_trainer.build_trainer(job, output_dir)
    timer = StepTimer()
    trainer.add_callback(timer)
    if on_gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t_built = time.perf_counter()
    trainer.train()
    if on_gpu:
        torch.cuda.synchronize()
    t_trained = time.perf_counter()

    flops = flops_per_sample(trainer.model, args.max_length)
    peak = peak_from_results(args)
    elapsed = timer.marks[warmup + steps] - timer.marks[warmup]
    samples = args.batch * world_size * steps
    samples_per_s = samples / elapsed
    tflops_per_gpu = samples_per_s * flops["train_flop_per_sample"] / world_size / 1e12
    # the host's time of each timed step (host_step_ends[k] is the end of step k + 1)
    ends = timer.host_step_ends[max(warmup - 1, 0) :]
    host_steps = [b - a for a, b in zip(ends, ends[1:])]
    memory = {}
    if on_gpu:
        memory = {
            "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2),
        }
    args_used = trainer.args
    record = {
        "config": name if world_size == 1 else f"{name}@{world_size}",
        "kind": "train",
        "world_size": world_size,
        "batch_per_device": args.batch,
        "seq_len": args.max_length,
        "warmup_steps": warmup,
        "timed_steps": steps,
        "samples_per_s": round(samples_per_s, 2),
        "step_s": round(elapsed / steps, 4),
        "host_step_s_median": round(sorted(host_steps)[len(host_steps) // 2], 4) if host_steps else None,
        "host_steps_s": [round(seconds, 4) for seconds in host_steps],
        "tflops_per_gpu": round(tflops_per_gpu, 1),
        "peak_bf16_matmul_tflops": peak,
        "share_of_peak": round(tflops_per_gpu / peak, 3) if peak else None,
        "tflop_per_sample": round(flops["train_flop_per_sample"] / 1e12, 3),
        "params_non_embedding": flops["params_non_embedding"],
        "first_step_s": round(timer.marks[1] - timer.train_begin, 1) if 1 in timer.marks else None,
        "warmup_s": round(timer.marks[warmup] - timer.train_begin, 1),
        "build_s": round(t_built - t_start, 1),
        "train_s": round(t_trained - t_built, 1),
        "architecture": trainer.model.config.model_type,
        "attention": trainer.model.config._attn_implementation,
        "fused_attention": job.model.fused_attention,
        "unpadded_without_mask": job.model.unpadded_without_mask,
        "residual_in_autocast_dtype": job.model.residual_in_autocast_dtype,
        "dropout_masks_from_aten": job.model.dropout_masks_from_aten,
        "clip_in_fused_optimizer": trainer._fused_adam_to_clip_in() is not None,
        "bf16_master_weights": job.training.bf16_master_weights,
        "inductor_config": job.training.inductor_config,
        "torch_compile": bool(args_used.torch_compile),
        "compiled_region": compiled_region(job.training, on_gpu=torch.cuda.is_available()),
        # the Trainer's, or the layers' under regional compilation
        "torch_compile_mode": effective_arguments(job.training, on_gpu).get("torch_compile_mode"),
        "attention_dropout": getattr(trainer.model.config, "attention_probs_dropout_prob", None),
        "logging_nan_inf_filter": args_used.logging_nan_inf_filter,
        "non_blocking": bool(getattr(args_used.accelerator_config, "non_blocking", False)),
        "optim": str(getattr(args_used.optim, "value", args_used.optim)),
        "bf16": bool(args_used.bf16),
        "tf32": args_used.tf32,
        "deepspeed": Path(args_used.deepspeed).name if isinstance(args_used.deepspeed, str) else None,
        "train_sampling_strategy": getattr(args_used, "train_sampling_strategy", None),
        "param_dtype": str(next(trainer.model.parameters()).dtype),
        "rank": rank,
        **getattr(timer, "card_record", {}),
        **memory,
        **device_description(),
    }
    if rank == 0:
        emit(record, args.out)
        if getattr(timer, "profile_record", None):
            emit({"config": f"{record['config']}+profile", **timer.profile_record}, args.out)
        if getattr(timer, "host_profile_record", None):
            emit({"config": f"{record['config']}+host_profile", **timer.host_profile_record}, args.out)
    elif memory:
        print(f"rank {rank} {memory}", flush=True)

    if args.infer and world_size == 1:
        try:
            infer(name, job, trainer, flops, peak, args)
        except ValueError as error:
            # After a DeepSpeed run, predict_probabilities' new Trainer inherits the process-wide
            # accelerate state (DeepSpeed plugin) and refuses ZeRO-1/2 inference: see
            # docs/performance.md. Record it and keep the training result.
            emit({"config": f"{name}+predict", "failed": f"{type(error).__name__}: {error}"}, args.out)


def write_trace(profiler, name: str, out: str) -> str:
    """The profile as a gzipped Chrome trace beside ``out``; returns its file name."""
    path = Path(out).with_name(f"trace_{name}.json")
    profiler.export_chrome_trace(str(path))
    with open(path, "rb") as source, gzip.open(f"{path}.gz", "wb") as target:
        shutil.copyfileobj(source, target)
    path.unlink()
    return f"{path.name}.gz"


def infer(name, job, trainer, flops, peak, args) -> None:
    """Test-set prediction as the predict pipeline does it: `predictor.predict_probabilities` on the
    trained model (eager module: a compiled module's compiled call is dropped first); or, for a
    configuration with `predict_with_trainer`, the Trainer's own `predict` (the HF default path)."""
    import torch

    from sentence_reduction.finetune.predictor import predict_probabilities
    from sentence_reduction.finetune.text import TokenisedTexts
    from sentence_reduction.scoring import softmax

    model = trainer.model
    if getattr(model, "_compiled_call_impl", None) is not None:  # DeepSpeed compiles in place
        model._compiled_call_impl = None
    model.eval()

    def predict(texts):
        if CONFIGS[name].get("predict_with_trainer"):
            dataset = TokenisedTexts(trainer.processing_class, texts, job.model.max_length)
            return softmax(trainer.predict(dataset).predictions)
        return predict_probabilities(model, trainer.processing_class, texts, job.model, job.training)

    predict(job.predict_texts[: min(256, len(job.predict_texts))])  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    probabilities = predict(job.predict_texts)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    assert probabilities.shape == (len(job.predict_texts), 34) and (abs(probabilities.sum(1) - 1) < 1e-3).all()
    samples_per_s = len(job.predict_texts) / elapsed
    tflops = samples_per_s * flops["infer_flop_per_sample"] / 1e12
    record = {
        "config": f"{name}+predict",
        "kind": "predict",
        "texts": len(job.predict_texts),
        "eval_batch": job.training.arguments.get("per_device_eval_batch_size"),
        "samples_per_s": round(samples_per_s, 1),
        "tflops_per_gpu": round(tflops, 1),
        "share_of_peak": round(tflops / peak, 3) if peak else None,
        "tflop_per_sample": round(flops["infer_flop_per_sample"] / 1e12, 3),
        "fused_attention": job.model.fused_attention,
        "param_dtype": str(next(model.parameters()).dtype),
        "seconds": round(elapsed, 2),
        **device_description(),
    }
    if torch.cuda.is_available():
        record["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    emit(record, args.out)


# ---------------------------------------------------------------- driver


def run_driver(args: argparse.Namespace, argv: list[str]) -> None:
    start = time.perf_counter()
    try:
        smi = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=index,name,memory.total,driver_version,clocks.max.sm,power.limit",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
        emit(
            {
                "config": "nvidia-smi",
                "gpus": smi.splitlines(),
                "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
            },
            args.out,
        )
    except (OSError, subprocess.SubprocessError):
        pass
    passthrough = [
        f"--warmup={args.warmup}",
        f"--steps={args.steps}",
        f"--batch={args.batch}",
        f"--max-length={args.max_length}",
        f"--attention-heads={args.attention_heads}",
        f"--head-size={args.head_size}",
        f"--infer={args.infer}",
        f"--out={args.out}",
        f"--workdir={args.workdir}",
        f"--init-device={args.init_device}",
        f"--peak-tflops={args.peak_tflops}",
    ]
    passthrough += [f"--profile-steps={args.profile_steps}", f"--trace={args.trace}"]
    passthrough += [f"--host-profile-steps={args.host_profile_steps}"]
    passthrough += [f"--infer-batch={args.infer_batch}"] if args.infer_batch else []
    passthrough += ["--tiny"] if args.tiny else []
    for spec in [c for c in args.configs.split(",") if c]:
        name, _, gpus = spec.partition("@")
        if name not in ("matmul", "attention") and name not in CONFIGS:
            raise SystemExit(f"unknown configuration {name!r}")
        remaining = args.deadline - (time.perf_counter() - start) if args.deadline else None
        if remaining is not None and remaining < 30:
            emit({"config": spec, "skipped": "deadline"}, args.out)
            continue
        worker = [str(Path(__file__).resolve()), "--worker", name, *passthrough]
        environment = {**os.environ, **CONFIGS.get(name, {}).get("env", {})}
        if gpus and int(gpus) > 1:
            command = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc_per_node={int(gpus)}",
                *worker,
            ]
        else:
            command = [sys.executable, *worker]
        print(f"=== {spec}: {' '.join(command)}", flush=True)
        began = time.perf_counter()
        process = subprocess.Popen(command, start_new_session=True, env=environment)
        try:
            code = process.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            code = "killed at deadline"
        print(f"=== {spec}: exit {code} after {time.perf_counter() - began:.0f} s", flush=True)
        if code != 0:
            emit({"config": spec, "failed": str(code)}, args.out)
    print_table(args.out)


def print_table(out: str) -> None:
    path = Path(out)
    if not path.is_file():
        return
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]
    print("\n| config | card | samples/s | TFLOP/s per GPU | share of peak | peak GiB | first step s | SM MHz, W |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        if row.get("config") == "matmul":
            print(
                f"| matmul bf16 8192^3 (GPU {row['gpu_index']}) | {row.get('device_name')} | | "
                f"{row['tflops_median']} (max {row['tflops_max']}) | 1 | | | |"
            )
        elif "samples_per_s" in row:
            print(
                f"| {row['config']} | {row.get('device')} | {row['samples_per_s']} | {row['tflops_per_gpu']} | "
                f"{row.get('share_of_peak')} | {row.get('peak_allocated_gib')} | {row.get('first_step_s', '')} | "
                f"{row.get('sm_clock_mhz_mean', '')} {row.get('power_w_mean', '')} |"
            )
        elif row.get("config") in ("attention", "gemm"):
            print(f"| {row['config']}: {row['case']} | | | {row.get('tflops', row.get('failed'))} | | | | |")
        elif row.get("config", "").endswith("+profile"):
            print(
                f"| {row['config']} | ms/step: wall {row['wall_ms_per_step']}, kernels "
                f"{row['kernel_ms_per_step']}, {row['category_ms_per_step']}; "
                f"syncs {row.get('syncs_in_one_step')} at {row.get('sync_places')} | | | | | | |"
            )
        elif row.get("failed") or row.get("skipped"):
            print(f"| {row.get('config')} | {row.get('failed') or row.get('skipped')} | | | | | | |")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker == "matmul":
        matmul_worker(args)
    elif args.worker == "attention":
        attention_worker(args)
    elif args.worker:
        train_worker(args.worker, args)
    else:
        run_driver(args, argv)


if __name__ == "__main__":
    main()
