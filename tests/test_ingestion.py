"""Ingestion: the competition's files read as shipped; bad input stops with one line naming file,
row and field; documented oddities are handled with a warning."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pyarrow
import pytest

from sentence_reduction.datasets import RulingsCSVDataset
from sentence_reduction.input_errors import find_input_error
from sentence_reduction.pipelines.data.ingestion import validate_rulings
from sentence_reduction.pipelines.data.normalisation import mask_criminal_name, normalise_rulings

COLUMNS = {"id": "id", "text": "fact", "label": "label"}
VALIDATION = {"max_label_months": 600, "max_text_chars": 20000}
RULING = "罪犯张三，男，1980年xx月xx日出生，因盗窃罪判处有期徒刑五年。张三获得表扬3次。"
GOOD_TRAIN = f"id,fact,label\nid_0,{RULING},6\nid_1,{RULING},8\nid_2,{RULING},0\n"
GOOD_TEST = f"id,fact\nid_3,{RULING}\nid_4,{RULING}\n"


def _load(folder: Path, train: bytes | str | None = GOOD_TRAIN, test: bytes | str | None = GOOD_TEST):
    for name, content in [("train.csv", train), ("testA.csv", test)]:
        if content is not None:
            data = content.encode("utf-8") if isinstance(content, str) else content
            (folder / name).write_bytes(data)
    train_raw = RulingsCSVDataset(str(folder / "train.csv")).load()
    test_raw = RulingsCSVDataset(str(folder / "testA.csv")).load()
    return validate_rulings(train_raw, test_raw, COLUMNS, VALIDATION)


BAD_INPUTS = [
    # (case, train, test, file, row, field, words in the message)
    ("missing label column", "id,fact\nid_0,文本\n", GOOD_TEST, "train.csv", 0, "label", "missing column"),
    ("missing text column", "id,text,label\nid_0,文本,3\n", GOOD_TEST, "train.csv", 0, "fact", "missing column"),
    ("empty file", "", GOOD_TEST, "train.csv", None, None, "empty"),
    ("whitespace-only file", "\n\n  \n", GOOD_TEST, "train.csv", None, None, "empty"),
    ("header only", "id,fact,label\n", GOOD_TEST, "train.csv", None, None, "no rows"),
    ("empty text", f"id,fact,label\nid_0,{RULING},3\nid_1,  ,4\n", GOOD_TEST, "train.csv", 2, "fact", "empty text"),
    ("decimal label", f"id,fact,label\nid_0,{RULING},3.5\n", GOOD_TEST, "train.csv", 1, "label", "whole number"),
    (
        "word label",
        f"id,fact,label\nid_0,{RULING},3\nid_1,{RULING},六\n",
        GOOD_TEST,
        "train.csv",
        2,
        "label",
        "whole number",
    ),
    ("missing label", f"id,fact,label\nid_0,{RULING},\n", GOOD_TEST, "train.csv", 1, "label", "whole number"),
    ("negative label", f"id,fact,label\nid_0,{RULING},-2\n", GOOD_TEST, "train.csv", 1, "label", "outside"),
    ("absurd label", f"id,fact,label\nid_0,{RULING},100000\n", GOOD_TEST, "train.csv", 1, "label", "outside"),
    (
        "duplicate id",
        f"id,fact,label\nid_0,{RULING},3\nid_0,{RULING},4\n",
        GOOD_TEST,
        "train.csv",
        2,
        "id",
        "duplicate",
    ),
    ("empty id", f"id,fact,label\n,{RULING},3\n", GOOD_TEST, "train.csv", 1, "id", "empty id"),
    ("test id in train", GOOD_TRAIN, f"id,fact\nid_9,{RULING}\nid_1,{RULING}\n", "testA.csv", 2, "id", "also appears"),
    ("duplicate test id", GOOD_TRAIN, f"id,fact\nid_7,{RULING}\nid_7,{RULING}\n", "testA.csv", 2, "id", "duplicate"),
    ("empty test text", GOOD_TRAIN, 'id,fact\nid_7,""\n', "testA.csv", 1, "fact", "empty text"),
    ("test without text column", GOOD_TRAIN, "id,content\nid_7,文本\n", "testA.csv", 0, "fact", "missing column"),
    ("GBK-encoded train", GOOD_TRAIN.encode("gbk"), GOOD_TEST, "train.csv", 1, None, "GBK"),
    ("UTF-16 test", GOOD_TRAIN, GOOD_TEST.encode("utf-16"), "testA.csv", None, None, "UTF-16"),
    ("unterminated quote", f'id,fact,label\nid_0,"{RULING},3\n', GOOD_TEST, "train.csv", None, None, "CSV"),
    ("missing testA.csv", GOOD_TRAIN, None, "testA.csv", None, None, "not found"),
]


@pytest.mark.parametrize(
    ("case", "train", "test", "file", "row", "field", "words"), BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS]
)
def test_bad_input_is_one_line_naming_file_row_and_field(tmp_path, case, train, test, file, row, field, words):
    with pytest.raises(Exception) as caught:
        _load(tmp_path, train, test)
    error = find_input_error(caught.value)
    assert error is not None, f"not an InputDataError: {caught.value!r}"
    message = str(error)
    assert "\n" not in message
    assert message.startswith(str(tmp_path / file))
    assert words in message
    assert error.row == row
    if row is not None:
        assert f"row {row}" in message
    assert error.field == field
    if field is not None:
        assert f"field '{field}'" in message


def test_clean_files_become_id_fact_label(tmp_path):
    train, test = _load(tmp_path)
    assert list(train.columns) == ["id", "fact", "label"] and train["label"].tolist() == [6, 8, 0]
    assert list(test.columns) == ["id", "fact"] and test["id"].tolist() == ["id_3", "id_4"]


def test_bom_crlf_and_quoted_newlines_and_commas_are_read(tmp_path):
    text_with_newline = f"{RULING}\r\n本院认为，可予减刑，特此裁定。"
    train = f'\ufeffid,fact,label\r\nid_0,"{text_with_newline}",6\r\nid_1,"引号""内""的,逗号{RULING}",7\r\n'
    cases, _ = _load(tmp_path, train=train.encode("utf-8"))
    assert cases["id"].tolist() == ["id_0", "id_1"]
    assert "本院认为，可予减刑" in cases["fact"][0] and "\n" in cases["fact"][0]
    assert cases["fact"][1].startswith('引号"内"的,逗号')


def test_documented_oddities_warn_and_go_on(tmp_path, caplog):
    long_text = RULING * 4000  # ~150,000 characters
    train = f"id,fact,label\nid_0,{long_text},6\nid_1,no chinese at all,3\n"
    test = f"id,fact,label\nid_5,{RULING},9\n"
    with caplog.at_level(logging.WARNING):
        train_cases, test_cases = _load(tmp_path, train=train, test=test)
    assert len(train_cases) == 2 and list(test_cases.columns) == ["id", "fact"]
    warnings = " ".join(record.getMessage() for record in caplog.records)
    assert "longer than 20000" in warnings
    assert "no Chinese" in warnings
    assert "'label' column" in warnings


def test_column_names_are_parameters(tmp_path):
    (tmp_path / "train.csv").write_text(f"fact_text,imprisonment\n{RULING},24\n{RULING},36\n", encoding="utf-8")
    (tmp_path / "testA.csv").write_text(f"fact_text\n{RULING}\n", encoding="utf-8")
    columns = {"id": None, "text": "fact_text", "label": "imprisonment"}
    train, test = validate_rulings(
        RulingsCSVDataset(str(tmp_path / "train.csv")).load(),
        RulingsCSVDataset(str(tmp_path / "testA.csv")).load(),
        columns,
        VALIDATION,
    )
    assert train["label"].tolist() == [24, 36]
    assert train["id"].tolist() == ["train_0", "train_1"]


NORMALISATION = {"fold_full_width": True, "collapse_whitespace": True, "mask_criminal_name": True, "name_mask": "某"}


def test_normalisation_folds_full_width_collapses_space_and_masks_the_name():
    cases = pd.DataFrame(
        {"id": ["a"], "fact": ["罪犯陈中盛，男，ＡＢＣ１２３  \u3000 陈中盛获得表扬６次。罪犯陈中盛确有悔改表现"]}
    )
    fact = normalise_rulings(cases, NORMALISATION)["fact"][0]
    assert "陈中盛" not in fact and fact.count("某") == 3
    assert "ABC123" in fact and "表扬6次" in fact
    assert "  " not in fact and "\u3000" not in fact


def test_name_masking_can_be_switched_off_and_needs_an_opening_name():
    cases = pd.DataFrame({"id": ["a"], "fact": ["罪犯张仁奇，现在宁夏银川监狱服刑，张仁奇"]})
    kept = normalise_rulings(cases, {**NORMALISATION, "mask_criminal_name": False})["fact"][0]
    assert kept.count("张仁奇") == 2
    assert mask_criminal_name("本院认为，可予减刑。", "某") == "本院认为，可予减刑。"
    assert mask_criminal_name("罪犯阿依古丽·买买提，女，阿依古丽·买买提", "某") == "罪犯某,女,某".replace(",", "，")


def test_validation_runs_on_pyarrow_backed_strings(tmp_path):
    """pandas hands string patterns to pyarrow (RE2) for Arrow-backed columns, as a GPU image's
    pandas 3 + pyarrow does: the checks must not use regex syntax RE2 lacks."""
    (tmp_path / "train.csv").write_text(f"id,fact,label\nid_0,{RULING},6\nid_1,no chinese,3\n", encoding="utf-8")
    (tmp_path / "testA.csv").write_text(f"id,fact\nid_5,{RULING}\n", encoding="utf-8")
    frames = []
    for name in ("train.csv", "testA.csv"):
        raw = RulingsCSVDataset(str(tmp_path / name)).load()
        arrow = raw.astype(pd.ArrowDtype(pyarrow.string()))
        arrow.attrs = raw.attrs
        frames.append(arrow)
    train_cases, test_cases = validate_rulings(*frames, COLUMNS, VALIDATION)
    assert train_cases["label"].tolist() == [6, 3] and len(test_cases) == 1
