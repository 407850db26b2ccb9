"""The whole fold job on a GPU, phase by phase: what a user of `kedro run --env erlangshen` waits for.

Runs `engine.run_fold` as the pipeline's fold node does, with the `erlangshen` parameters and a training path's changes
(`benchmarks.parameters.PATHS`), on rulings from the project's sample generator normalised as the pipeline
normalises them, tokenised with the real vocab.txt (`--vocabulary`; a character vocabulary of the texts
without it), and the 1.3B model built with random weights from its real config. Several folds run in one
process, as in a `kedro run`, so the later folds show what the compile cache saves.

A `TrainerCallback` times the training phases (the GPU synchronised at their edges): the steps,
compilation (the excess of the steps that compiled over a steady step), in-training evaluations and
checkpoints; the engine's metrics give the final predictions' time; the rest of the fold after training is
writing the model and the result, and reading the result back. Each fold is a record of the experiment
`benchmarks.fold_job`, and so is the competition job (5 folds x 4 epochs, 50,001 train and 25,001 test rows)
extrapolated to this card.

    python -m benchmarks.fold_job --vocabulary /path/to/vocab.txt --out results.jsonl
    python -m benchmarks.fold_job --tiny --train-rows 64 --eval-rows 32 --test-rows 16   # CPU smoke
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from benchmarks.parameters import PATHS, TINY_MODEL, path_parameters, project_parameters
from benchmarks.records import Recorder, command_line
from benchmarks.texts import generated_rulings

MODULE = EXPERIMENT = "benchmarks.fold_job"
# The competition job (reference README): 50,001 training rows in 5 folds, 25,001 test rows, 4 epochs.
COMPETITION = {"folds": 5, "train_rows": 40_001, "eval_rows": 10_000, "test_rows": 25_001, "epochs": 4}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocabulary", help="a vocab.txt (the real Erlangshen one); default: the texts' characters")
    parser.add_argument("--folds", type=int, default=2, help="folds run one after another in this process")
    parser.add_argument("--train-rows", type=int, default=2560)
    parser.add_argument("--eval-rows", type=int, default=800, help="the held-out fold")
    parser.add_argument("--test-rows", type=int, default=2000)
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--eval-steps", type=int, default=20, help="in-training evaluation cadence")
    parser.add_argument(
        "--checkpoint-step", type=int, default=40, help="a checkpoint every this many steps, to time one"
    )
    parser.add_argument("--config", default="default", choices=sorted(PATHS), help="the training path")
    parser.add_argument("--tiny", action="store_true", help="a tiny model of the real shape family (CPU smoke)")
    parser.add_argument("--out", help="records appended here")
    return parser.parse_args(argv)


def fold_job(args: argparse.Namespace, fold: int):
    from sentence_reduction.finetune.arguments import deep_merge
    from sentence_reduction.finetune.job import FoldJob
    from sentence_reduction.finetune.text import build_character_vocabulary, build_tokenizer, read_vocabulary

    model, training = path_parameters(args.config)
    if args.tiny:
        model["config_overrides"] = dict(model.get("config_overrides") or {}, **TINY_MODEL)
    changes = {
        "num_train_epochs": args.epochs,
        "eval_steps": args.eval_steps,
        "save_strategy": "steps",
        "save_steps": args.checkpoint_step,
        "report_to": "none",
        "disable_tqdm": True,
    }
    if args.tiny:
        changes.update(dataloader_num_workers=0, per_device_train_batch_size=8)
    training = deep_merge(training, {"arguments": changes})
    train_texts, train_labels, eval_texts, eval_labels, test_texts = generated_rulings(
        args.train_rows, args.eval_rows, args.test_rows
    )
    if args.vocabulary:
        vocabulary = read_vocabulary(args.vocabulary)
    else:
        vocabulary = build_character_vocabulary(train_texts + eval_texts + test_texts)
    return FoldJob(
        name=f"fold_{fold}",
        train_texts=train_texts,
        train_labels=train_labels,
        eval_texts=eval_texts,
        eval_labels=eval_labels,
        predict_texts=test_texts,
        tokenizer=build_tokenizer(vocabulary),
        class_months=list(range(34)),
        model=model,
        training=training,
    )


def now() -> float:
    """The time, once the GPU has done what it was given."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


class PhaseClock(TrainerCallback):
    """The phases of a fold's training: when each step starts, and the evaluations and checkpoints that pause
    the steps (from the end of the step before them, or of its log line, to their own end)."""

    def __init__(self) -> None:
        self.step_starts: list[float] = []
        self.evaluations: list[tuple[float, float]] = []
        self.checkpoints: list[tuple[float, float]] = []
        self.pause_start = 0.0

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        self.train_start = now()

    def on_step_begin(self, args, state, control, **kwargs) -> None:
        self.step_starts.append(time.perf_counter())

    def on_step_end(self, args, state, control, **kwargs) -> None:
        if control.should_evaluate or control.should_save:
            self.pause_start = now()

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        # A training step's log line (not an evaluation's) is part of the steps: on steps without pauses too.
        if "loss" in (logs or {}) and (control.should_evaluate or control.should_save):
            self.pause_start = now()

    def on_evaluate(self, args, state, control, **kwargs) -> None:
        self.evaluations.append((self.pause_start, now()))
        self.pause_start = self.evaluations[-1][1]

    def on_save(self, args, state, control, **kwargs) -> None:
        self.checkpoints.append((self.pause_start, now()))

    def on_train_end(self, args, state, control, **kwargs) -> None:
        self.train_end = now()

    def step_intervals(self) -> list[float]:
        """Time from one step's start to the next's, less the evaluations and checkpoints between them."""
        pauses = self.evaluations + self.checkpoints
        intervals = []
        for start, end in zip(self.step_starts, self.step_starts[1:]):
            paused = sum(min(end, b) - max(start, a) for a, b in pauses if a < end and b > start)
            intervals.append(end - start - paused)
        return intervals


