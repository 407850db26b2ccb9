"""The whole fold job on a GPU, phase by phase: what a user of `kedro run --env erlangshen` waits for.

Runs `engine.run_fold` exactly as the pipeline's fold node does, with the `erlangshen` parameters
(conf/base merged with conf/erlangshen; the `megatron_bert` candidate's model), on rulings from the
project's sample generator, normalised as the pipeline normalises them, tokenised with the real
vocab.txt (`--vocabulary`), and the 1.3B model built with random weights from its real config.
Several folds run in one process, as they do in a `kedro run`, so the later folds show what the
compile cache saves.

Each phase is timed (the GPU synchronised at its edges): training steps, compilation (the excess
of the steps that compiled over a steady step), in-training evaluation, checkpoints, the final
predictions of the held-out fold and the test texts, and writing and reloading the result. It
prints the training efficiency (steps-only time / wall time of `train()`), the prediction rate and
an extrapolation to the competition job (5 folds x 4 epochs, 50,001 train and 25,001 test rows) on
this card, and appends one JSON line per fold to `--out`.

    python benchmarks/fold_job.py --vocabulary /path/to/vocab.txt --out results.jsonl
    python benchmarks/fold_job.py --tiny --train-rows 64 --eval-rows 32 --test-rows 16   # CPU smoke
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from train_throughput import (  # noqa: E402
    CONFIG_JSON,
    CONFIGS,
    TINY_MODEL,
    configured_parameters,
    deep_merge,
    device_description,
    emit,
    project_parameters,
)

# The competition job (reference README): 50,001 training rows in 5 folds, 25,001 test rows, 4 epochs.
COMPETITION = {"folds": 5, "train_rows": 40_001, "eval_rows": 10_000, "test_rows": 25_001, "epochs": 4}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--vocabulary", default=str(ROOT.parent / "shared/reference/erlangshen-megatronbert-1.3b/vocab.txt")
    )
    parser.add_argument("--folds", type=int, default=2, help="folds run one after another in this process")
    parser.add_argument("--train-rows", type=int, default=2560)
    parser.add_argument("--eval-rows", type=int, default=800, help="the held-out fold")
    parser.add_argument("--test-rows", type=int, default=2000)
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--eval-steps", type=int, default=20, help="in-training evaluation cadence")
    parser.add_argument(
        "--checkpoint-step",
        type=int,
        default=40,
        help="one checkpoint at this step, to time it (the recipe saves by wall time)",
    )
    parser.add_argument(
        "--config",
        default="default",
        choices=sorted(CONFIGS),
        help="changes to the erlangshen parameters, as train_throughput.py's configuration of that name",
    )
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model of the real shape family (CPU smoke)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/fold_job.jsonl"))
    return parser.parse_args(argv)


def rulings(args: argparse.Namespace) -> tuple[list[str], list[int], list[str], list[int], list[str]]:
    """Train, held-out and test texts from the sample generator, normalised as the pipeline does."""
    import yaml

    from sentence_reduction.pipelines.data.normalisation import normalise_rulings
    from sentence_reduction.sample_data import generate_rulings

    options = yaml.safe_load((ROOT / "conf/base/parameters_data.yml").read_text())["text_normalisation"]
    labelled, test = generate_rulings(args.train_rows + args.eval_rows, args.test_rows, seed=12)
    labelled, test = normalise_rulings(labelled, options), normalise_rulings(test, options)
    labels = labelled["label"].clip(upper=33).astype(int).tolist()
    facts = labelled["fact"].tolist()
    n = args.train_rows
    return facts[:n], labels[:n], facts[n:], labels[n:], test["fact"].tolist()


def fold_job(args: argparse.Namespace, fold: int):
    from sentence_reduction.finetune.job import FoldJob
    from sentence_reduction.finetune.text import build_tokenizer, read_vocabulary

    model, training = configured_parameters(args.config)
    model.update(config_path=str(CONFIG_JSON), vocabulary_path=args.vocabulary)
    if args.tiny:
        model["config_overrides"] = dict(TINY_MODEL)
    training = deep_merge(
        training,
        {
            "arguments": {
                "num_train_epochs": args.epochs,
                "eval_steps": args.eval_steps,
                "save_strategy": "steps",
                "save_steps": args.checkpoint_step,
                "report_to": "none",
                "disable_tqdm": True,
            }
        },
    )
    if args.tiny:
        training["arguments"].update(dataloader_num_workers=0, per_device_train_batch_size=8)
    train_texts, train_labels, eval_texts, eval_labels, test_texts = rulings(args)
    return FoldJob(
        name=f"fold_{fold}",
        train_texts=train_texts,
        train_labels=train_labels,
        eval_texts=eval_texts,
        eval_labels=eval_labels,
        predict_texts=test_texts,
        tokenizer=build_tokenizer(read_vocabulary(args.vocabulary)),
        class_months=list(range(34)),
        model=model,
        training=training,
    )


class PhaseClock:
    """Wall time of each phase of a fold, the GPU synchronised at the phase's edges."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.spans: dict[str, list[float]] = {}
        self.step_starts: list[float] = []
        self.pauses: list[tuple[float, float]] = []  # evaluations and checkpoints inside train()
        self.open: list[str] = []  # the phases under way, innermost last

    @staticmethod
    def now() -> float:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    @contextmanager
    def phase(self, name: str, pauses_training: bool = False):
        start = self.now()
        self.open.append(name)
        try:
            yield
        finally:
            self.open.pop()
            end = self.now()
            self.spans.setdefault(name, []).append(end - start)
            if pauses_training:
                self.pauses.append((start, end))

    def wrap(self, owner, method: str, name: str, pauses_training: bool = False, not_inside: str = "") -> None:
        """Time every call of ``owner.method`` as phase ``name``, except calls made inside phase
        ``not_inside`` (a checkpoint writes the model with the same method as the final write)."""
        original = getattr(owner, method)
        clock = self

        def timed(*args, **kwargs):
            if not_inside and not_inside in clock.open:
                return original(*args, **kwargs)
            with clock.phase(name, pauses_training):
                return original(*args, **kwargs)

        setattr(owner, method, timed)

    def step_intervals(self) -> list[float]:
        """Time from one training step's start to the next's, less evaluations and checkpoints."""
        intervals = []
        for start, end in zip(self.step_starts, self.step_starts[1:]):
            paused = sum(min(end, b) - max(start, a) for a, b in self.pauses if a < end and b > start)
            intervals.append(end - start - paused)
        return intervals


