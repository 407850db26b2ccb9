"""The trees candidate: gradient-boosted trees on the parsed features, fitted on the folds."""

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from sentence_reduction.pipelines.train.parsing import parse_rulings
from sentence_reduction.pipelines.train.stacked_trees import StackedTrees
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


def test_stacked_trees_give_scikit_learns_probabilities_to_the_last_bit():
    rng = np.random.default_rng(0)
    rows = 400
    crimes = rng.integers(0, 12, rows).astype(float)
    inputs = np.column_stack([crimes, rng.normal(size=rows), rng.normal(size=rows)])
    inputs[rng.random(rows) < 0.1, 0] = np.nan
    inputs[rng.random(rows) < 0.1, 1] = np.nan
    classes = (crimes % 3 == 0).astype(int) + (np.nan_to_num(inputs[:, 1]) > 0)

    def fitted(iterations: int, above: int, cases: np.ndarray) -> HistGradientBoostingClassifier:
        classifier = HistGradientBoostingClassifier(
            categorical_features=[0], max_iter=iterations, max_leaf_nodes=15, min_samples_leaf=5, random_state=0
        )
        return classifier.fit(inputs[cases], classes[cases] > above)

    # Classifiers of unequal lengths, and one fitted on other rows (crimes 0 to 11 seen, or 0 to 5).
    every, fewer_crimes = np.ones(rows, bool), inputs[:, 0] < 6
    classifiers = [fitted(30, 0, every), fitted(20, 1, every), fitted(25, 0, fewer_crimes)]
    assert len(StackedTrees(classifiers).encoders) == 2
    test = np.vstack([inputs[:50], [[15, 0.3, -1], [-1, np.nan, 2], [np.nan, 1.5, 0], [4, np.inf, -np.inf]]])
    expected = np.column_stack([classifier.predict_proba(test)[:, 1] for classifier in classifiers])
    assert np.array_equal(StackedTrees(classifiers).positive_probabilities(test), expected)
