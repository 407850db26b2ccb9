"""Tokenizers (a pretrained folder's, or a character vocabulary's), tokenised datasets and the padding
collator; any `PreTrainedTokenizerBase` (WordPiece, SentencePiece, with or without token type ids)."""

from __future__ import annotations

import tempfile
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, BertTokenizer, DataCollatorWithPadding, PreTrainedTokenizerBase
from transformers.models.bert.tokenization_bert_legacy import BasicTokenizer

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_character_vocabulary(texts: Iterable[str], min_frequency: int = 1) -> list[str]:
    """A WordPiece vocabulary of single characters, enough for BertTokenizer to spell every text.

    BertTokenizer splits CJK characters and punctuation apart but keeps runs of digits or Latin
    letters as words, which WordPiece then spells as ``c``, ``##c``, ``##c``...; so each character is
    counted in the first and in a continuation position.
    """
    splitter = BasicTokenizer(do_lower_case=True, tokenize_chinese_chars=True)
    counts: Counter[str] = Counter()
    for text in texts:
        for word in splitter.tokenize(text):
            counts[word[0]] += 1
            counts.update("##" + character for character in word[1:])
    characters = sorted(token for token, count in counts.items() if count >= min_frequency)
    return SPECIAL_TOKENS + characters


def read_vocabulary(path: str | Path) -> list[str]:
    """Tokens of a BERT ``vocab.txt``, one per line, in id order."""
    return Path(path).read_text(encoding="utf-8").splitlines()


def build_tokenizer(vocabulary: Sequence[str]) -> BertTokenizer:
    """A Chinese BERT tokenizer (lower-casing, CJK characters split) over ``vocabulary``: the tokenizer
    of a model built from a config."""
    # transformers 5 takes the vocabulary itself; the v4 keyword vocab_file= is silently ignored.
    return BertTokenizer(
        vocab=OrderedDict((token, index) for index, token in enumerate(vocabulary)),
        do_lower_case=True,
        tokenize_chinese_chars=True,
    )


def tokenizer_files(tokenizer: PreTrainedTokenizerBase) -> dict[str, str]:
    """The files `save_pretrained` writes for ``tokenizer`` (tokenizer.json, tokenizer_config.json...),
    name -> text: the whole tokenizer as JSON, for a job file and its fingerprint."""
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        files = {}
        for path in sorted(Path(folder).iterdir()):
            try:
                files[path.name] = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(
                    f"{type(tokenizer).__name__} saves {path.name}, not text: only a tokenizer that transformers "
                    "saves as tokenizer.json can be used"
                ) from error
        return files


def tokenizer_from_files(files: dict[str, str]) -> PreTrainedTokenizerBase:
    """The tokenizer `tokenizer_files` wrote, read back with `AutoTokenizer`."""
    with tempfile.TemporaryDirectory() as folder:
        for name, text in files.items():
            (Path(folder) / name).write_text(text, encoding="utf-8")
        return AutoTokenizer.from_pretrained(folder)


TRUNCATIONS = ("head", "tail", "head_tail")


def tokenise(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_length: int,
    truncation: str = "head",
    head_share: float = 0.5,
) -> dict[str, list[list[int]]]:
    """The model's inputs of each text (``input_ids``, ``attention_mask`` and, where the tokenizer makes
    them, ``token_type_ids``), at most ``max_length`` tokens with the tokenizer's special tokens. A
    longer text keeps its ``head``, its ``tail``, or (``head_tail``) the first ``head_share`` of the room
    and the rest from its end: a ruling states the sentence at its head and the prison's proposal and
    the court's reasons toward its end."""
    if truncation not in TRUNCATIONS:
        raise ValueError(f"model truncation must be one of {TRUNCATIONS}, not {truncation!r}")
    if truncation == "head":
        return dict(tokenizer(list(texts), truncation=True, max_length=max_length))
    encoded = tokenizer(list(texts), return_special_tokens_mask=True, verbose=False)
    inputs = {key: values for key, values in encoded.items() if key != "special_tokens_mask"}
    for row, special in enumerate(encoded["special_tokens_mask"]):
        # The tokenizer's own special tokens around the text ([CLS] ... [SEP], <s> ... </s>) stay.
        lead = next((index for index, flag in enumerate(special) if not flag), len(special))
        trail = next((index for index, flag in enumerate(reversed(special[lead:])) if not flag), 0)
        room = max_length - lead - trail
        if len(special) - lead - trail <= room:
            continue
        head = round(room * head_share) if truncation == "head_tail" else 0
        tail_start = len(special) - trail - (room - head)
        for values in inputs.values():
            values[row] = values[row][: lead + head] + values[row][tail_start:]
    return inputs


