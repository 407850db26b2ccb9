"""Ingestion: the competition's files read as shipped; bad input stops with one line naming file,
row and field; documented oddities are handled with a warning."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pyarrow
import pytest
import yaml

from sentence_reduction.datasets import RulingsDataset
from sentence_reduction.input_errors import find_input_error
from sentence_reduction.pipelines.data.ingestion import validate_rulings
from sentence_reduction.pipelines.data.normalisation import mask_criminal_name, normalise_rulings
from tests.conftest import PROJECT_ROOT

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
    train_raw = RulingsDataset(str(folder / "train.csv")).load()
    test_raw = RulingsDataset(str(folder / "testA.csv")).load()
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
    _assert_one_line(caught.value, tmp_path / file, row, field, words)


def _assert_one_line(raised: BaseException, file: Path, row: int | None, field: str | None, words: str) -> None:
    error = find_input_error(raised)
    assert error is not None, f"not an InputDataError: {raised!r}"
    message = str(error)
    assert "\n" not in message
    assert message.startswith(str(file))
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
    # Whole numbers as a float column writes them (12.0, 7.) are read as whole numbers.
    train, _ = _load(tmp_path, train=f"id,fact,label\nid_0,{RULING},12.0\nid_1,{RULING},7.\nid_2,{RULING},+3\n")
    assert train["label"].tolist() == [12, 7, 3]
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
        RulingsDataset(str(tmp_path / "train.csv")).load(),
        RulingsDataset(str(tmp_path / "testA.csv")).load(),
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
        raw = RulingsDataset(str(tmp_path / name)).load()
        arrow = raw.astype(pd.ArrowDtype(pyarrow.string()))
        arrow.attrs = raw.attrs
        frames.append(arrow)
    train_cases, test_cases = validate_rulings(*frames, COLUMNS, VALIDATION)
    assert train_cases["label"].tolist() == [6, 3] and len(test_cases) == 1


# conf/cail2018 as shipped: CAIL2018's JSON lines mapped by configuration alone.
CAIL2018_COLUMNS = yaml.safe_load((PROJECT_ROOT / "conf" / "cail2018" / "parameters_data.yml").read_text("utf-8"))[
    "columns"
]


def _judgment(months: int | str, life: bool | str = False, death: bool = False) -> str:
    """One line of CAIL2018's data_train.json."""
    term = {"death_penalty": death, "imprisonment": months, "life_imprisonment": life}
    meta = {"relevant_articles": [264], "accusation": ["盗窃"], "punish_of_money": 2000, "term_of_imprisonment": term}
    return json.dumps({"fact": RULING, "meta": meta}, ensure_ascii=False)


def _load_json_lines(folder: Path, train: list[str], test: list[str], columns: dict = CAIL2018_COLUMNS):
    (folder / "data_train.json").write_bytes(("\r\n".join(train) + "\r\n\r\n").encode("utf-8"))
    (folder / "data_test.json").write_text("\n".join(test) + "\n", encoding="utf-8")
    train_raw = RulingsDataset(str(folder / "data_train.json")).load()
    test_raw = RulingsDataset(str(folder / "data_test.json")).load()
    return train_raw, *validate_rulings(train_raw, test_raw, columns, VALIDATION)


def test_json_lines_are_read_as_cail2018_ships_them(tmp_path, caplog):
    train = [_judgment(10), _judgment(0, life=True), _judgment(180), _judgment(0, death=True), _judgment(7)]
    with caplog.at_level(logging.INFO):
        train_raw, train_cases, test_cases = _load_json_lines(tmp_path, train, [_judgment(0, life=True), _judgment(24)])
    # Nested keys become dotted columns; a value that is not a string keeps its JSON text.
    assert train_raw["meta.term_of_imprisonment.imprisonment"].tolist() == ["10", "0", "180", "0", "7"]
    assert train_raw["meta.term_of_imprisonment.life_imprisonment"].tolist()[:2] == ["false", "true"]
    assert train_raw["meta.accusation"][0] == '["盗窃"]'
    # Life and death sentences are left out of training, the rest keep the file's row numbers.
    assert train_cases["label"].tolist() == [10, 180, 7]
    assert train_cases["id"].tolist() == ["train_0", "train_2", "train_4"]
    assert "2 of 5 rows left out" in caplog.text
    assert test_cases["id"].tolist() == ["test_0", "test_1"]  # every test row is predicted


def test_json_lines_keep_keys_a_row_lacks_empty(tmp_path):
    rows = [
        json.dumps({"fact": RULING, "months": 6, "extra": {"court": "某法院"}}),
        json.dumps({"fact": RULING, "months": 8}),
    ]
    columns = {"id": None, "text": "fact", "label": "months"}
    train_raw, train_cases, _ = _load_json_lines(tmp_path, rows, rows, columns)
    assert train_raw["extra.court"].tolist() == ["某法院", ""]
    assert train_cases["label"].tolist() == [6, 8]


BAD_JSON_LINES = [
    # (case, train lines, file, row, field, words in the message)
    ("a broken line", [_judgment(10), '{"fact": "盗窃",'], "data_train.json", 2, None, "not a JSON line"),
    ("a line that is a list", ["[1, 2]"], "data_train.json", 1, None, "must be an object"),
    (
        "a flag neither true nor false",
        [_judgment(10), _judgment(0, life="maybe")],
        "data_train.json",
        2,
        "meta.term_of_imprisonment.life_imprisonment",
        "not true or false",
    ),
    # The row a bad label is on in the file, though a row before it was left out; a left-out row's label
    # is not read.
    (
        "a bad label after a left-out row",
        [_judgment(10), _judgment(-1, life=True), _judgment("三年")],
        "data_train.json",
        3,
        "meta.term_of_imprisonment.imprisonment",
        "whole number",
    ),
    ("every row left out", [_judgment(0, life=True)], "data_train.json", None, None, "every row is left out"),
]


@pytest.mark.parametrize(
    ("case", "train", "file", "row", "field", "words"), BAD_JSON_LINES, ids=[case[0] for case in BAD_JSON_LINES]
)
def test_bad_json_lines_are_one_line_naming_file_row_and_field(tmp_path, case, train, file, row, field, words):
    with pytest.raises(Exception) as caught:
        _load_json_lines(tmp_path, train, [_judgment(5)])
    _assert_one_line(caught.value, tmp_path / file, row, field, words)


def test_a_missing_exclusion_column_is_named(tmp_path):
    columns = {**CAIL2018_COLUMNS, "exclude_if_true": ["meta.term_of_imprisonment.exile"]}
    with pytest.raises(Exception) as caught:
        _load_json_lines(tmp_path, [_judgment(10)], [_judgment(5)], columns)
    _assert_one_line(
        caught.value, tmp_path / "data_train.json", 0, "meta.term_of_imprisonment.exile", "exclude_if_true"
    )
