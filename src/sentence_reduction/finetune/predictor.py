"""A trained classifier's class probabilities for any texts (the final predictions of a fold, and the
predict pipeline)."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sentence_reduction.finetune.arguments import TrainingSettings, effective_arguments, inductor_settings
from sentence_reduction.finetune.model import ModelSettings, apply_runtime_settings, compile_layers, omits_full_masks
from sentence_reduction.finetune.text import padded_batch, tokenise
from sentence_reduction.scoring import softmax

P = ParamSpec("P")
T = TypeVar("T")


def predict_probabilities(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    settings: ModelSettings,
    training: TrainingSettings,
) -> np.ndarray:
    """Class probabilities of ``texts`` from a trained model (see `Predictor`)."""
    return Predictor(model, tokenizer, settings, training)(texts)


class Predictor:
    """A trained model's class probabilities for any texts, in the texts' order.

    A plain loop, not a Trainer: in a process that trained with DeepSpeed, a new Trainer inherits
    accelerate's process-wide DeepSpeed state and refuses ZeRO-1/2 inference ("ZeRO inference only
    makes sense with ZeRO Stage 3"). On GPU the weights are cast to bf16 when the recipe trains in
    bf16 (fp32 weights under autocast run slower) and, when ``training.compile_predictions``
    asks, the layers are compiled for any batch and length (`compile_layers`: one layer's graph, a
    few seconds, serves every layer and every fold; the whole model's compiles far longer, and static
    shapes for full batches measured no faster: docs/performance.md, benchmarks/results/history_gpu.jsonl).
    The texts go in chunks of ``CHUNK_BATCHES`` batches, longest first within a chunk (little
    padding); a background thread tokenises and pads the next chunk while the GPU runs this one, and
    a batch without padding runs without a mask. The model is modified in place.
    """

    CHUNK_BATCHES = 8  # 1,024 texts at batch 128: tokenised in about 0.15 s, run in about 2.5 s

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        settings: ModelSettings,
        training: TrainingSettings,
    ):
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        on_gpu = self.device.type == "cuda"
        arguments = effective_arguments(training, on_gpu=on_gpu)
        self.settings = settings
        self.tokenizer = tokenizer
        self.batch_size = int(arguments.get("per_device_eval_batch_size", 8))
        self.inductor_config = training.inductor_config
        model = apply_runtime_settings(model, settings).eval()
        # fp32 elsewhere: a model trained with bf16 weights (`bf16_master_weights`) is saved in bf16.
        # (transformers' @wraps types `to` as torch.nn.Module's unbound function.)
        model.to(self.device, dtype=torch.bfloat16 if on_gpu and arguments.get("bf16") else torch.float32)  # type: ignore[arg-type]
        if on_gpu and training.compile_predictions:
            compile_layers(model, dynamic=True)
        self.model = model
        if model.config.num_labels is None:
            raise ValueError("not a classifier: the model's config has no labels")
        self.num_labels = model.config.num_labels

    def __call__(self, texts: list[str]) -> np.ndarray:
        probabilities = np.zeros((len(texts), self.num_labels), dtype=np.float32)
        if not texts:
            return probabilities
        chunk = self.CHUNK_BATCHES * self.batch_size
        logits, rows = [], []
        # One chunk (a served request) is tokenised here: a thread started and joined costs milliseconds.
        tokeniser = concurrent.futures.ThreadPoolExecutor(max_workers=1) if len(texts) > chunk else _InPlace()
        with tokeniser, torch.inference_mode(), inductor_settings(self.inductor_config):
            upcoming = tokeniser.submit(self._batches, texts[:chunk])
            for start in range(0, len(texts), chunk):
                order, batches = upcoming.result()
                if start + chunk < len(texts):
                    upcoming = tokeniser.submit(self._batches, texts[start + chunk : start + 2 * chunk])
                rows.append(start + order)
                for batch in batches:  # no host sync in the loop: the GPU queue runs ahead
                    batch = {key: value.to(self.device, non_blocking=True) for key, value in batch.items()}
                    logits.append(self.model(**batch).logits.float())
        probabilities[np.concatenate(rows)] = torch.cat(logits).cpu().numpy()
        return softmax(probabilities)

    def _batches(self, texts: list[str]) -> tuple[np.ndarray, list[dict[str, torch.Tensor]]]:
        """The texts tokenised, longest first, as padded batches (pinned on GPU); and that order."""
        input_ids = tokenise(
            self.tokenizer, texts, self.settings.max_length, self.settings.truncation, self.settings.head_share
        )["input_ids"]
        order = np.argsort(-np.fromiter(map(len, input_ids), dtype=np.int64, count=len(input_ids)), kind="stable")
        on_gpu = self.device.type == "cuda"
        batches = []
        for start in range(0, len(order), self.batch_size):
            batch = padded_batch(
                [input_ids[row] for row in order[start : start + self.batch_size]],
                self.tokenizer.pad_token_id,
                multiple_of=8 if on_gpu else None,  # tensor cores, as `padding_collator`
                omit_full_mask=omits_full_masks(self.settings),
            )
            batches.append({key: value.pin_memory() if on_gpu else value for key, value in batch.items()})
        return order, batches


class _InPlace(concurrent.futures.Executor):
    """An executor that runs each call at once, in the caller's thread."""

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        future.set_result(fn(*args, **kwargs))
        return future