class TokenisedTexts(torch.utils.data.Dataset):
    """Texts tokenised once up front (cut to ``max_length`` as ``truncation`` says), with optional class ids."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        texts: Sequence[str],
        max_length: int,
        labels: Sequence[int] | None = None,
        truncation: str = "head",
        head_share: float = 0.5,
    ):
        self.encodings = tokenise(tokenizer, texts, max_length, truncation, head_share)
        self.labels = None if labels is None else [int(label) for label in labels]

    def __len__(self) -> int:
        return len(self.encodings["input_ids"])

    def __getitem__(self, index: int) -> dict[str, list[int] | int]:
        item = {key: values[index] for key, values in self.encodings.items()}
        if self.labels is not None:
            item["labels"] = self.labels[index]
        return item

    @property
    def lengths(self) -> list[int]:
        """Token count of each text, for length-grouped batching."""
        return [len(ids) for ids in self.encodings["input_ids"]]


@dataclass
class PaddingCollator(DataCollatorWithPadding):
    """Dynamic padding; with ``omit_full_mask``, a batch that needed no padding has no attention mask."""

    omit_full_mask: bool = False

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = super().__call__(features)
        if self.omit_full_mask and "attention_mask" in batch and bool(batch["attention_mask"].all()):
            del batch["attention_mask"]
        return batch


def padding_collator(tokenizer: PreTrainedTokenizerBase, on_gpu: bool, omit_full_mask: bool = False) -> PaddingCollator:
    """Dynamic padding to the longest text of each batch (to a multiple of 8 on GPU for tensor cores).

    ``omit_full_mask``: leave out the attention mask of a batch without padding, for a model that
    then attends everywhere with no mask (`attention.MegatronBertModelUnmaskedWhenUnpadded`).
    """
    return PaddingCollator(tokenizer, pad_to_multiple_of=8 if on_gpu else None, omit_full_mask=omit_full_mask)


def padded_batch(
    input_ids: Sequence[Sequence[int]], pad_token_id: int, multiple_of: int | None, omit_full_mask: bool
) -> dict[str, torch.Tensor]:
    """Token ids padded to the longest row (rounded up to ``multiple_of``), for inference.

    The attention mask comes from the lengths, and is left out when no row needed padding and
    ``omit_full_mask``. There are no token type ids: they are zeros for one-segment texts, which the
    model assumes when they are absent. About 20x faster than the tokenizer's ``pad`` at 128 x 512,
    which took longer than the GPU on a batch when predictions ran on the same thread.
    """
    lengths = np.fromiter((len(row) for row in input_ids), dtype=np.int64, count=len(input_ids))
    longest = int(lengths.max(initial=0))
    width = -(-longest // multiple_of) * multiple_of if multiple_of else longest
    ids = np.full((len(input_ids), width), pad_token_id, dtype=np.int64)
    for row, values in enumerate(input_ids):
        ids[row, : len(values)] = values
    batch = {"input_ids": torch.from_numpy(ids)}
    if not (omit_full_mask and bool((lengths == width).all())):
        batch["attention_mask"] = torch.from_numpy((np.arange(width) < lengths[:, None]).astype(np.int64))
    return batch
