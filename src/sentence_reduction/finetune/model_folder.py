"""A pretrained model folder in the Hugging Face hub's layout, checked before anything trains: its config,
its weights (read only as far as their headers), its tokenizer (whatever `AutoTokenizer` reads:
tokenizer.json, vocab.txt, a SentencePiece model) and that the tokenizer's ids fit the embeddings.

Each problem is one line naming the folder (`InputDataError`), found in well under a second for any
model size: a safetensors file's header and length, a pickled checkpoint's zip directory.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase

from sentence_reduction.input_errors import InputDataError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# A tokenizer's own files, one of which a folder must hold: without any, AutoTokenizer would build an
# empty tokenizer of the config's model type (five special tokens) and say nothing.
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "tokenizer.model",
    "sentencepiece.bpe.model",
    "spiece.model",
)
_EMBEDDINGS = "word_embeddings.weight"


def pretrained_tokenizer(folder: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer of the model folder ``folder``, once the folder is checked: `InputDataError` (one line
    naming the folder) when it has no config, no weights, weights that cannot be read, no tokenizer, or a
    tokenizer with more ids than the model's embeddings."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputDataError(str(folder), "no such model folder (model.pretrained_path)")
    config = _config(folder)
    embeddings = _checked_weights(folder)
    if embeddings is not None and embeddings != config.vocab_size:
        raise InputDataError(
            str(folder),
            f"the weights hold {embeddings} token embeddings, config.json says vocab_size {config.vocab_size}",
        )
    tokenizer = _tokenizer(folder)
    if len(tokenizer) > config.vocab_size:
        raise InputDataError(
            str(folder),
            f"the tokenizer has {len(tokenizer)} ids, more than the model's {config.vocab_size} token embeddings "
            "(config.json vocab_size)",
        )
    return tokenizer


def _config(folder: Path) -> PretrainedConfig:
    if not (folder / "config.json").is_file():
        raise InputDataError(str(folder), "no config.json: not a model folder in the hub's layout")
    try:
        return AutoConfig.from_pretrained(folder)
    except (OSError, ValueError, KeyError) as error:
        raise InputDataError(str(folder / "config.json"), f"not a readable model config ({_line(error)})") from error


def _checked_weights(folder: Path) -> int | None:
    """Check every weight file the folder names (one file, or the shards of an index) as far as its header;
    the number of token embeddings they hold, where a header says it (safetensors)."""
    shards = _weight_files(folder)
    embeddings = None
    for path in shards:
        if path.suffix != ".safetensors":
            _check_pickled(path)
            continue
        rows = _safetensors_embeddings(path)
        embeddings = rows if rows is not None else embeddings
    return embeddings


def _weight_files(folder: Path) -> list[Path]:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return [folder / name]
        index = folder / f"{name}.index.json"
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            except (ValueError, KeyError, AttributeError) as error:
                raise InputDataError(str(index), f"not a readable weight index ({_line(error)})") from error
            missing = [shard for shard in shards if not (folder / shard).is_file()]
            if missing:
                raise InputDataError(str(folder), f"{index.name} names {', '.join(missing)}, which is not there")
            return [folder / shard for shard in shards]
    raise InputDataError(str(folder), f"no weights ({' or '.join(WEIGHT_FILES)}, or a sharded index of them)")


def _safetensors_embeddings(path: Path) -> int | None:
    """The rows of the token-embedding table the file holds, if it holds it; the header and the file's
    length are checked (a truncated file fails here), no tensor is read."""
    try:
        with safe_open(str(path), framework="pt") as weights:
            names = [name for name in weights.keys() if name.endswith(_EMBEDDINGS)]  # noqa: SIM118 (not a dict)
            return weights.get_slice(names[0]).get_shape()[0] if names else None
    except (SafetensorError, OSError) as error:
        raise InputDataError(str(path), f"weights cannot be read ({_line(error)})") from error


def _check_pickled(path: Path) -> None:
    """A pickled checkpoint (pytorch_model.bin): torch's zip format, whose directory sits at the end (a
    truncated file has none), every entry within the file; an older pickle is loaded whole to check it."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                size = path.stat().st_size
                if any(entry.header_offset + entry.compress_size > size for entry in archive.infolist()):
                    raise zipfile.BadZipFile("an entry runs past the end of the file")
        else:
            torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises anything from a pickle of garbage
        raise InputDataError(str(path), f"weights cannot be read ({_line(error)})") from error


def _tokenizer(folder: Path) -> PreTrainedTokenizerBase:
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise InputDataError(str(folder), f"no tokenizer (one of {', '.join(TOKENIZER_FILES)})")
    try:
        return AutoTokenizer.from_pretrained(folder)
    except Exception as error:  # AutoTokenizer raises many kinds, from its backends and converters
        raise InputDataError(str(folder), f"the tokenizer cannot be read ({_line(error)})") from error


def _line(error: Any, longest: int = 300) -> str:
    """An exception's message on one line, its start if long."""
    line = " ".join(f"{type(error).__name__}: {error}".split())
    return line if len(line) <= longest else line[: longest - 3] + "..."
