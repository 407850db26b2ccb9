"""Duration-to-class encoding (round trips, both schemes) and fold assignment."""

import numpy as np
import pandas as pd
import pytest

from sentence_reduction.pipelines.data.folds import NOT_HELD_OUT, assign_folds, fold_count
from sentence_reduction.pipelines.data.labels import (
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
        ({"scheme": "quantiles"}, "scheme"),
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
