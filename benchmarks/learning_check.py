"""Does a training path learn? A planted-keyword task, trained from random weights through `engine.run_fold`.

Each text is random CJK characters with one keyword of two characters planted at a random place; the
keyword names the class (34 classes, months 0..33), and a share of the labels (``--noise``) is drawn at
random instead, so no path reaches a perfect score. With the defaults (64 tokens, lr 1e-4, 6 % warm-up, noise
0.1, 1,536 steps) the mid-size encoder learns it to the noise's limit on both paths (docs/encoders.md).
The held-out loss and FinalScore of each path and seed come from the fold's final predictions (the
project's `Predictor`, or the Trainer's prediction for several processes), as the pipeline scores a fold.

    python -m benchmarks.learning_check --configs bert_mid_hf_default,bert_mid --seeds 42,43 --out results.jsonl
    python -m benchmarks.learning_check --tiny --configs bert_mid_hf_default,bert_mid --seeds 42   # CPU smoke

A configuration is a BERT-large training path of `benchmarks.parameters.PATHS` (the erlangshen parameters
with the path's changes) with the encoder of `ENCODERS` below; each runs in this process, one after another,
and each path and seed is a record of the experiment `benchmarks.learning_check`.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.parameters import PATHS, path_parameters
from benchmarks.records import Recorder, command_line
from benchmarks.texts import ALPHABET

MODULE = EXPERIMENT = "benchmarks.learning_check"

# A mid-size BERT (6 layers, hidden 512): learns the task in minutes on one GPU.
ENCODERS = {
    "bert_mid": {
        "architecture": "bert",
        "config": {
            "hidden_size": 512,
            "num_hidden_layers": 6,
            "num_attention_heads": 8,
            "intermediate_size": 2048,
            "max_position_embeddings": 512,
        },
    },
    # 4 layers of 256: the same task on a CPU, to choose settings that learn before spending GPU time
    "bert_small": {
        "architecture": "bert",
        "config": {
            "hidden_size": 256,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "intermediate_size": 1024,
            "max_position_embeddings": 512,
        },
    },
    "tiny": {
        "architecture": "bert",
        "config": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
    },
}
# learning-check configuration -> the training path it trains on: bert_mid for bert_large, bert_mid_hf_default
# for bert_large_hf_default
CONFIGURATIONS = {name.replace("bert_large", "bert_mid", 1): name for name in PATHS if name.startswith("bert_large")}
CLASSES = 34
KEYWORDS = [chr(0x6000 + 2 * k) + chr(0x6001 + 2 * k) for k in range(CLASSES)]  # outside ALPHABET


def planted_texts(count: int, characters: int, noise: float, seed: int) -> tuple[list[str], list[int]]:
    """Random texts, each with its class's keyword planted; ``noise`` of the labels drawn at random."""
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(count):
        label = rng.randrange(CLASSES)
        body = rng.choices(ALPHABET, k=characters - 2)
        place = rng.randrange(len(body))
        texts.append("".join(body[:place]) + KEYWORDS[label] + "".join(body[place:]))
        labels.append(rng.randrange(CLASSES) if rng.random() < noise else label)
    return texts, labels


def check(name: str, seed: int, args: argparse.Namespace, work_dir: str) -> tuple[dict, dict]:
    """Trains path ``name`` with ``seed`` on the planted-keyword task in ``work_dir``: its parameters and its
    held-out loss, FinalScore and accuracy."""
    from sentence_reduction.finetune.engine import run_fold
    from sentence_reduction.finetune.job import FoldJob
    from sentence_reduction.finetune.text import build_character_vocabulary, build_tokenizer

    model, training = path_parameters(CONFIGURATIONS[name])
    model.update(ENCODERS["tiny" if args.tiny else args.encoder], config_path=None)
    model.update(max_length=args.max_length, vocabulary_min_frequency=1)
    training["arguments"].update(
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch,
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        logging_steps=50,
        seed=seed,
        dataloader_num_workers=0,
    )
    training["checkpoint_every_minutes"] = None
    train_texts, train_labels = planted_texts(args.train, args.max_length - 2, args.noise, seed=1)
    eval_texts, eval_labels = planted_texts(args.eval, args.max_length - 2, args.noise, seed=2)
    job = FoldJob(
        name=f"learning-{name}-{seed}",
        train_texts=train_texts,
        train_labels=train_labels,
        eval_texts=eval_texts,
        eval_labels=eval_labels,
        predict_texts=eval_texts[:8],
        tokenizer=build_tokenizer(build_character_vocabulary(["".join(ALPHABET) + "".join(KEYWORDS)])),
        class_months=list(range(CLASSES)),
        model=model,
        training=training,
    )
    started = time.perf_counter()
    result = run_fold(job, Path(work_dir) / job.name)
    params = {
        "config": name,
        "path": CONFIGURATIONS[name],
        "seed": seed,
        "train_texts": args.train,
        "epochs": args.epochs,
        "noise": args.noise,
        "encoder": "tiny" if args.tiny else args.encoder,
        "max_length": args.max_length,
        "learning_rate": args.learning_rate,
        "warmup": args.warmup,
    }
    metrics = {
        "eval_loss": result.metrics["loss"],
        "final_score": result.metrics["final_score"],
        "accuracy": result.metrics["accuracy"],
        "seconds": time.perf_counter() - started,
    }
    return params, metrics


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--configs", default="bert_mid_hf_default,bert_mid", help="comma-separated: " + ", ".join(CONFIGURATIONS)
    )
    parser.add_argument("--seeds", default="42,43")
    parser.add_argument("--train", type=int, default=8192)
    parser.add_argument("--eval", type=int, default=1024)
    parser.add_argument("--epochs", type=float, default=6)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--warmup", type=float, default=0.06, help="warm-up steps, or a share of them below 1")
    parser.add_argument("--encoder", default="bert_mid", choices=[e for e in ENCODERS if e != "tiny"])
    parser.add_argument("--tiny", action="store_true", help="a tiny encoder and few texts (CPU smoke test)")
    parser.add_argument("--out", help="records appended here")
    args = parser.parse_args(argv)
    if args.tiny:
        args.train, args.eval, args.epochs, args.max_length = 64, 32, 1, 64
    for name in args.configs.split(","):
        if name not in CONFIGURATIONS:
            parser.error(f"unknown configuration {name}")
    recorder = Recorder(EXPERIMENT, command_line(MODULE, argv), args.out)
    rows = []
    with tempfile.TemporaryDirectory() as work_dir:  # a fresh fold each time: no finished result reused
        for name in args.configs.split(","):
            for seed in (int(seed) for seed in args.seeds.split(",")):
                params, metrics = check(name, seed, args, work_dir)
                recorder.log(f"{name}.seed_{seed}", params, metrics)
                rows.append((name, seed, metrics))
    print(f"{'config':<32} {'seed':>4} {'eval loss':>9} {'FinalScore':>10} {'accuracy':>8} {'s':>6}")
    for name, seed, metrics in rows:
        print(
            f"{name:<32} {seed:>4} {metrics['eval_loss']:>9.4f} {metrics['final_score']:>10.4f} "
            f"{metrics['accuracy']:>8.4f} {metrics['seconds']:>6.1f}"
        )


if __name__ == "__main__":
    main()
