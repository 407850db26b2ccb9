"""The trees candidate: gradient-boosted trees on the parsed features, fitted on the folds."""

import numpy as np
import pandas as pd
import pytest

from sentence_reduction.pipelines.train.parsing import parse_rulings
from sentence_reduction.pipelines.train.trees import fit_trees, predict_trees

CLASS_TABLE = pd.DataFrame({"class_id": range(13), "months": range(13)})


def recommendations(count: int, n_folds: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rulings whose granted months are the prison's recommendation, and their folds."""
    rng = np.random.default_rng(seed)
    months = rng.choice([3, 6, 9, 12], size=count)
    facts = [f"罪犯某犯盗窃罪，判处有期徒刑{rng.integers(3, 15)}年。建议对该犯减刑{m}个月。" for m in months]
    model_input = pd.DataFrame({"id": [f"id_{i}" for i in range(count)], "fact": facts, "class_id": months})
    return model_input, pd.DataFrame({"id": model_input["id"], "fold": np.arange(count) % n_folds})


@pytest.mark.parametrize("ordinal", [True, False], ids=["thresholds", "multiclass"])
def test_trees_learn_the_recommendation_out_of_fold(ordinal):
    model_input, folds = recommendations(120, 3, seed=0)
    parameters = {
        "min_crime_cases": 5,
        "ordinal": ordinal,
        "classifier": {"max_iter": 20, "min_samples_leaf": 5, "random_state": 0},
    }
    models, oof = fit_trees(model_input, parse_rulings(model_input), folds, CLASS_TABLE, parameters)
    assert len(models) == 3 and sorted(oof["id"]) == sorted(model_input["id"])
    probabilities = oof.set_index("id").loc[model_input["id"]].to_numpy()
    assert (probabilities.argmax(axis=1) == model_input["class_id"]).mean() > 0.95
    test_cases = model_input.head(4)
    test = predict_trees(models, test_cases, parse_rulings(test_cases), CLASS_TABLE)
    assert test["id"].tolist() == model_input["id"].head(4).tolist()
    assert np.allclose(test.drop(columns="id").sum(axis=1), 1)


def test_trees_predict_each_test_case_from_its_own_parsed_features():
    model_input, folds = recommendations(60, 2, seed=1)
    parameters = {"min_crime_cases": 5, "ordinal": False, "classifier": {"max_iter": 20, "min_samples_leaf": 3}}
    models, _ = fit_trees(model_input, parse_rulings(model_input), folds, CLASS_TABLE, parameters)
    test_cases = model_input.head(6)
    parsed = parse_rulings(test_cases)
    # the parsed table in another order: each row still goes with its own case, in the test cases' order
    in_order = predict_trees(models, test_cases, parsed, CLASS_TABLE)
    reordered = predict_trees(models, test_cases, parsed.iloc[::-1], CLASS_TABLE)
    pd.testing.assert_frame_equal(reordered, in_order)
    assert (in_order.drop(columns="id").to_numpy().argmax(axis=1) == test_cases["class_id"]).mean() > 0.8
    with pytest.raises(ValueError, match="parsed_features does not cover every case"):
        predict_trees(models, test_cases, parsed.head(3), CLASS_TABLE)
