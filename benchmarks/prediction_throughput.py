"""Final predictions of the 1.3B model, as a fold's node and the predict pipeline make them.

`predictor.Predictor` (bf16 weights on the GPU, texts in batches of similar length, the next chunk tokenised
while this one runs, the `erlangshen` eval batch) on the model built with random weights from the real
config, with the layers compiled for any shape (`default`: `training.compile_predictions`, on two model
instances in one process, as a run's folds are) or uncompiled (`eager`). Each prints the first call (which
compiles), the tokenisation time, and the steady rate on full-length texts (every batch 128 x 512 tokens, no
mask) and on the sample generator's rulings (normalised as the pipeline does: about a third shorter than 512
tokens, masked batches); each model instance is a record of the experiment `benchmarks.prediction_throughput`.

    python -m benchmarks.prediction_throughput --vocabulary /path/to/vocab.txt --out results.jsonl
    python -m benchmarks.prediction_throughput --tiny --texts 64   # CPU smoke
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from benchmarks.parameters import CONFIG_JSON, TINY_MODEL, project_parameters
from benchmarks.records import Recorder, command_line
from benchmarks.texts import generated_rulings, synthetic_texts

MODULE = EXPERIMENT = "benchmarks.prediction_throughput"
MODES = {"default": (True, 2), "eager": (False, 1)}  # name: training.compile_predictions, model instances


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocabulary", help="a vocab.txt (the real Erlangshen one); default: the texts' characters")
    parser.add_argument("--texts", type=int, default=2048, help="texts of each kind a measurement predicts")
    parser.add_argument("--tiny", action="store_true", help="a 1-layer model of the real shape family (CPU smoke)")
    parser.add_argument("--modes", default="default,eager", help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--profile", default="", help="modes whose last instance is profiled on 4 full batches")
    parser.add_argument("--out", help="records appended here")
    return parser.parse_args(argv)


def timed(predictor, texts: list[str]) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    probabilities = predictor(texts)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    assert probabilities.shape[0] == len(texts)
    return time.perf_counter() - start


def profile(predictor, texts: list[str]) -> None:
    """Prints where the GPU's time goes on ``texts``: the kernels by device time, and the idle share."""
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    ) as trace:
        wall = timed(predictor, texts)
    events = trace.key_averages()
    kernel_ms = sum(event.self_device_time_total for event in events) / 1e3
    print(events.table(sort_by="self_device_time_total", row_limit=25, max_name_column_width=90))
    print(f"PROFILE {len(texts)} texts: wall {wall * 1e3:.1f} ms, device time {kernel_ms:.1f} ms")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    from sentence_reduction.finetune.arguments import TrainingSettings, deep_merge
    from sentence_reduction.finetune.model import ModelSettings, build_model
    from sentence_reduction.finetune.predictor import Predictor
    from sentence_reduction.finetune.text import (
        TokenisedTexts,
        build_character_vocabulary,
        build_tokenizer,
        read_vocabulary,
    )

    recorder = Recorder(EXPERIMENT, command_line(MODULE, argv), args.out)
    params = project_parameters()
    model_params = dict(params["model"], config_path=str(CONFIG_JSON))
    if args.tiny:
        model_params["config_overrides"] = dict(TINY_MODEL)
    settings = ModelSettings.from_params(model_params)
    _, _, held_out, _, test = generated_rulings(0, args.texts, args.texts)
    kinds = {"full_512": synthetic_texts(args.texts, 576, seed=5), "rulings": held_out + test}
    if args.vocabulary:
        vocabulary = read_vocabulary(args.vocabulary)
    else:
        vocabulary = build_character_vocabulary([text for texts in kinds.values() for text in texts])
    tokenizer = build_tokenizer(vocabulary)
    for mode in args.modes.split(","):
        if mode not in MODES:
            raise SystemExit(f"--modes: {mode!r} is not one of {', '.join(MODES)}")
        compile_predictions, instances = MODES[mode]
        torch._dynamo.reset()
        training = TrainingSettings.from_params(
            deep_merge(params["training"], {"compile_predictions": compile_predictions})
        )
        for instance in range(instances):  # a second model, as a run's next fold: what compiled graphs save
            torch.manual_seed(instance)
            model = build_model(settings, num_labels=34, vocab_size=len(tokenizer))
            predictor = Predictor(model, tokenizer, settings, training)
            metrics = {"first_call_256_rulings_s": timed(predictor, kinds["rulings"][:256])}  # compiles, if compiled
            for kind, texts in kinds.items():
                seconds = timed(predictor, texts)
                start = time.perf_counter()
                # overlapped inside each call
                TokenisedTexts(
                    predictor.tokenizer,
                    texts,
                    settings.max_length,
                    truncation=settings.truncation,
                    head_share=settings.head_share,
                )
                metrics[f"{kind}_samples_per_s"] = len(texts) / seconds
                metrics[f"{kind}_tokenise_s"] = time.perf_counter() - start
            run_params = {
                "mode": mode,
                "model_instance": instance,
                "compile_predictions": compile_predictions,
                "eval_batch": predictor.batch_size,
                "param_dtype": str(next(model.parameters()).dtype),
                "full_512_texts": len(kinds["full_512"]),
                "rulings_texts": len(kinds["rulings"]),
                "tiny": args.tiny,
            }
            recorder.log(f"{mode}.model_{instance}", run_params, metrics)
            if mode in args.profile.split(",") and instance == instances - 1:
                profile(predictor, kinds["full_512"][: 4 * predictor.batch_size])
            del predictor, model
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
