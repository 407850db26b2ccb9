"""Ingestion: the competition's files (or a CAIL2018-style file mapped by column names) validated."""

from __future__ import annotations

import logging
import re
from typing import Any

import pandas as pd

from sentence_reduction.input_errors import InputDataError

logger = logging.getLogger(__name__)

# A whole number, also as a decimal with zero fractional digits ("12.0": a float column written out).
_INTEGER = re.compile(r"^[+-]?\d+(?:\.0*)?$")
# Literal characters, not \u escapes: pandas may hand the pattern to pyarrow (RE2), which has none.
_HAN = re.compile("[一-鿿]")  # U+4E00..U+9FFF
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no", ""}


def validate_rulings(
    train_raw: pd.DataFrame, test_raw: pd.DataFrame, columns: dict[str, Any], validation: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Check both files and return them as ``id, fact, label`` (train) and ``id, fact`` (test).

    Both files are checked before anything is returned, so bad input stops the run before any
    output is written.
    """
    train_cases = _validate_cases(train_raw, columns, validation, labelled=True)
    test_cases = validate_test_rulings(test_raw, columns, validation)
    shared_ids = pd.Index(test_cases["id"]).intersection(pd.Index(train_cases["id"]))
    if len(shared_ids):
        first = shared_ids[0]
        row = int(test_cases.index[test_cases["id"] == first][0]) + 1
        raise InputDataError(_source(test_raw), f"id {first!r} also appears in the training file", row, columns["id"])
    return train_cases, test_cases


def validate_test_rulings(test_raw: pd.DataFrame, columns: dict[str, Any], validation: dict[str, Any]) -> pd.DataFrame:
    """Check a test file and return it as ``id, fact``; a label column there is dropped with a warning."""
    if columns["label"] in test_raw.columns:
        logger.warning(
            "%s has a '%s' column; a test file carries none, so it is ignored",
            _source(test_raw),
            columns["label"],
        )
    return _validate_cases(test_raw, columns, validation, labelled=False)


def _validate_cases(
    raw: pd.DataFrame, columns: dict[str, Any], validation: dict[str, Any], labelled: bool
) -> pd.DataFrame:
    source = _source(raw)
    required = [columns["text"]] + ([columns["label"]] if labelled else [])
    if columns.get("id"):
        required.insert(0, columns["id"])
    missing = [name for name in required if name not in raw.columns]
    if missing:
        raise InputDataError(
            source, f"missing column(s) {missing}; the header has {list(raw.columns)}", row=0, field=missing[0]
        )
    if raw.empty:
        raise InputDataError(source, "the file has a header but no rows")

    raw = raw.reset_index(drop=True)  # the index is the row's number in the file, less one, from here on
    if labelled:
        raw = _without_excluded(raw, source, columns.get("exclude_if_true") or [])
    if columns.get("id"):
        ids = raw[columns["id"]].str.strip()
    else:  # number the rows, apart in the two files so they can never collide
        ids = pd.Series([f"{'train' if labelled else 'test'}_{i}" for i in raw.index], index=raw.index)
    cases = pd.DataFrame({"id": ids, "fact": raw[columns["text"]]})
    _check_ids(cases["id"], source, columns.get("id") or "id")
    _check_texts(cases, source, columns["text"], validation)
    if labelled:
        cases["label"] = _parse_labels(raw[columns["label"]], cases["id"], source, columns["label"], validation)
    return cases.reset_index(drop=True)


def _without_excluded(raw: pd.DataFrame, source: str, flag_columns: list[str]) -> pd.DataFrame:
    """The rows where none of ``flag_columns`` is true (true, 1, yes; false, 0, no or empty otherwise)."""
    missing = [name for name in flag_columns if name not in raw.columns]
    if missing:
        raise InputDataError(
            source, f"missing column(s) {missing} of exclude_if_true; the header has {list(raw.columns)}", 0, missing[0]
        )
    excluded = pd.Series(False, index=raw.index)
    for name in flag_columns:
        flags = raw[name].str.strip().str.lower()
        unknown = ~flags.isin(_TRUE | _FALSE)
        if unknown.any():
            row = _row(unknown)
            raise InputDataError(source, f"{raw[name].loc[row - 1]!r} is not true or false", row, name)
        excluded |= flags.isin(_TRUE)
    if excluded.all():
        raise InputDataError(source, f"every row is left out by exclude_if_true {flag_columns}")
    if excluded.any():
        logger.info(
            "%s: %d of %d rows left out (exclude_if_true %s)", source, int(excluded.sum()), len(raw), flag_columns
        )
    return raw[~excluded]


def _source(raw: pd.DataFrame) -> str:
    return str(raw.attrs.get("source", "<input>"))


def _check_ids(ids: pd.Series, source: str, field: str) -> None:
    blank = ids == ""
    if blank.any():
        raise InputDataError(source, "empty id", _row(blank), field)
    duplicated = ids.duplicated()
    if duplicated.any():
        row = _row(duplicated)
        raise InputDataError(source, f"duplicate id {ids.loc[row - 1]!r}", row, field)


def _check_texts(cases: pd.DataFrame, source: str, field: str, validation: dict[str, Any]) -> None:
    texts = cases["fact"]
    empty = texts.str.strip() == ""
    if empty.any():
        row = _row(empty)
        raise InputDataError(source, f"empty text (id {cases['id'].loc[row - 1]!r})", row, field)
    too_long = texts.str.len() > validation["max_text_chars"]
    if too_long.any():
        logger.warning(
            "%s: %d text(s) longer than %d characters (first: row %d); the tokenizer keeps the first max_length tokens",
            source,
            int(too_long.sum()),
            validation["max_text_chars"],
            _row(too_long),
        )
    no_han = ~texts.str.contains(_HAN)
    if no_han.any():
        logger.warning(
            "%s: %d text(s) contain no Chinese character (first: row %d, id %r)",
            source,
            int(no_han.sum()),
            _row(no_han),
            cases["id"].loc[_row(no_han) - 1],
        )


def _parse_labels(labels: pd.Series, ids: pd.Series, source: str, field: str, validation: dict[str, Any]) -> pd.Series:
    text = labels.str.strip()
    not_integer = ~text.str.match(_INTEGER)
    if not_integer.any():
        row = _row(not_integer)
        raise InputDataError(
            source,
            f"label {labels.loc[row - 1]!r} is not a whole number of months (id {ids.loc[row - 1]!r})",
            row,
            field,
        )
    months = text.str.replace(r"\.0*$", "", regex=True).astype("int64")
    out_of_range = (months < 0) | (months > validation["max_label_months"])
    if out_of_range.any():
        row = _row(out_of_range)
        raise InputDataError(
            source,
            f"label {months.loc[row - 1]} is outside 0..{validation['max_label_months']} months "
            f"(id {ids.loc[row - 1]!r})",
            row,
            field,
        )
    return months


def _row(mask: pd.Series) -> int:
    """The file's data row (from 1; the header is row 0) of the first True in ``mask``, whose index is
    the row's number less one (rows left out by ``exclude_if_true`` keep their numbers)."""
    return int(mask.index[mask.to_numpy().argmax()]) + 1
