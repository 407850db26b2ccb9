"""What one fold's fine-tuning is given and what it gives back, shared by the engine, the launcher
and the workers (which receive the job as a file); what every training job shares (`TrainingJob`)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np

from sentence_reduction.file_checks import UnusableFileError, check_file
from sentence_reduction.finetune.arguments import TrainingSettings
from sentence_reduction.finetune.model import ModelSettings
from sentence_reduction.finetune.text import tokenizer_files, tokenizer_from_files

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

_Job = TypeVar("_Job", bound="TrainingJob")


class TrainingJob:
    """What every training job shares (a fold's fine-tuning, an encoder's pretraining): its settings,
    given as settings or as the `model` and `training` parameters they are read from; its tokenizer, kept
    as the files it saves (`text.tokenizer_files`), so that the job is plain JSON for the workers of
    several processes and its fingerprint changes with the tokenizer (given a tokenizer, the job keeps
    its files); a fingerprint of the whole job, which names a finished result; its JSON file."""

    __dataclass_fields__: ClassVar[dict[str, Any]]  # each job is a dataclass (`asdict`)
    name: str
    tokenizer: dict[str, str]
    model: ModelSettings
    training: TrainingSettings

    def __post_init__(self) -> None:
        if not isinstance(self.tokenizer, dict):
            self.tokenizer = tokenizer_files(self.tokenizer)
        if isinstance(self.model, dict):
            self.model = ModelSettings.from_params(self.model)
        if isinstance(self.training, dict):
            self.training = TrainingSettings.from_params(self.training)

    def load_tokenizer(self) -> PreTrainedTokenizerBase:
        """The job's tokenizer."""
        return tokenizer_from_files(self.tokenizer)

    def fingerprint(self) -> str:
        """A hash of the whole job (data and parameters), which names a finished result."""
        payload = json.dumps(asdict(self), sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls: type[_Job], path: Path) -> _Job:
        return cls(**json.loads(path.read_text(encoding="utf-8")))


@dataclass
class FoldJob(TrainingJob):
    """Everything one fold's fine-tuning needs: its data, tokenizer and settings (`TrainingJob`)."""

    name: str
    train_texts: list[str]
    train_labels: list[int]
    eval_texts: list[str]
    eval_labels: list[int]
    predict_texts: list[str]
    tokenizer: dict[str, str]
    class_months: list[int]
    model: ModelSettings
    training: TrainingSettings


@dataclass(frozen=True)
class SavedModel:
    """A trained classifier's folder (``config.json`` + ``model.safetensors``), loaded on demand.

    A fold's model is written once, by the engine; whoever keeps it elsewhere links its files
    (`link_into`) instead of serialising gigabytes of weights again.
    """

    folder: Path

    def load(self) -> PreTrainedModel:
        """The classifier, of whatever architecture its config.json names."""
        from sentence_reduction.finetune.model import load_classifier

        return load_classifier(self.folder, use_safetensors=True)

    def exists(self) -> bool:
        return (self.folder / "config.json").is_file() and any(self.folder.glob("*.safetensors"))

    def check(self, remedy: str | None = None) -> None:
        """Raise `UnusableFileError` naming the first of its files that would not load (a missing
        or cut config or weights file, garbage in place of one), with ``remedy`` in the message."""
        weights = sorted(self.folder.glob("*.safetensors"))
        if not weights:
            raise UnusableFileError(self.folder / "model.safetensors", "missing", remedy)
        for path in [self.folder / "config.json", *weights]:
            check_file(path, remedy=remedy)

    def size(self) -> int:
        """The bytes of its config and weights."""
        return sum(path.stat().st_size for path in self._files())

    def in_memory(self) -> LoadedModel:
        """The model loaded once and kept: for a process that predicts again and again (a server)."""
        return LoadedModel(self.folder, self.load())

    def link_into(self, destination: Path) -> None:
        """The model's files (config and safetensors weights, not the tokenizer's files the Trainer
        writes beside them) in ``destination``, a new folder: hard links, or copies across file systems."""
        destination.mkdir(parents=True)
        for source in self._files():
            try:
                os.link(source, destination / source.name)
            except OSError:
                shutil.copy2(source, destination / source.name)

    def _files(self) -> list[Path]:
        files = [self.folder / "config.json", *sorted(self.folder.glob("*.safetensors"))]
        return [path for path in files if path.is_file()]


@dataclass(frozen=True)
class LoadedModel(SavedModel):
    """A `SavedModel` held in memory: `load` returns the same classifier every time."""

    module: PreTrainedModel = field(compare=False, repr=False)

    def load(self) -> PreTrainedModel:
        return self.module

    def in_memory(self) -> LoadedModel:
        return self


@dataclass
class FoldResult:
    """What a fold produced."""

    model: SavedModel
    eval_probabilities: np.ndarray
    predict_probabilities: np.ndarray
    metrics: dict[str, float]
