"""Tokenizers (a pretrained folder's, or a character vocabulary's), tokenised datasets and the collators
(padding; masking for masked-LM pretraining); any `PreTrainedTokenizerBase` (WordPiece, SentencePiece,
with or without token type ids)."""

from __future__ import annotations

import tempfile
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoTokenizer,
    BertTokenizer,
    DataCollatorForLanguageModeling,
    DataCollatorWithPadding,
    PreTrainedTokenizerBase,
)
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
        lead, trail = _special_ends(special)  # [CLS] ... [SEP], <s> ... </s>: they stay
        room = max_length - lead - trail
        if len(special) - lead - trail <= room:
            continue
        head = round(room * head_share) if truncation == "head_tail" else 0
        tail_start = len(special) - trail - (room - head)
        for values in inputs.values():
            values[row] = values[row][: lead + head] + values[row][tail_start:]
    return inputs


def _special_ends(special_tokens_mask: Sequence[int]) -> tuple[int, int]:
    """How many of the tokenizer's special tokens open and close an encoded text."""
    lead = next((index for index, flag in enumerate(special_tokens_mask) if not flag), len(special_tokens_mask))
    trail = next((index for index, flag in enumerate(reversed(special_tokens_mask[lead:])) if not flag), 0)
    return lead, trail


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
        item: dict[str, list[int] | int] = {key: values[index] for key, values in self.encodings.items()}
        if self.labels is not None:
            item["labels"] = self.labels[index]
        return item

    @property
    def lengths(self) -> list[int]:
        """Token count of each text, for length-grouped batching."""
        return [len(ids) for ids in self.encodings["input_ids"]]


class MaskedLanguageTexts(torch.utils.data.Dataset):
    """Texts for masked-LM training, tokenised once up front and cut into pieces of at most ``max_length``
    tokens, each between the tokenizer's special tokens: a long text is read whole, piece after piece.
    With ``word_offsets`` each piece keeps where its tokens stand in the text (``offset_mapping``), for
    whole-word masking (`MaskingCollator`). Pieces are kept as numpy arrays: the texts of a competition
    (75,000 rulings, 45 million tokens) would take gigabytes as lists of Python ints."""

    TOKENISED_AT_ONCE = 2048  # texts: bounds the tokenizer's own lists

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int, word_offsets: bool = False
    ):
        self.pieces: list[dict[str, np.ndarray]] = []
        keys = ["input_ids", "special_tokens_mask", *(["offset_mapping"] if word_offsets else [])]
        for start in range(0, len(texts), self.TOKENISED_AT_ONCE):
            encoded = tokenizer(
                list(texts[start : start + self.TOKENISED_AT_ONCE]),
                return_special_tokens_mask=True,
                return_offsets_mapping=word_offsets,
                verbose=False,
            )
            for row, special in enumerate(encoded["special_tokens_mask"]):
                lead, trail = _special_ends(special)
                end = len(special) - trail
                room = max_length - lead - trail
                for first in range(lead, end, room):
                    self.pieces.append(
                        {
                            key: np.asarray(
                                encoded[key][row][:lead]
                                + encoded[key][row][first : min(first + room, end)]
                                + encoded[key][row][end:],
                                dtype=np.int32,
                            )
                            for key in keys
                        }
                    )

    def __len__(self) -> int:
        return len(self.pieces)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return dict(self.pieces[index])

    @property
    def lengths(self) -> list[int]:
        """Token count of each piece."""
        return [len(piece["input_ids"]) for piece in self.pieces]


@dataclass
class PaddingCollator(DataCollatorWithPadding):
    """Dynamic padding; with ``omit_full_mask``, a batch that needed no padding has no attention mask."""

    omit_full_mask: bool = False

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        return _without_full_mask(super().__call__(features), self.omit_full_mask)


@dataclass
class MaskingCollator(DataCollatorForLanguageModeling):
    """Masked-LM batches: `DataCollatorForLanguageModeling`'s dynamic padding and masking, of whole words
    with ``whole_word_mask`` (a word: tokens with no gap between them in the text, such as a word of
    word-segmented text; the features carry their ``offset_mapping``, padded here since the tokenizer's
    ``pad`` does not); with ``omit_full_mask``, a batch that needed no padding has no attention mask."""

    omit_full_mask: bool = False

    def torch_call(self, examples: list[Any]) -> dict[str, torch.Tensor]:  # a dict of features each
        offsets = [example.pop("offset_mapping", None) for example in examples]
        self._offsets = _padded_offsets(offsets, self.pad_to_multiple_of) if self.whole_word_mask else None
        return _without_full_mask(super().torch_call(examples), self.omit_full_mask)

    def torch_mask_tokens(
        self, inputs: torch.Tensor, special_tokens_mask: Any = None, offset_mapping: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        offsets = self._offsets if offset_mapping is None else offset_mapping
        return super().torch_mask_tokens(inputs, special_tokens_mask=special_tokens_mask, offset_mapping=offsets)


def _padded_offsets(offsets: list[np.ndarray], multiple_of: int | None) -> np.ndarray:
    longest = max(len(row) for row in offsets)
    width = -(-longest // multiple_of) * multiple_of if multiple_of else longest
    padded = np.zeros((len(offsets), width, 2), dtype=np.int64)
    for row, values in enumerate(offsets):
        padded[row, : len(values)] = values
    return padded


def _without_full_mask(batch: dict[str, torch.Tensor], omit_full_mask: bool) -> dict[str, torch.Tensor]:
    if omit_full_mask and "attention_mask" in batch and bool(batch["attention_mask"].all()):
        del batch["attention_mask"]
    return batch


def padding_collator(tokenizer: PreTrainedTokenizerBase, on_gpu: bool, omit_full_mask: bool = False) -> PaddingCollator:
    """Dynamic padding to the longest text of each batch (to a multiple of 8 on GPU for tensor cores).

    ``omit_full_mask``: leave out the attention mask of a batch without padding, for a model that
    then attends everywhere with no mask (`attention.MegatronBertModelUnmaskedWhenUnpadded`).
    """
    return PaddingCollator(tokenizer, pad_to_multiple_of=8 if on_gpu else None, omit_full_mask=omit_full_mask)


def masking_collator(
    tokenizer: PreTrainedTokenizerBase,
    on_gpu: bool,
    mask_probability: float,
    whole_word_mask: bool,
    seed: int,
    omit_full_mask: bool = False,
) -> MaskingCollator:
    """Masked-LM batches (`MaskingCollator`): ``mask_probability`` of the tokens (or of the words) to
    predict, of which 80 % replaced by the mask token, 10 % by a random token, 10 % kept (BERT's recipe;
    whole words are all replaced by the mask token, as transformers does); padded as `padding_collator`."""
    replace: dict[str, Any] = {"mask_replace_prob": 1.0, "random_replace_prob": 0.0} if whole_word_mask else {}
    return MaskingCollator(
        tokenizer,
        mlm_probability=mask_probability,
        whole_word_mask=whole_word_mask,
        pad_to_multiple_of=8 if on_gpu else None,
        seed=seed,
        omit_full_mask=omit_full_mask,
        **replace,
    )


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
