"""The candidates' out-of-fold probabilities and their ensemble: choice, nested estimate, application."""

import numpy as np
import pandas as pd
import pytest

from sentence_reduction.pipelines.train.baseline import fit_baseline, predict_on_linear_features
from sentence_reduction.pipelines.train.ensemble import apply_ensemble, choose_ensemble, combine, fitted_weights
from sentence_reduction.pipelines.train.out_of_fold import evaluate_candidate, probability_table
from sentence_reduction.pipelines.train.parsing import parse_rulings

N_CASES, N_CLASSES = 200, 4
CLASS_TABLE = pd.DataFrame({"class_id": range(N_CLASSES), "months": [0, 3, 6, 12]})
ENSEMBLE = {"search": "fitted", "min_gain": 0.0}
GRID = {
    "search": "grid",
    "weight_step": 0.25,
    "combinations": ["probabilities", "log_probabilities"],
    "min_gain": 0.005,
}
AUTO = {"decoding": "auto"}

BASELINE = {
    "analyzer": "char",
    "segmented_space_share": 0.15,
    "word_ngram_range": [1, 2],
    "char_ngram_range": [1, 2],
    "min_df": 1,
    "max_features": 1000,
    "parsed_features": True,
    "min_category_cases": 2,
    "C": 10.0,
    "max_iter": 200,
}


def _cases(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    class_ids = rng.integers(0, N_CLASSES, N_CASES)
    model_input = pd.DataFrame(
        {
            "id": [f"id_{i}" for i in range(N_CASES)],
            "class_id": class_ids,
            "label": CLASS_TABLE["months"].to_numpy()[class_ids],
        }
    )
    folds = pd.DataFrame({"id": model_input["id"], "fold": np.arange(N_CASES) % 4})
    return model_input, folds, class_ids


def _knowing(class_ids: np.ndarray, known: np.ndarray, seed: int) -> np.ndarray:
    """Probabilities peaked on the true class where ``known``, random elsewhere."""
    rng = np.random.default_rng(seed)
    probabilities = rng.dirichlet(np.ones(N_CLASSES), size=len(class_ids))
    peaked = np.full((len(class_ids), N_CLASSES), 0.05)
    peaked[np.arange(len(class_ids)), class_ids] = 0.85
    return np.where(known[:, None], peaked, probabilities)


def _table(model_input: pd.DataFrame, probabilities: np.ndarray) -> pd.DataFrame:
    # Shuffled rows: the ensemble must align candidates by id, not by position.
    return probability_table(model_input["id"], probabilities).sample(frac=1, random_state=1)


def test_a_strong_candidate_is_chosen_alone_over_a_noise_candidate():
    model_input, folds, class_ids = _cases()
    strong = _knowing(class_ids, np.random.default_rng(2).random(N_CASES) < 0.8, seed=3)
    noise = _knowing(class_ids, np.zeros(N_CASES, bool), seed=4)
    choice, metrics, _, report = choose_ensemble(
        model_input,
        folds,
        CLASS_TABLE,
        ENSEMBLE,
        AUTO,
        noise=_table(model_input, noise),
        strong=_table(model_input, strong),
    )
    assert choice["weights"] == {"noise": 0.0, "strong": 1.0}
    assert metrics["estimate"].startswith("nested") and len(metrics["chosen_by_fold"]) == 4
    assert metrics["cases"] == N_CASES and metrics["final_score"] > 0.8
    assert metrics["final_score"] <= metrics["in_sample"]["final_score"] + 1e-9
    assert metrics["majority_class"]["final_score"] < metrics["final_score"]
    assert set(report["months"]) >= {"0", "3", "6", "12"}


@pytest.mark.parametrize("ensemble", [ENSEMBLE, GRID], ids=["fitted", "grid"])
def test_complementary_candidates_are_blended(ensemble):
    model_input, folds, class_ids = _cases()
    first_half = np.arange(N_CASES) < N_CASES // 2
    left, right = _knowing(class_ids, first_half, seed=5), _knowing(class_ids, ~first_half, seed=6)
    choice, metrics, _, _ = choose_ensemble(
        model_input,
        folds,
        CLASS_TABLE,
        ensemble,
        AUTO,
        left=_table(model_input, left),
        right=_table(model_input, right),
    )
    assert choice["weights"]["left"] > 0 and choice["weights"]["right"] > 0
    assert metrics["ext_acc"] > 0.9  # each alone is right on half the cases and guesses on the rest


def test_fitted_weights_are_the_mixture_of_highest_likelihood():
    model_input, folds, class_ids = _cases()
    rng = np.random.default_rng(9)
    stacked = np.stack(
        [
            _knowing(class_ids, rng.random(N_CASES) < 0.6, seed=10),
            _knowing(class_ids, rng.random(N_CASES) < 0.3, seed=11),
            rng.dirichlet(np.ones(N_CLASSES), size=N_CASES),
        ]
    )

    def log_likelihood(weights: np.ndarray) -> float:
        return np.log(combine(stacked, weights, "probabilities")[np.arange(N_CASES), class_ids]).mean()

    weights = fitted_weights(stacked, class_ids)
    assert weights.sum() == pytest.approx(1) and (weights >= 0).all()
    assert weights[0] > weights[1] > weights[2]  # the better informed, the heavier
    steps = 40
    grid = [np.array([a, b, steps - a - b]) / steps for a in range(steps + 1) for b in range(steps + 1 - a)]
    assert log_likelihood(weights) >= max(log_likelihood(point) for point in grid) - 1e-9


def test_an_unknown_search_is_refused():
    model_input, folds, class_ids = _cases()
    table = _table(model_input, _knowing(class_ids, np.ones(N_CASES, bool), seed=7))
    with pytest.raises(ValueError, match="ensemble search must be one of"):
        choose_ensemble(model_input, folds, CLASS_TABLE, {**ENSEMBLE, "search": "stacking"}, AUTO, one=table)


def test_out_of_fold_scores_compare_the_decoded_months_with_the_cases_own_months():
    """Where a class holds several months (bins, a capped last class), a candidate that always finds
    the class still misses the months its class does not decode to: ExtAcc and FinalScore say so,
    and the ensemble's estimate too."""
    model_input, folds, class_ids = _cases()
    # The last class stands for 12 months; half its cases lasted 40.
    longer = (class_ids == 3) & (np.arange(N_CASES) % 2 == 0)
    model_input["label"] = np.where(longer, 40, model_input["label"])
    perfect = _table(model_input, _knowing(class_ids, np.ones(N_CASES, bool), seed=8))
    metrics = evaluate_candidate(perfect, model_input, CLASS_TABLE, {"decoding": "argmax"})
    assert metrics["accuracy"] == 1.0
    assert metrics["ext_acc"] == pytest.approx(1 - longer.mean())
    assert metrics["final_score"] < 1.0
    _, estimate, _, _ = choose_ensemble(model_input, folds, CLASS_TABLE, ENSEMBLE, AUTO, perfect=perfect)
    assert estimate["ext_acc"] == pytest.approx(1 - longer.mean())


def test_candidates_over_different_cases_are_refused():
    model_input, folds, class_ids = _cases()
    table = _table(model_input, _knowing(class_ids, np.ones(N_CASES, bool), seed=7))
    with pytest.raises(ValueError, match="cover different cases"):
        choose_ensemble(model_input, folds, CLASS_TABLE, ENSEMBLE, AUTO, one=table, other=table.iloc[1:])


def test_apply_ensemble_combines_the_test_tables_by_the_saved_weights():
    ids = pd.Series(["t_0", "t_1"])
    one = probability_table(ids, np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.7]]))
    other = probability_table(ids, np.array([[0.1, 0.7, 0.1, 0.1], [0.1, 0.1, 0.7, 0.1]]))
    ensemble = {"weights": {"one": 0.75, "other": 0.25}, "combination": "probabilities", "decoding": "argmax"}
    combined = apply_ensemble(ensemble, one=one, other=other)
    assert combined["id"].tolist() == ["t_0", "t_1"]
    assert np.allclose(combined.drop(columns="id").to_numpy()[0], [0.55, 0.25, 0.1, 0.1])
    with pytest.raises(ValueError, match="combines"):
        apply_ensemble(ensemble, one=one)
    with pytest.raises(ValueError, match="not over the same test ids"):
        apply_ensemble(ensemble, one=one, other=other.iloc[::-1].reset_index(drop=True))