def measure_fold(job, work_dir: Path) -> dict[str, Any]:
    """Trains ``job`` in ``work_dir`` and returns its phases' times."""
    from torch._dynamo.utils import counters

    from sentence_reduction.finetune.engine import run_fold

    clock = PhaseClock()
    graphs_before = counters["stats"]["unique_graphs"]
    started = now()
    result = run_fold(job, work_dir, callbacks=[clock])
    finished = now()
    intervals = clock.step_intervals()
    steady = statistics.median(intervals[len(intervals) // 4 :]) if intervals else float("nan")
    steps = len(clock.step_starts)
    train_wall = clock.train_end - clock.train_start
    evaluations = [end - start for start, end in clock.evaluations]
    checkpoints = [end - start for start, end in clock.checkpoints]
    return {
        "steps": steps,
        "steady_step_s": steady,
        "steps_only_s": steps * steady,
        # a step that took more than twice a steady one compiled (or recompiled): its excess is compilation
        "compile_s": sum(interval - steady for interval in intervals if interval > 2 * steady),
        "train_wall_s": train_wall,
        "training_efficiency": steps * steady / train_wall,
        "evaluations": len(evaluations),
        "evaluation_s_each": statistics.mean(evaluations) if evaluations else 0.0,
        "checkpoints": len(checkpoints),
        "checkpoint_s_each": statistics.mean(checkpoints) if checkpoints else 0.0,
        "final_predictions_s": result.metrics["runtime"],
        "prediction_samples_per_s": result.metrics["samples_per_second"],
        # after training, less the final predictions: the model and the result written, the result read back
        "write_and_reload_s": finished - clock.train_end - result.metrics["runtime"],
        "fold_wall_s": finished - started,
        "compiled_graphs": counters["stats"]["unique_graphs"] - graphs_before,
        "train_samples_per_s": job.training.arguments["per_device_train_batch_size"] / steady,
    }


def extrapolate(first: dict, later: dict, eval_steps: int, checkpoint_minutes: float, batch: int) -> dict:
    """The competition job on this card from the measured folds: steps, evaluations and checkpoints scale with
    the fold's size, compilation is a fixed cost (the first fold's, then a later fold's)."""
    steps = COMPETITION["epochs"] * (COMPETITION["train_rows"] // batch)  # the short last batch is dropped
    steps_s = steps * later["steady_step_s"]
    evaluations_s = steps // eval_steps * later["evaluation_s_each"]
    checkpoints_s = math.floor(steps_s / (60 * checkpoint_minutes)) * later["checkpoint_s_each"]
    predict_s = (COMPETITION["eval_rows"] + COMPETITION["test_rows"]) / later["prediction_samples_per_s"]
    write_s = later["write_and_reload_s"]

    def fold(measured: dict) -> dict:
        train_s = steps_s + measured["compile_s"] + evaluations_s + checkpoints_s
        return {"train_s": train_s, "efficiency": steps_s / train_s, "wall_s": train_s + predict_s + write_s}

    cold, warm = fold(first), fold(later)
    return {
        "steps_per_fold": steps,
        "steps_s": steps_s,
        "evaluations_s": evaluations_s,
        "checkpoints_s": checkpoints_s,
        "predictions_s": predict_s,
        "write_and_reload_s": write_s,
        "efficiency_first_fold": cold["efficiency"],
        "efficiency_later_folds": warm["efficiency"],
        "fold_wall_s_first": cold["wall_s"],
        "fold_wall_s_later": warm["wall_s"],
        "job_hours": (cold["wall_s"] + (COMPETITION["folds"] - 1) * warm["wall_s"]) / 3600,
    }


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    recorder = Recorder(EXPERIMENT, command_line(MODULE, argv), args.out)
    params = {
        "config": args.config,
        "train_rows": args.train_rows,
        "eval_rows": args.eval_rows,
        "test_rows": args.test_rows,
        "epochs": args.epochs,
        "eval_steps": args.eval_steps,
        "checkpoint_step": args.checkpoint_step,
        "vocabulary": Path(args.vocabulary).name if args.vocabulary else "characters of the texts",
        "tiny": args.tiny,
    }
    results = []
    with tempfile.TemporaryDirectory() as work:
        for fold in range(args.folds):
            job = fold_job(args, fold)
            results.append(measure_fold(job, Path(work) / job.name))
            recorder.log(f"{args.config}.{job.name}", {**params, "fold": fold}, results[-1])
    recipe = project_parameters()["training"]  # the recipe's cadences, not this run's
    projection = extrapolate(
        results[0],
        results[-1],
        eval_steps=int(recipe["arguments"]["eval_steps"]),
        checkpoint_minutes=float(recipe.get("checkpoint_every_minutes") or 30),
        batch=int(recipe["arguments"]["per_device_train_batch_size"]),
    )
    recorder.log(f"{args.config}.competition_job", params, projection)
    print_table(results, projection)


def print_table(results: list[dict], projection: dict) -> None:
    print(f"{'':28}" + "".join(f"{'fold_' + str(fold):>12}" for fold in range(len(results))))
    for key in results[0]:
        print(f"{key:28}" + "".join(f"{record[key]:12.3f}" for record in results))
    print("competition job on this card (5 folds x 4 epochs, 40,001 train / 10,000 held-out / 25,001 test rows):")
    for key, value in projection.items():
        print(f"  {key:28}{value:12.3f}")


if __name__ == "__main__":
    main()
