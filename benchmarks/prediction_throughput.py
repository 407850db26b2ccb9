"""Final predictions of the 1.3B model, as a fold's node and the predict pipeline make them.

`predictor.Predictor` (bf16 weights on GPU, texts in batches of similar length, the next chunk
tokenised while this one runs, the `erlangshen` eval batch) on the model built with random weights
from the real config, in each of `--modes` (below), on one or two model instances in one process
(as a run's folds are). For each it prints the first call (which compiles), the tokenisation time,
and the steady rate on full-length texts (every batch 128 x 512 tokens, no mask) and on the sample
generator's rulings (normalised as the pipeline does: about a third shorter than 512 tokens, masked
batches), and appends one JSON line per measurement to `--out`.

    python benchmarks/prediction_throughput.py --vocabulary /path/to/vocab.txt --out results.jsonl
    python benchmarks/prediction_throughput.py --tiny --texts 64   # CPU smoke

Modes (name: what is compiled, model instances):
    eager: nothing, 1
    layers_dynamic: the layers, for any shape (`training.compile_predictions`, the default), 2
    layers_dynamic_chunk4: the same, in chunks of 4 batches instead of Predictor's 8, 1
    layers_automatic: the layers, static for the first shape seen and then for any, 2
    whole_automatic: the whole model, torch.compile's default shapes (the 2026-12-01 probe), 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from fold_job import rulings  # noqa: E402
from train_throughput import (  # noqa: E402
    CONFIG_JSON,
    TINY_MODEL,
    deep_merge,
    device_description,
    emit,
    project_parameters,
    synthetic_texts,
)

MODES = {  # name: compile_predictions, what the benchmark compiles itself (the "whole" model, or the
    # layers with "automatic" shapes), model instances, batches in a chunk (None: Predictor's own)
    "eager": (False, None, 1, None),
    "layers_dynamic": (True, None, 2, None),
    "layers_dynamic_chunk4": (True, None, 1, 4),
    "layers_automatic": (False, "automatic", 2, None),
    "whole_automatic": (False, "whole", 1, None),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--vocabulary", default=str(ROOT.parent / "shared/reference/erlangshen-megatronbert-1.3b/vocab.txt")
    )
    parser.add_argument("--texts", type=int, default=2048, help="texts of each kind a measurement predicts")
    parser.add_argument("--tiny", action="store_true", help="a 1-layer model of the real shape family (CPU smoke)")
    parser.add_argument("--modes", default="eager,layers_dynamic,layers_automatic", help=f"of {', '.join(MODES)}")
    parser.add_argument("--profile", default="", help="modes whose last instance is profiled on 4 full batches")
    parser.add_argument("--deadline", type=float, default=0, help="seconds after which no new mode starts (0: none)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/prediction_throughput.jsonl"))
    return parser.parse_args(argv)


def timed(predictor, texts: list[str]) -> float:
    import torch

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
    import torch

    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    ) as trace:
        wall = timed(predictor, texts)
    events = trace.key_averages()
    kernel_ms = sum(event.self_device_time_total for event in events) / 1e3
    print(events.table(sort_by="self_device_time_total", row_limit=25, max_name_column_width=90))
    print(f"PROFILE {len(texts)} texts: wall {wall * 1e3:.1f} ms, device time {kernel_ms:.1f} ms")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    from sentence_reduction.finetune.arguments import TrainingSettings
    from sentence_reduction.finetune.model import ModelSettings, build_model, compile_layers
    from sentence_reduction.finetune.predictor import Predictor
    from sentence_reduction.finetune.text import TokenisedTexts, build_tokenizer, read_vocabulary

    params = project_parameters()
    tokenizer = build_tokenizer(read_vocabulary(args.vocabulary))
    model_params = dict(params["model"], config_path=str(CONFIG_JSON))
    if args.tiny:
        model_params["config_overrides"] = dict(TINY_MODEL)
    settings = ModelSettings.from_params(model_params)
    _, _, held_out, _, test = rulings(argparse.Namespace(train_rows=0, eval_rows=args.texts, test_rows=args.texts))
    kinds = {"full_512": synthetic_texts(args.texts, 576, seed=5), "rulings": held_out + test}
    device = device_description()
    started = time.perf_counter()
    for mode in args.modes.split(","):
        compile_predictions, compile_here, instances, chunk_batches = MODES[mode]
        if args.deadline and time.perf_counter() - started > args.deadline:
            emit({"benchmark": "prediction_throughput", "mode": mode, "skipped": "deadline"}, args.out)
            continue
        torch._dynamo.reset()
        training = TrainingSettings.from_params(
            deep_merge(params["training"], {"compile_predictions": compile_predictions})
        )
        for instance in range(instances):  # a second model, as a run's next fold: what compiled graphs save
            torch.manual_seed(instance)
            model = build_model(settings, num_labels=34, vocab_size=len(tokenizer))
            predictor = Predictor(model, tokenizer, settings, training)
            predictor.CHUNK_BATCHES = chunk_batches or predictor.CHUNK_BATCHES
            if compile_here == "whole":
                model.compile()
            elif compile_here == "automatic":
                compile_layers(model, dynamic=None)
            first_s = timed(predictor, kinds["rulings"][:256])  # compiles, when compiled
            record = {
                "benchmark": "prediction_throughput",
                "mode": mode,
                "model_instance": instance,
                "first_call_256_rulings_s": round(first_s, 2),
                "eval_batch": predictor.batch_size,
                "param_dtype": str(next(model.parameters()).dtype),
                **device,
            }
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
                tokenise_s = time.perf_counter() - start
                record[f"{kind}_texts"] = len(texts)
                record[f"{kind}_samples_per_s"] = round(len(texts) / seconds, 1)
                record[f"{kind}_tokenise_s"] = round(tokenise_s, 2)
            emit(record, args.out)
            if mode in args.profile.split(",") and instance == instances - 1:
                profile(predictor, kinds["full_512"][: 4 * predictor.batch_size])
            del predictor, model
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
