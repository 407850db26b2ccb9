"""GPU check of the fold engine as the pipeline runs it: `engine.run_fold` with one process (no
DeepSpeed, as the default), one process under DeepSpeed ZeRO-1 (`training.deepspeed_single_process`),
and two processes started by the project's launcher (torchrun, ZeRO-2); then prediction from each
saved model in the same process (`predictor.predict_probabilities`).

The model is the real Erlangshen config with 2 layers (random weights), on synthetic texts. Each case is a
record of the experiment `benchmarks.gpu_smoke`.

    python -m benchmarks.gpu_smoke --work /tmp/gpu_smoke
    python -m benchmarks.gpu_smoke --work /tmp/gpu_smoke --cases single --tiny   # CPU smoke
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.parameters import CONFIG_JSON, DEEPSPEED, TINY_MODEL
from benchmarks.records import Recorder, command_line
from sentence_reduction.finetune.arguments import TrainingSettings, resolved_deepspeed_config
from sentence_reduction.finetune.engine import run_fold
from sentence_reduction.finetune.job import FoldJob
from sentence_reduction.finetune.predictor import predict_probabilities
from sentence_reduction.finetune.text import build_character_vocabulary, build_tokenizer

MODULE = EXPERIMENT = "benchmarks.gpu_smoke"


def synthetic_job(
    name: str, launcher: dict, deepspeed: str | None, single_process_deepspeed: bool, tiny: bool
) -> FoldJob:
    generator = random.Random(0)
    texts = [
        "".join(chr(0x4E00 + generator.randrange(2000)) for _ in range(generator.randrange(60, 200)))
        for _ in range(96 if tiny else 384)
    ]
    train, held_out = len(texts) * 2 // 3, len(texts) * 11 // 12  # 256 and 352 of 384
    labels = [len(text) % 34 for text in texts]
    gpu_arguments = {"bf16": True, "tf32": True, "optim": "adamw_torch_fused", "torch_compile": False}
    if deepspeed:
        gpu_arguments["deepspeed"] = deepspeed
    training = TrainingSettings.from_params(
        {
            "arguments": {
                "num_train_epochs": 2,
                "per_device_train_batch_size": 16,
                "per_device_eval_batch_size": 32,
                "learning_rate": 1e-4,
                "eval_strategy": "steps",
                "eval_steps": 8,
                "save_strategy": "steps",
                "save_steps": 8,
                "logging_steps": 4,
                "seed": 1,
                "report_to": "none",
                "disable_tqdm": True,
                "train_sampling_strategy": "group_by_length",
            },
            "gpu_arguments": gpu_arguments,
            "deepspeed_single_process": single_process_deepspeed,
            "launcher": launcher,
        }
    )
    # As the pipeline does: the run's resolved config (resolve_deepspeed_config) in place of the json's path.
    resolved = resolved_deepspeed_config(training, on_gpu=True)
    if resolved:
        training.gpu_arguments["deepspeed"] = resolved
    return FoldJob(
        name=name,
        train_texts=texts[:train],
        train_labels=labels[:train],
        eval_texts=texts[train:held_out],
        eval_labels=labels[train:held_out],
        predict_texts=texts[held_out:],
        tokenizer=build_tokenizer(build_character_vocabulary(texts)),
        class_months=list(range(34)),
        model={
            "config_path": str(CONFIG_JSON),
            "config_overrides": TINY_MODEL if tiny else {"num_hidden_layers": 2},
            "max_length": 128,
            "fused_attention": True,
        },
        training=training,
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--cases", default="single,single_zero1,two_zero2")
    parser.add_argument("--tiny", action="store_true", help="a 1-layer model of the shape family, 96 texts (CPU smoke)")
    parser.add_argument("--out", help="records appended here")
    options = parser.parse_args(argv)
    recorder = Recorder(EXPERIMENT, command_line(MODULE, argv), options.out)
    two = {"nproc_per_node": 2, "master_port": 29533}
    cases = {
        "single": ({}, str(DEEPSPEED / "zero1.json"), False),
        "single_zero1": ({}, str(DEEPSPEED / "zero1.json"), True),
        "two_zero2": (two, str(DEEPSPEED / "zero2.json"), False),
    }
    for name in options.cases.split(","):
        job = synthetic_job(name, *cases[name], tiny=options.tiny)
        started = time.time()
        result = run_fold(job, options.work / name)
        trained = time.time() - started
        deepspeed = resolved_deepspeed_config(job.training, on_gpu=True)  # the engine's own decision
        direct = predict_probabilities(
            result.model.load(), job.load_tokenizer(), job.eval_texts, job.model, job.training
        )
        params = {
            "case": name,
            "gpus": torch.cuda.device_count(),
            "deepspeed_stage": deepspeed.get("zero_optimization", {}).get("stage"),
            "tiny": options.tiny,
        }
        metrics = {
            "seconds": trained,
            "final_score": result.metrics["final_score"],
            "max_abs_difference": float(np.abs(direct - result.eval_probabilities).max()),
        }
        tags = {
            "eval_shape": list(result.eval_probabilities.shape),
            "predict_shape": list(result.predict_probabilities.shape),
            "safetensors": sorted(p.name for p in (options.work / name / "result" / "model").glob("*.safetensors")),
            "prediction_matches_eval": str(bool(np.allclose(direct, result.eval_probabilities, atol=2e-2))),
        }
        recorder.log(name, params, metrics, tags)


if __name__ == "__main__":
    main()
