"""Duration-to-class encoding (round trips, both schemes) and fold assignment."""

import numpy as np
import pandas as pd
import pytest

from sentence_reduction.pipelines.data.folds import NOT_HELD_OUT, assign_folds, fold_count
from sentence_reduction.pipelines.data.labels import (
    bins_for_labels,
    build_class_table,
    class_table,
    class_to_months,
    encode_labels,
    months_to_class,
)

DIRECT = {"scheme": "direct", "n_classes": 34, "bin_edges": None, "bin_months": None}
BINS = {
    "scheme": "bins",
    "n_classes": None,
    "bin_edges": [0, 3, 6, 12, 24, 60, 120, 240],
    "bin_months": [1, 4, 8, 18, 36, 90, 180],
}


def test_direct_scheme_round_trips_months_0_to_33_and_caps_longer():
    table = class_table(DIRECT)
    months = np.arange(34)
    assert (months_to_class(months, table) == months).all()
    assert (class_to_months(months_to_class(months, table), table) == months).all()
    assert list(months_to_class([34, 60, 600], table)) == [33, 33, 33]


def test_bins_scheme_assigns_bins_and_decodes_to_representatives():
    table = class_table(BINS)
    assert list(months_to_class([0, 2, 3, 11, 12, 239, 240, 500], table)) == [0, 0, 1, 2, 3, 6, 6, 6]
    representatives = class_to_months(np.arange(len(table)), table)
    assert list(representatives) == BINS["bin_months"]
    # a representative month encodes back to its own class
    assert (months_to_class(representatives, table) == np.arange(len(table))).all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bin_edges": [1, 3, 6]}, "start at 0"),
        ({"bin_edges": [0, 6, 3]}, "increase"),
        ({"bin_months": [1, 4]}, "one month per bin"),
        ({"bin_months": [1, 4, 8, 18, 36, 90, 5]}, "outside its bin"),
        ({"scheme": "quantiles"}, "'auto', 'direct' or 'bins'"),
    ],
)
def test_bad_encodings_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        class_table({**BINS, **change})


def test_encode_labels_adds_class_ids(caplog):
    cases = pd.DataFrame({"id": ["a", "b"], "fact": ["x", "y"], "label": [5, 40]})
    with caplog.at_level("INFO"):
        table = build_class_table(cases, DIRECT)
    assert "1 training label(s) above 33 months" in caplog.text
    encoded = encode_labels(cases, table)
    assert list(encoded["class_id"]) == [5, 33]


AUTO = {"scheme": "auto", "n_classes": 34, "bin_edges": None, "bin_months": None}


def _cases(labels) -> pd.DataFrame:
    labels = list(labels)
    return pd.DataFrame({"id": [f"id_{i}" for i in range(len(labels))], "fact": "x", "label": labels})


def test_auto_keeps_one_class_a_month_for_the_competitions_labels(caplog):
    """Months 0-33 (and a tail of at most 1 % above them): the winning recipe's 34 classes exactly."""
    labels = [month % 34 for month in range(990)] + [40] * 10
    with caplog.at_level("INFO"):
        table = build_class_table(_cases(labels), AUTO)
    pd.testing.assert_frame_equal(table, class_table(DIRECT))
    assert "auto: direct" in caplog.text


def test_auto_bins_long_durations_on_the_log_scale_from_the_training_labels(caplog):
    """Terms of up to 600 months (as in CAIL2018): 34 bins covering every label, one month each at
    the short end, never wider than the log-scale width the bisection found, decoded to a label that
    lies in the bin (its most frequent one)."""
    rng = np.random.default_rng(0)
    labels = np.concatenate([rng.integers(0, 12, 300), np.exp(rng.normal(3.5, 0.9, 700)).round().clip(0, 600)])
    labels = labels.astype(int)
    with caplog.at_level("INFO"):
        table = build_class_table(_cases(labels), AUTO)
    assert "auto:" in caplog.text and "bins" in caplog.text
    assert len(table) == 34
    assert list(table["min_months"][:5]) == [0, 1, 2, 3, 4]  # short durations keep a class each
    classes = months_to_class(labels, table)
    lower, upper = table["min_months"].to_numpy()[classes], table["max_months"].to_numpy()[classes]
    assert ((lower <= labels) & (labels <= upper)).all()
    wide = table.iloc[:-1][table["max_months"].iloc[:-1] > table["min_months"].iloc[:-1]]
    widths = np.log(wide["max_months"] + 2) - np.log(wide["min_months"] + 1)  # ln(end + 1) - ln(start + 1)
    assert widths.max() < 2 * widths.min() + 0.05  # equal widths on the log scale, up to integer rounding
    for row in table.itertuples():
        inside = labels[(labels >= row.min_months) & (labels <= row.max_months)]
        if inside.size:
            values, counts = np.unique(inside, return_counts=True)
            assert row.months == values[np.argmax(counts)]


def test_auto_bins_decode_a_month_inside_every_bin_even_without_labels():
    edges, months = bins_for_labels(np.array([0, 1, 2, 500]), n_classes=10)
    assert len(months) == len(edges) - 1 <= 10 and edges[0] == 0 and edges[-1] > 500
    assert all(start <= month < end for start, end, month in zip(edges[:-1], edges[1:], months))


def _model_input(class_counts: dict[int, int]) -> pd.DataFrame:
    class_ids = [class_id for class_id, count in class_counts.items() for _ in range(count)]
    return pd.DataFrame({"id": [f"id_{i}" for i in range(len(class_ids))], "class_id": class_ids})


KFOLD = {"strategy": "stratified_kfold", "n_splits": 5, "holdout_fraction": 0.01, "seed": 42}


def test_kfold_holds_out_each_case_once_and_stratifies():
    model_input = _model_input({0: 50, 1: 100, 2: 25})
    folds = assign_folds(model_input, KFOLD)
    assert list(folds["id"]) == list(model_input["id"])
    assert sorted(folds["fold"].unique()) == [0, 1, 2, 3, 4]
    per_fold = folds.assign(class_id=model_input["class_id"]).groupby(["fold", "class_id"]).size().unstack()
    assert (per_fold[1] == 20).all() and (per_fold[0] == 10).all() and (per_fold[2] == 5).all()


def test_kfold_is_deterministic_and_seeded():
    model_input = _model_input({0: 40, 1: 40})
    first, again = assign_folds(model_input, KFOLD), assign_folds(model_input, KFOLD)
    assert first.equals(again)
    assert not first.equals(assign_folds(model_input, {**KFOLD, "seed": 7}))


def test_classes_smaller_than_k_do_not_crash():
    model_input = _model_input({0: 30, 1: 30, 2: 2, 3: 1, 4: 1})
    folds = assign_folds(model_input, KFOLD)
    assert (folds["fold"] >= 0).all()
    assert folds["fold"].value_counts().max() - folds["fold"].value_counts().min() <= 1


def test_holdout_is_the_winning_single_split():
    model_input = _model_input({0: 500, 1: 400, 2: 100, 3: 1})
    holdout = {**KFOLD, "strategy": "holdout", "holdout_fraction": 0.01}
    folds = assign_folds(model_input, holdout)
    assert (folds["fold"] == 0).sum() == 11  # ceil(1% of 1,001)
    assert set(folds["fold"]) == {0, NOT_HELD_OUT}
    assert fold_count(holdout) == 1 and fold_count(KFOLD) == 5
    assert folds.equals(assign_folds(model_input, holdout))
