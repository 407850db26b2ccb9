"""Project datasets: rulings files read strictly, models as safetensors, atomic saves, checked loads.

Every dataset that writes does so atomically (a temporary file beside the target, then a rename), so a
run killed mid-save leaves the previous file or none, never a truncated one; a save that fills the
disk fails with one line (`DiskFullError`). What the pipeline wrote and reads back (models, the
ensemble, tables) is checked as it loads: one that does not load stops the run with one line naming
the file and the command that rebuilds it (`UnusableFileError`).
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError
from kedro_datasets.json import JSONDataset
from kedro_datasets.matplotlib import MatplotlibDataset
from kedro_datasets.pandas import CSVDataset, ParquetDataset
from kedro_datasets.pickle import PickleDataset
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from sentence_reduction.atomic import (
    disk_full_error,
    disk_full_reported,
    is_disk_full,
    size_on_disk,
    staging_path,
    written_atomically,
)
from sentence_reduction.file_checks import UnusableFileError
from sentence_reduction.finetune.job import SavedModel
from sentence_reduction.input_errors import InputDataError

# What rebuilds every file the pipeline writes and reads back (models, the ensemble, tables).
REBUILD = "rebuild it with `kedro run --pipelines=train`"

_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


class RulingsDataset(AbstractDataset[None, pd.DataFrame]):
    """A rulings file read as text columns, exactly as shipped: a CSV (the competition's `train.csv` /
    `testA.csv`), or JSON lines where the name ends in ``.json`` or ``.jsonl`` (CAIL2018's
    `data_train.json`), each object's nested keys flattened to dotted column names
    (``meta.term_of_imprisonment.imprisonment``).

    Accepts UTF-8 with or without a BOM, LF or CRLF line ends, and quoted CSV fields holding commas or
    newlines. Anything else (a GBK file, an empty file, a broken quote, a line that is not a JSON object)
    raises `InputDataError`. The frame's ``attrs["source"]`` names the file, so validation errors can
    name it too.
    """

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> pd.DataFrame:
        source = str(self._filepath)
        if not self._filepath.is_file():
            raise InputDataError(source, "file not found (check raw_data_dir, train_file and test_file)")
        text = _decode_utf8(self._filepath.read_bytes(), source)
        if not text.strip():
            raise InputDataError(source, "file is empty")
        frame = _read_json_lines(text, source) if self._filepath.suffix in _JSON_LINES else _read_csv(text, source)
        frame.columns = [str(column).strip() for column in frame.columns]
        frame.attrs["source"] = source
        return frame

    def save(self, data: None) -> None:
        raise DatasetError(f"{self._filepath} is an input: the pipeline never writes it")

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


_JSON_LINES = (".json", ".jsonl")


def _read_csv(text: str, source: str) -> pd.DataFrame:
    try:
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise InputDataError(source, f"not a readable CSV ({' '.join(str(error).split())})") from error


def _read_json_lines(text: str, source: str) -> pd.DataFrame:
    """One JSON object a line (a row is a non-blank line, counted from 1), nested objects flattened to
    dotted names, every value text as a CSV field would be: a string as it is, any other value as JSON
    (``12``, ``true``, ``["盗窃"]``), a key a row lacks ``""``."""
    lines = [line for line in text.splitlines() if line.strip()]
    records = []
    for row, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputDataError(source, f"not a JSON line ({error.msg} at column {error.colno})", row) from error
        if not isinstance(record, dict):
            raise InputDataError(source, f"a JSON line must be an object, not {type(record).__name__}", row)
        records.append(_flattened(record))
    return pd.DataFrame.from_records(records).fillna("")


def _flattened(record: dict[str, Any], prefix: str = "") -> dict[str, str]:
    fields = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            fields.update(_flattened(value, f"{name}."))
        else:
            fields[name] = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return fields


def _decode_utf8(raw: bytes, source: str) -> str:
    if raw.startswith(_UTF16_BOMS):
        raise InputDataError(source, "file is UTF-16; save it as UTF-8")
    raw = raw.removeprefix(_UTF8_BOM)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        hint = "it looks GBK/GB18030-encoded: " if _decodes_as_gb18030(raw) else ""
        raise InputDataError(
            source,
            f"not valid UTF-8 at byte {error.start} ({hint}convert it, e.g. iconv -f GB18030 -t UTF-8)",
            row=line - 1,
        ) from error


def _decodes_as_gb18030(raw: bytes) -> bool:
    try:
        raw.decode("gb18030")
    except UnicodeDecodeError:
        return False
    return True


class _AtomicSave:
    """Mixin for fsspec-based kedro-datasets: write to a hidden temporary path, then rename. Through
    fsspec rather than `atomic.written_atomically`, so a catalog entry on any file system keeps it.
    A load that fails names the file and what rebuilds it."""

    # What the kedro-dataset it is mixed into (after it in the MRO) provides.
    _fs: Any  # its fsspec file system
    _get_save_path: Callable[[], PurePosixPath]
    _get_load_path: Callable[[], PurePosixPath]

    def save(self, data: Any) -> None:
        final_path = self._get_save_path()
        temporary_path = staging_path(final_path)
        self._get_save_path = lambda: temporary_path  # the parent's save writes where we point it
        try:
            super().save(data)  # type: ignore[misc]  # the dataset's own save (untyped kedro-datasets)
            self._fs.mv(str(temporary_path), str(final_path))
        except Exception as error:
            folder = Path(final_path).parent
            written = size_on_disk(Path(temporary_path))  # what it took until the disk filled (a local file)
            if is_disk_full(error, folder, max(written, 1)):
                raise disk_full_error(f"saving {final_path}", folder, written, lower_bound=True) from error
            raise
        finally:
            del self._get_save_path
            if self._fs.exists(str(temporary_path)):
                self._fs.rm(str(temporary_path), recursive=True)

    def load(self) -> Any:
        try:
            return super().load()  # type: ignore[misc]  # the dataset's own load
        except DatasetError as error:
            path = Path(self._get_load_path())
            problem = "missing" if not self._fs.exists(str(path)) else f"does not load ({_cause(error)})"
            raise UnusableFileError(path, problem, REBUILD) from error


def _cause(error: BaseException) -> str:
    cause = error.__cause__ or error
    return f"{type(cause).__name__}: {' '.join(str(cause).split())[:200]}"


class AtomicCSVDataset(_AtomicSave, CSVDataset):
    """`pandas.CSVDataset`, saved atomically."""


class AtomicParquetDataset(_AtomicSave, ParquetDataset):
    """`pandas.ParquetDataset`, saved atomically."""


class AtomicJSONDataset(_AtomicSave, JSONDataset):
    """`json.JSONDataset`, saved atomically."""


class AtomicPickleDataset(_AtomicSave, PickleDataset):
    """`pickle.PickleDataset` (fitted scikit-learn models, with the joblib backend), saved atomically."""


class AtomicMatplotlibDataset(_AtomicSave, MatplotlibDataset):
    """`matplotlib.MatplotlibDataset` (a single figure), saved atomically."""


class SequenceClassifierDataset(AbstractDataset[SavedModel, SavedModel]):
    """A trained sequence classifier in a folder: `config.json` + `model.safetensors`.

    Saved by linking the files the engine wrote (a copy only across file systems: the weights are
    written once) into a temporary folder that then replaces the old one, so a crash leaves either
    the previous model or the new one. Loaded as a `SavedModel`, read with safetensors only (no
    pickle) when its user loads it.
    """

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> SavedModel:
        model = SavedModel(self._filepath)
        model.check(remedy=REBUILD)
        return model

    def save(self, data: SavedModel) -> None:
        with disk_full_reported(f"saving the model in {self._filepath}", self._filepath.parent, data.size):
            with written_atomically(self._filepath) as staging:
                data.link_into(staging)

    def _exists(self) -> bool:
        return SavedModel(self._filepath).exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


class TokenizerDataset(AbstractDataset[PreTrainedTokenizerBase, PreTrainedTokenizerBase]):
    """A tokenizer in a folder, as its `save_pretrained` writes it (tokenizer.json, tokenizer_config.json...),
    read back with `AutoTokenizer`: any tokenizer, WordPiece or SentencePiece. Saved into a temporary
    folder that then replaces the old one, so a crash leaves the previous tokenizer or the new one."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> PreTrainedTokenizerBase:
        if not self._exists():
            raise UnusableFileError(self._filepath, "missing", REBUILD)
        try:
            return AutoTokenizer.from_pretrained(self._filepath)
        except Exception as error:  # a cut-short or garbled file: the tokenizers library's own errors vary
            raise UnusableFileError(self._filepath, f"does not load ({_cause(error)})", REBUILD) from error

    def save(self, data: PreTrainedTokenizerBase) -> None:
        with disk_full_reported(
            f"saving the tokenizer in {self._filepath}", self._filepath.parent, lambda: size_on_disk(self._filepath)
        ):
            with written_atomically(self._filepath) as staging:
                data.save_pretrained(staging)

    def _exists(self) -> bool:
        return (self._filepath / "tokenizer_config.json").is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


class ModelFolderDataset(AbstractDataset[Path, Path]):
    """A model folder in the hub's layout (config.json, weights, the tokenizer's files) that a run wrote,
    such as a pretraining's: saved by linking every file of the folder it is given (a copy only across
    file systems) into a temporary folder that then replaces the old one; loaded as its path, which a
    candidate's `model.pretrained_path` names."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> Path:
        if not self._exists():
            raise DatasetError(f"no model folder at {self._filepath}")
        return self._filepath

    def save(self, data: Path) -> None:
        with written_atomically(self._filepath) as staging:
            try:
                shutil.copytree(data, staging, copy_function=os.link)
            except OSError:  # another file system: copies
                shutil.rmtree(staging, ignore_errors=True)
                shutil.copytree(data, staging)

    def _exists(self) -> bool:
        return (self._filepath / "config.json").is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


__all__ = [
    "AtomicCSVDataset",
    "AtomicJSONDataset",
    "AtomicMatplotlibDataset",
    "AtomicParquetDataset",
    "AtomicPickleDataset",
    "ModelFolderDataset",
    "RulingsDataset",
    "SequenceClassifierDataset",
    "TokenizerDataset",
]