def instrument(clock: PhaseClock) -> None:
    from transformers import Trainer

    from sentence_reduction.finetune import engine
    from sentence_reduction.finetune.predictor import Predictor
    from sentence_reduction.finetune.trainer import FoldTrainer

    clock.wrap(FoldTrainer, "train", "train")
    clock.wrap(Trainer, "evaluate", "in_training_evaluation", pauses_training=True)
    clock.wrap(Trainer, "_save_checkpoint", "checkpoint", pauses_training=True)
    clock.wrap(Trainer, "save_model", "model_write", not_inside="checkpoint")
    # The engine's own names: run_fold calls them from its module.
    clock.wrap(engine, "_final_predictions", "final_predictions")
    clock.wrap(Predictor, "__call__", "prediction_call")  # held-out, then test texts
    clock.wrap(engine, "load_result", "result_reload")
    step = FoldTrainer.training_step

    def timed_step(self, *args, **kwargs):
        clock.step_starts.append(time.perf_counter())
        return step(self, *args, **kwargs)

    FoldTrainer.training_step = timed_step


def summarise(clock: PhaseClock, job, fold_wall: float, graphs: int) -> dict:
    intervals = clock.step_intervals()
    steady = statistics.median(intervals[len(intervals) // 4 :]) if intervals else float("nan")
    steps = len(clock.step_starts)
    # A step that took more than twice a steady one compiled (or recompiled): its excess is compilation.
    compile_s = sum(interval - steady for interval in intervals if interval > 2 * steady)
    train_wall = sum(clock.spans["train"])
    predicted_rows = len(job.eval_texts) + len(job.predict_texts)
    evaluations = clock.spans.get("in_training_evaluation", [])
    checkpoints = clock.spans.get("checkpoint", [])
    return {
        "fold": job.name,
        "steps": steps,
        "steady_step_s": steady,
        "steps_only_s": steps * steady,
        "compile_s": compile_s,
        "train_wall_s": train_wall,
        "training_efficiency": steps * steady / train_wall,
        "evaluations": len(evaluations),
        "evaluation_s_each": statistics.mean(evaluations) if evaluations else 0.0,
        "checkpoints": len(checkpoints),
        "checkpoint_s_each": statistics.mean(checkpoints) if checkpoints else 0.0,
        "model_write_s": sum(clock.spans.get("model_write", [])),
        "final_predictions_s": sum(clock.spans["final_predictions"]),
        "prediction_samples_per_s": predicted_rows / sum(clock.spans["final_predictions"]),
        # the test texts, predicted second: any compilation happened on the held-out ones
        "test_prediction_samples_per_s": len(job.predict_texts) / clock.spans["prediction_call"][-1],
        "result_reload_s": sum(clock.spans.get("result_reload", [])),
        "fold_wall_s": fold_wall,
        "compiled_graphs": graphs,
        "train_samples_per_s": job.training.arguments["per_device_train_batch_size"] / steady,
    }


def extrapolate(first: dict, later: dict, eval_steps: int, checkpoint_minutes: float, batch: int) -> dict:
    """The competition job on this card from the measured folds: steps, evaluations and checkpoints
    scale with the fold's size, compilation is a fixed cost (the first fold's, then a later fold's)."""
    steps = COMPETITION["epochs"] * (COMPETITION["train_rows"] // batch)  # the short last batch is dropped
    steps_s = steps * later["steady_step_s"]
    evaluations_s = steps // eval_steps * later["evaluation_s_each"]
    checkpoints_s = math.floor(steps_s / (60 * checkpoint_minutes)) * later["checkpoint_s_each"]
    predict_s = (COMPETITION["eval_rows"] + COMPETITION["test_rows"]) / later["prediction_samples_per_s"]
    write_s = later["model_write_s"] + later["result_reload_s"]

    def fold(measured: dict) -> dict:
        train_s = steps_s + measured["compile_s"] + evaluations_s + checkpoints_s
        return {"train_s": train_s, "efficiency": steps_s / train_s, "wall_s": train_s + predict_s + write_s}

    cold, warm = fold(first), fold(later)
    job_s = cold["wall_s"] + (COMPETITION["folds"] - 1) * warm["wall_s"]
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
        "job_hours": job_s / 3600,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from torch._dynamo.utils import counters

    from sentence_reduction.finetune.engine import run_fold

    device = device_description()
    results = []
    clock = PhaseClock()
    instrument(clock)
    with tempfile.TemporaryDirectory() as work:
        for fold in range(args.folds):
            job = fold_job(args, fold)
            clock.reset()
            graphs_before = counters["stats"]["unique_graphs"]
            start = clock.now()
            run_fold(job, Path(work) / job.name)
            record = summarise(clock, job, clock.now() - start, counters["stats"]["unique_graphs"] - graphs_before)
            record.update(
                device,
                benchmark="fold_job",
                config=args.config,
                date=time.strftime("%Y-%m-%d"),
                rows={"train": args.train_rows, "eval": args.eval_rows, "test": args.test_rows},
            )
            emit(record, args.out)
            results.append(record)
    recipe = project_parameters()["training"]  # the recipe's cadences, not this run's
    projection = extrapolate(
        results[0],
        results[-1],
        eval_steps=int(recipe["arguments"]["eval_steps"]),
        checkpoint_minutes=float(recipe.get("checkpoint_every_minutes") or 30),
        batch=int(recipe["arguments"]["per_device_train_batch_size"]),
    )
    emit({"benchmark": "fold_job_extrapolation", **device, **projection}, args.out)
    print_table(results, projection)


def print_table(results: list[dict], projection: dict) -> None:
    keys = [
        "steps",
        "steady_step_s",
        "compile_s",
        "train_wall_s",
        "training_efficiency",
        "evaluations",
        "evaluation_s_each",
        "checkpoints",
        "checkpoint_s_each",
        "model_write_s",
        "final_predictions_s",
        "prediction_samples_per_s",
        "result_reload_s",
        "fold_wall_s",
        "compiled_graphs",
    ]
    print(f"{'':28}" + "".join(f"{record['fold']:>12}" for record in results))
    for key in keys:
        print(
            f"{key:28}"
            + "".join(
                f"{record[key]:12.3f}" if isinstance(record[key], float) else f"{record[key]:12}" for record in results
            )
        )
    print(
        "competition job on this card (5 folds x 4 epochs, 40,001 train / 10,000 held-out / 25,001 test rows a fold):"
    )
    for key, value in projection.items():
        print(f"  {key:28}{value:12.3f}")


if __name__ == "__main__":
    main()
