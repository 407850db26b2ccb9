"""The trees candidate: gradient-boosted trees on the parsed features, fitted on the folds."""

import numpy as np
import pandas as pd
import pytest

from sentence_reduction.pipelines.train.parsing import parse_rulings
from sentence_reduction.pipelines.train.trees import fit_trees, predict_trees


@pytest.mark.parametrize("ordinal", [True, False], ids=["thresholds", "multiclass"])
def test_trees_learn_the_recommendation_out_of_fold(ordinal):
    rng = np.random.default_rng(0)
    months = rng.choice([3, 6, 9, 12], size=120)
    facts = [f"罪犯某犯盗窃罪，判处有期徒刑{rng.integers(3, 15)}年。建议对该犯减刑{m}个月。" for m in months]
    model_input = pd.DataFrame({"id": [f"id_{i}" for i in range(120)], "fact": facts, "class_id": months})
    folds = pd.DataFrame({"id": model_input["id"], "fold": np.arange(120) % 3})
    class_table = pd.DataFrame({"class_id": range(13), "months": range(13)})
    parameters = {
        "min_crime_cases": 5,
        "ordinal": ordinal,
        "classifier": {"max_iter": 20, "min_samples_leaf": 5, "random_state": 0},
    }
    features = parse_rulings(model_input)
    models, oof = fit_trees(model_input, features, folds, class_table, parameters)
    assert len(models) == 3 and sorted(oof["id"]) == sorted(model_input["id"])
    probabilities = oof.set_index("id").loc[model_input["id"]].to_numpy()
    assert (probabilities.argmax(axis=1) == months).mean() > 0.95
    test_cases = model_input.head(4)
    test = predict_trees(models, test_cases, parse_rulings(test_cases), class_table)
    assert test["id"].tolist() == model_input["id"].head(4).tolist()
    assert np.allclose(test.drop(columns="id").sum(axis=1), 1)


def test_trees_predict_each_test_case_from_its_own_parsed_features():
    rng = np.random.default_rng(1)
    months = rng.choice([3, 6, 9, 12], size=60)
    facts = [f"罪犯某犯盗窃罪。建议对该犯减刑{m}个月。" for m in months]
    model_input = pd.DataFrame({"id": [f"id_{i}" for i in range(60)], "fact": facts, "class_id": months})
    folds = pd.DataFrame({"id": model_input["id"], "fold": np.arange(60) % 2})
    class_table = pd.DataFrame({"class_id": range(13), "months": range(13)})
    parameters = {
        "min_crime_cases": 5,
        "ordinal": False,
        "classifier": {"max_iter": 20, "min_samples_leaf": 3, "random_state": 0},
    }
    models, _ = fit_trees(model_input, parse_rulings(model_input), folds, class_table, parameters)
    test_cases = model_input.head(6)
    parsed = parse_rulings(test_cases)
    # the parsed table in another order: each row still goes with its own case, in the test cases' order
    in_order = predict_trees(models, test_cases, parsed, class_table)
    reordered = predict_trees(models, test_cases, parsed.iloc[::-1], class_table)
    pd.testing.assert_frame_equal(reordered, in_order)
    assert (in_order.drop(columns="id").to_numpy().argmax(axis=1) == months[:6]).mean() > 0.8
    with pytest.raises(ValueError, match="parsed_features does not cover every case"):
        predict_trees(models, test_cases, parsed.head(3), class_table)