def test_log_combination_is_a_normalised_weighted_geometric_mean():
    stacked = np.array([[[0.5, 0.5, 0.0]], [[0.2, 0.2, 0.6]]])
    assert np.allclose(combine(stacked, np.array([0.0, 1.0]), "log_probabilities"), [[0.2, 0.2, 0.6]])
    geometric = combine(stacked, np.array([0.5, 0.5]), "log_probabilities")
    assert np.isclose(geometric.sum(), 1) and geometric[0, 2] < 0.01  # a zero is floored, not a veto
    with pytest.raises(ValueError, match="combination"):
        combine(stacked, np.array([0.5, 0.5]), "median")


def test_baseline_yields_out_of_fold_and_test_probabilities_over_every_class():
    words = {0: "表扬一次", 1: "记功两次", 2: "累犯", 3: "财产性判项未履行"}
    model_input, folds, class_ids = _cases()
    model_input = model_input.assign(fact=[f"罪犯某{words[c]}，确有悔改表现。" for c in class_ids])
    features = parse_rulings(model_input)
    models, oof = fit_baseline(model_input, features, folds, CLASS_TABLE, BASELINE)
    assert len(models) == 4 and sorted(oof["id"]) == sorted(model_input["id"])
    probabilities = oof.set_index("id").loc[model_input["id"]].to_numpy()
    assert probabilities.shape == (N_CASES, N_CLASSES) and np.allclose(probabilities.sum(axis=1), 1)
    assert (probabilities.argmax(axis=1) == class_ids).all()
    test = predict_on_linear_features(models, model_input.head(3), features.head(3), CLASS_TABLE)
    assert test["id"].tolist() == ["id_0", "id_1", "id_2"]
    assert (test.drop(columns="id").to_numpy().argmax(axis=1) == class_ids[:3]).all()
