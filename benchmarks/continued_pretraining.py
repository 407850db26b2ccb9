"""Continued masked-LM pretraining of a transformer candidate on a file's texts, without Kedro's runner
or MLflow, writing the model folder a candidate's `model.pretrained_path` fine-tunes from.

Runs the `pretrain` pipeline's node (`pipelines/pretrain/nodes.pretrain_encoder`) with the project's
parameters (conf/base, or --env, with --params) on the text column of one file (labelled or not: the
labels are never read), normalised as the pipeline normalises rulings, and copies the folder it wrote
(config.json, model.safetensors, the tokenizer) to --out. The work folder (checkpoints; a killed run
resumes there) is --work-dir, or a temporary one.

    python -m benchmarks.continued_pretraining ../shared/reference/dc611_dev_segmented.csv \
        --candidate e5 --out /tmp/e5_pretrained \
        --params transformer_candidates.e5.model.pretrained_path=/tmp/e5/zh-chars

With --throughput, instead: the masked-LM step's samples/s on synthetic texts of 512 tokens (random CJK
characters, one token each) for the candidate's model built from --config (default: Erlangshen-
MegatronBert-1.3B's, random weights) on the environment's training path, timed between the end of step
--warmup and the end of step --warmup + --steps with the device synchronised at both ends only; one JSON
line. `python -m benchmarks.train_throughput --configs default` times the fine-tuning step of the same path.

    python -m benchmarks.continued_pretraining --throughput --env erlangshen --warmup 8 --steps 15
    python -m benchmarks.continued_pretraining --throughput --tiny --warmup 1 --steps 2   # CPU smoke
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmarks.parameters import CONFIG_JSON, ROOT, TINY_MODEL, changed_parameters, changed_run_parameters
from benchmarks.records import Recorder, command_line
from benchmarks.texts import ALPHABET
from sentence_reduction.config_loading import load_parameters
from sentence_reduction.finetune.arguments import deep_merge
from sentence_reduction.pipelines.data.normalisation import normalise_rulings
from sentence_reduction.pipelines.pretrain.nodes import pretrain_encoder

MODULE = EXPERIMENT = "benchmarks.continued_pretraining"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    arguments = _arguments(argv)
    parameters = load_parameters(ROOT / "conf", arguments.env, changed_parameters(arguments.params))
    recorder = Recorder(EXPERIMENT, command_line(MODULE, argv), arguments.out_records)
    changed = {"candidate": arguments.candidate, "env": arguments.env, **changed_run_parameters(arguments.params)}
    if arguments.throughput:
        params, metrics = throughput(arguments, parameters)
        recorder.log("mlm_step", {**changed, **params}, metrics)
        return
    started = time.perf_counter()
    candidate = parameters["transformer_candidates"][arguments.candidate]
    text = parameters["columns"]["text"]
    rulings = pd.read_csv(arguments.file, dtype=str, keep_default_na=False)[[text]].rename(columns={text: "fact"})
    texts = normalise_rulings(rulings, parameters["text_normalisation"])
    with tempfile.TemporaryDirectory() as temporary:
        work_dir = arguments.work_dir or temporary
        training = deep_merge(parameters["training"], {"work_dir": str(work_dir)})
        quiet = {"training": {"arguments": {"report_to": "none", "disable_tqdm": True}}}
        folder = pretrain_encoder(
            texts,
            texts.head(0),
            candidate["model"],
            training,
            candidate.get("training") or {},
            deep_merge(parameters["pretraining"], quiet),
            arguments.candidate,
        )
        if arguments.out.exists():
            shutil.rmtree(arguments.out)
        shutil.copytree(folder, arguments.out)
        metrics = json.loads((folder.parent / "metrics.json").read_text())
    wall = time.perf_counter() - started
    numbers = {name: value for name, value in metrics.items() if isinstance(value, int | float)}
    recorder.log(
        arguments.run_name or arguments.candidate, {**changed, "texts": len(texts)}, {**numbers, "wall_s": wall}
    )
    print(f"{len(texts)} texts pretrained into {arguments.out} in {wall:.1f} s: {json.dumps(metrics)}")


def throughput(arguments: argparse.Namespace, parameters: dict) -> tuple[dict, dict]:
    """The masked-LM step's samples/s on full 512-token pieces (see the module's docstring): the step's
    parameters and its metrics."""
    import torch
    from transformers import TrainerCallback

    from sentence_reduction.finetune.pretraining import PretrainingJob, build_pretraining_trainer
    from sentence_reduction.finetune.text import build_character_vocabulary, build_tokenizer

    candidate = parameters["transformer_candidates"][arguments.candidate]
    overrides = dict(TINY_MODEL) if arguments.tiny else {}
    model = {**candidate["model"], "pretrained_path": None, "config_path": str(arguments.config)}
    model.update(max_length=arguments.max_length, config_overrides=overrides)
    total = arguments.warmup + arguments.steps + 1  # one untimed step after the window, as train_throughput.py
    training = deep_merge(
        deep_merge(parameters["training"], candidate.get("training") or {}),
        {
            "checkpoint_every_minutes": None,
            "arguments": {
                "max_steps": total,
                "per_device_train_batch_size": arguments.batch,
                "eval_strategy": "no",
                "save_strategy": "no",
                "report_to": "none",
                "disable_tqdm": True,
                "logging_steps": total,
                **({"dataloader_num_workers": 0} if arguments.tiny else {}),
            },
        },
    )
    rng = random.Random(1)
    texts = ["".join(rng.choices(ALPHABET, k=arguments.max_length - 2)) for _ in range(arguments.batch * total)]
    job = PretrainingJob(
        name="mlm-throughput",
        texts=texts,
        eval_texts=[],
        tokenizer=build_tokenizer(build_character_vocabulary(["".join(ALPHABET)])),
        model=model,
        training=training,
        mask_probability=parameters["pretraining"]["mask_probability"],
    )
    on_gpu = torch.cuda.is_available()
    marks: dict[int, float] = {}

    class StepTimer(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in (arguments.warmup, arguments.warmup + arguments.steps):
                if on_gpu:
                    torch.cuda.synchronize()
                marks[state.global_step] = time.perf_counter()

    with tempfile.TemporaryDirectory() as work_dir:
        trainer = build_pretraining_trainer(job, Path(work_dir))
        trainer.add_callback(StepTimer())
        started = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - started
    window = marks[arguments.warmup + arguments.steps] - marks[arguments.warmup]
    params = {"config": arguments.config.name, "batch": arguments.batch, "max_length": arguments.max_length}
    metrics = {
        "samples_per_s": arguments.batch * arguments.steps / window,
        "step_s": window / arguments.steps,
        "train_wall_s": wall,
        "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None,
    }
    print(f"masked-LM step: {metrics['samples_per_s']:.2f} samples/s, {metrics['step_s']:.4f} s a step", flush=True)
    return params, metrics


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", type=Path, nargs="?", help="a CSV whose text column (`columns.text`) is read")
    parser.add_argument("--candidate", default="megatron_bert", help="the transformer candidate to pretrain")
    parser.add_argument("--out", type=Path, help="where the pretrained model folder goes")
    parser.add_argument("--work-dir", type=Path, help="the work folder (checkpoints, resume); default: temporary")
    parser.add_argument("--env", default="local", help="the Kedro environment whose parameters to use")
    parser.add_argument(
        "--params", nargs="+", default=[], metavar="KEY=VALUE", help="changed parameters, as kedro run --params"
    )
    parser.add_argument("--throughput", action="store_true", help="time the masked-LM step instead (no file)")
    parser.add_argument("--config", type=Path, default=CONFIG_JSON, help="--throughput: the model's config.json")
    parser.add_argument("--tiny", action="store_true", help="--throughput: a small model of the config (CPU smoke)")
    parser.add_argument("--batch", type=int, default=32, help="--throughput: texts a step")
    parser.add_argument("--max-length", type=int, default=512, help="--throughput: tokens a text")
    parser.add_argument("--warmup", type=int, default=8, help="--throughput: untimed steps first")
    parser.add_argument("--steps", type=int, default=15, help="--throughput: timed steps")
    parser.add_argument("--run-name", help="the record's run name (default: the candidate)")
    parser.add_argument("--out-records", type=Path, help="a JSON-lines file the record is appended to")
    arguments = parser.parse_args(argv)
    if not arguments.throughput and (arguments.file is None or arguments.out is None):
        parser.error("a file and --out are needed, unless --throughput")
    return arguments


if __name__ == "__main__":
    main()
