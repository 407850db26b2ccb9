"""Does a training path learn? A planted-keyword task, trained from random weights through `engine.run_fold`.

Each text is random CJK characters with one keyword of two characters planted at a random place; the
keyword names the class (34 classes, months 0..33), and a share of the labels (``--noise``) is drawn at
random instead, so no path reaches a perfect score. With the defaults (64 tokens, lr 1e-4, 6 % warm-up, noise
0.1, 1,536 steps) the mid-size encoder learns it to the noise's limit on both paths (docs/encoders.md).
The held-out loss and FinalScore of each path and seed come from the fold's final predictions (the
project's `Predictor`, or the Trainer's prediction for several processes), as the pipeline scores a fold.

    python benchmarks/learning_check.py --configs bert_mid_hf_default,bert_mid --seeds 42,43 --out results.jsonl
    # CPU smoke test of the script itself
    python benchmarks/learning_check.py --tiny --configs bert_mid_hf_default,bert_mid --seeds 42

Configurations are those of `train_throughput.CONFIGS` (the erlangshen parameters with their changes)
with the encoder of `ENCODERS` below; each runs in this process, one after another.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import ALPHABET, CONFIGS, ROOT, configured_parameters, device_description  # noqa: E402

sys.path.insert(0, str(ROOT / "src"))

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
# learning-check configuration -> the throughput configuration whose path it trains on: bert_mid for
# bert_large, bert_mid_hf_default for bert_large_hf_default, bert_mid_<change> for bert_large_<change>
PATHS = {name.replace("bert_large", "bert_mid", 1): name for name in CONFIGS if name.startswith("bert_large")}
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


def check(name: str, seed: int, args: argparse.Namespace) -> dict:
    from sentence_reduction.finetune.engine import run_fold
    from sentence_reduction.finetune.job import FoldJob
    from sentence_reduction.finetune.text import build_character_vocabulary, build_tokenizer

    model, training = configured_parameters(PATHS[name])
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
    result = run_fold(job, Path(args.workdir) / job.name)
    return {
        "config": name,
        "path_of": PATHS[name],
        "seed": seed,
        "eval_loss": round(result.metrics["loss"], 4),
        "final_score": round(result.metrics["final_score"], 4),
        "accuracy": round(result.metrics["accuracy"], 4),
        "seconds": round(time.perf_counter() - started, 1),
        "train_texts": args.train,
        "epochs": args.epochs,
        "noise": args.noise,
        "encoder": "tiny" if args.tiny else args.encoder,
        "max_length": args.max_length,
        "learning_rate": args.learning_rate,
        "warmup": args.warmup,
        **device_description(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--configs", default="bert_mid_hf_default,bert_mid", help="comma-separated: " + ", ".join(PATHS)
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
    parser.add_argument("--out", default="benchmarks/results.jsonl")
    parser.add_argument("--workdir", default="/tmp/learning_check")
    args = parser.parse_args(argv)
    if args.tiny:
        args.train, args.eval, args.epochs, args.max_length = 64, 32, 1, 64
    rows = []
    for name in args.configs.split(","):
        if name not in PATHS:
            parser.error(f"unknown configuration {name}")
        for seed in (int(seed) for seed in args.seeds.split(",")):
            record = check(name, seed, args)
            print("RESULT " + json.dumps(record, sort_keys=True), flush=True)
            with open(args.out, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, sort_keys=True) + "\n")
            rows.append(record)
    print(f"{'config':<32} {'seed':>4} {'eval loss':>9} {'FinalScore':>10} {'accuracy':>8} {'s':>6}")
    for row in rows:
        print(
            f"{row['config']:<32} {row['seed']:>4} {row['eval_loss']:>9.4f} {row['final_score']:>10.4f} "
            f"{row['accuracy']:>8.4f} {row['seconds']:>6.1f}"
        )


if __name__ == "__main__":
    main()
