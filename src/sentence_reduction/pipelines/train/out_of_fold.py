"""Out-of-fold machinery every candidate shares: one model per fold, the held-out cases' probabilities,
the fold transformers' tables joined, and a candidate's out-of-fold metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from sentence_reduction.pipelines.data.folds import NOT_HELD_OUT, case_folds
from sentence_reduction.pipelines.train.column_features import ngrams_counted_together, pipeline_probabilities
from sentence_reduction.scoring import DECODING_RULES, classification_metrics

# The least probability a class keeps where a candidate's or a blend's is 0: a class at 0 would veto it in a
# product of probabilities (the ensemble's log-probability blend, its mixture's likelihood).
PROBABILITY_FLOOR = 1e-6


def fit_out_of_fold(
    make_classifier: Callable[[], Any],
    inputs: pd.Series | pd.DataFrame,
    model_input: pd.DataFrame,
    fold_assignments: pd.DataFrame,
    n_classes: int,
) -> tuple[list[Any], pd.DataFrame]:
    """One scikit-learn classifier per fold, fitted on the cases that fold does not hold out; and the
    held-out cases' class probabilities (``id, prob_*``), each from the model that never saw it."""
    folds = case_folds(model_input, fold_assignments)
    class_ids = model_input["class_id"].to_numpy()
    models, tables = [], []
    for fold in sorted(set(folds) - {NOT_HELD_OUT}):
        held_out = folds == fold
        classifier = make_classifier().fit(inputs[~held_out], class_ids[~held_out])
        models.append(classifier)
        tables.append(
            probability_table(model_input["id"][held_out], class_probabilities(classifier, inputs[held_out], n_classes))
        )
    return models, pd.concat(tables, ignore_index=True)


def probability_table(ids: pd.Series, probabilities: np.ndarray) -> pd.DataFrame:
    """``id, prob_0 .. prob_{n-1}``: one row of class probabilities per case."""
    columns = [f"prob_{index}" for index in range(probabilities.shape[1])]
    table = pd.DataFrame(probabilities, columns=columns)
    table.insert(0, "id", ids.to_numpy())
    return table


def mean_class_probabilities(models: list[Any], inputs: pd.Series | pd.DataFrame, n_classes: int) -> np.ndarray:
    """The fold models' mean class probabilities: how a candidate's folds predict a test set (their
    texts' n-grams counted once for all folds)."""
    with ngrams_counted_together(models):
        return np.mean([class_probabilities(model, inputs, n_classes) for model in models], axis=0)


def class_probabilities(classifier: Any, inputs: pd.Series | pd.DataFrame, n_classes: int) -> np.ndarray:
    """``predict_proba`` over every class id (a pipeline's features by `column_features`): a class missing
    from a fold's training cases gets 0."""
    probabilities = np.zeros((len(inputs), n_classes))
    probabilities[:, classifier.classes_] = pipeline_probabilities(classifier, inputs)
    return probabilities


def stack_fold_probabilities(*fold_tables: pd.DataFrame) -> pd.DataFrame:
    """The fold transformers' held-out probabilities as one out-of-fold table."""
    stacked = pd.concat(fold_tables, ignore_index=True)
    if stacked["id"].duplicated().any():
        raise ValueError("a case is held out by more than one fold")
    return stacked


def average_test_probabilities(*test_tables: pd.DataFrame) -> pd.DataFrame:
    """The fold transformers' mean class probabilities for each test case."""
    first = test_tables[0]
    for table in test_tables[1:]:
        if not table["id"].equals(first["id"]):
            raise ValueError("the folds' test probabilities are not over the same test ids")
    mean = np.mean([table.drop(columns="id").to_numpy() for table in test_tables], axis=0)
    return probability_table(first["id"], mean)


def labelled_probabilities(
    oof_table: pd.DataFrame, model_input: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An out-of-fold table's probabilities, true class ids and true months, rows in ``model_input``'s order."""
    labelled = model_input[["id", "class_id", "label"]].merge(oof_table, on="id", validate="one_to_one")
    return labelled.filter(regex=r"^prob_").to_numpy(), labelled["class_id"].to_numpy(), labelled["label"].to_numpy()


def evaluate_candidate(
    oof_probabilities: pd.DataFrame, model_input: pd.DataFrame, class_table: pd.DataFrame, evaluation: dict[str, Any]
) -> dict[str, Any]:
    """A candidate's metrics over every held-out case, under both decoding rules, headed by the rule
    ``evaluation.decoding`` names (``auto``: whichever scores higher). Score, ExtAcc and FinalScore
    compare the decoded months with the cases' own months."""
    probabilities, class_ids, true_months = labelled_probabilities(oof_probabilities, model_input)
    months = class_table["months"].tolist()
    by_rule = {
        rule: classification_metrics(probabilities, class_ids, months, rule, true_months) for rule in DECODING_RULES
    }
    rule = evaluation["decoding"]
    if rule == "auto":
        rule = max(DECODING_RULES, key=lambda name: by_rule[name]["final_score"])
    return {"decoding": rule, "cases": int(len(class_ids)), **by_rule[rule], "by_decoding": by_rule}
