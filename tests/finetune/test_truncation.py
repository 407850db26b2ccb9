"""What the transformer reads of a ruling longer than its room: the head, the tail, or both."""

import pytest

from sentence_reduction.finetune.text import TokenisedTexts, build_character_vocabulary, build_tokenizer, tokenise

TEXT = "一二三四五六七八九十"  # ten tokens, one per character
SHORT = "甲乙"


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(build_character_vocabulary([TEXT, SHORT]))


def _kept(tokenizer, encoded: dict, row: int = 0) -> str:
    return "".join(tokenizer.convert_ids_to_tokens(encoded["input_ids"][row][1:-1]))


@pytest.mark.parametrize(
    ("truncation", "head_share", "kept"),
    [("head", 0.5, "一二三四五六"), ("tail", 0.5, "五六七八九十"), ("head_tail", 0.5, "一二三八九十")],
)
def test_a_long_text_keeps_what_the_truncation_names(tokenizer, truncation, head_share, kept):
    max_length = 8  # room for six tokens beside [CLS] and [SEP]
    encoded = tokenise(tokenizer, [TEXT, SHORT], max_length, truncation, head_share)
    assert _kept(tokenizer, encoded) == kept
    first = encoded["input_ids"][0]
    assert len(first) <= max_length and first[0] == tokenizer.cls_token_id and first[-1] == tokenizer.sep_token_id
    assert _kept(tokenizer, encoded, row=1) == SHORT  # a short text is never cut
    assert encoded["attention_mask"][0] == [1] * len(first) and encoded["token_type_ids"][0] == [0] * len(first)


def test_head_share_splits_the_room(tokenizer):
    encoded = tokenise(tokenizer, [TEXT], 6, "head_tail", 0.25)  # room 4: one from the head, three from the end
    assert _kept(tokenizer, encoded) == "一八九十"


def test_the_dataset_uses_the_truncation_and_refuses_an_unknown_one(tokenizer):
    dataset = TokenisedTexts(tokenizer, [TEXT], 8, labels=[3], truncation="tail")
    assert dataset.lengths == [8] and dataset[0]["labels"] == 3
    assert _kept(tokenizer, {"input_ids": [dataset[0]["input_ids"]]}) == "五六七八九十"
    with pytest.raises(ValueError, match="truncation must be one of"):
        tokenise(tokenizer, [TEXT], 8, "middle")
