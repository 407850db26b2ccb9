"""GPU check of the fold engine as the pipeline runs it: `engine.run_fold` with one process (no
DeepSpeed, as the default), one process under DeepSpeed ZeRO-1 (`training.deepspeed_single_process`),
and two processes started by the project's launcher (torchrun, ZeRO-2); then prediction from each
saved model in the same process (`predictor.predict_probabilities`).

The model is the real Erlangshen config with 2 layers (random weights), on synthetic texts.

    python benchmarks/gpu_smoke.py --work /tmp/gpu_smoke
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from sentence_reduction.finetune.arguments import TrainingSettings, resolved_deepspeed_config  # noqa: E402
from sentence_reduction.finetune.engine import run_fold  # noqa: E402
from sentence_reduction.finetune.job import FoldJob  # noqa: E402
from sentence_reduction.finetune.predictor import predict_probabilities  # noqa: E402
from sentence_reduction.finetune.text import build_character_vocabulary, build_tokenizer  # noqa: E402

DEEPSPEED = ROOT / "conf" / "base" / "deepspeed"


def synthetic_job(name: str, launcher: dict, deepspeed: str | None, single_process_deepspeed: bool) -> FoldJob:
    generator = random.Random(0)
    texts = [
        "".join(chr(0x4E00 + generator.randrange(2000)) for _ in range(generator.randrange(60, 200)))
        for _ in range(384)
    ]
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
        train_texts=texts[:256],
        train_labels=labels[:256],
        eval_texts=texts[256:352],
        eval_labels=labels[256:352],
        predict_texts=texts[352:],
        tokenizer=build_tokenizer(build_character_vocabulary(texts)),
        class_months=list(range(34)),
        model={
            "config_path": str(ROOT / "benchmarks" / "erlangshen_config.json"),
            "config_overrides": {"num_hidden_layers": 2},
            "max_length": 128,
            "fused_attention": True,
        },
        training=training,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--cases", default="single,single_zero1,two_zero2")
    options = parser.parse_args()
    cases = {
        "single": synthetic_job("single", {}, str(DEEPSPEED / "zero1.json"), False),
        "single_zero1": synthetic_job("single_zero1", {}, str(DEEPSPEED / "zero1.json"), True),
        "two_zero2": synthetic_job(
            "two_zero2", {"nproc_per_node": 2, "master_port": 29533}, str(DEEPSPEED / "zero2.json"), False
        ),
    }
    for name in options.cases.split(","):
        job = cases[name]
        started = time.time()
        result = run_fold(job, options.work / name)
        trained = time.time() - started
        deepspeed = resolved_deepspeed_config(job.training, on_gpu=True)  # the engine's own decision
        direct = predict_probabilities(
            result.model.load(), job.load_tokenizer(), job.eval_texts, job.model, job.training
        )
        report = {
            "case": name,
            "gpus": torch.cuda.device_count(),
            "seconds": round(trained, 1),
            "final_score": round(result.metrics["final_score"], 4),
            "eval_shape": list(result.eval_probabilities.shape),
            "predict_shape": list(result.predict_probabilities.shape),
            "deepspeed_stage": deepspeed.get("zero_optimization", {}).get("stage"),
            "safetensors": sorted(p.name for p in (options.work / name / "result" / "model").glob("*.safetensors")),
            "prediction_matches_eval": bool(np.allclose(direct, result.eval_probabilities, atol=2e-2)),
            "max_abs_difference": float(np.abs(direct - result.eval_probabilities).max()),
        }
        print("RESULT " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
