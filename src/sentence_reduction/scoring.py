"""Classification and competition metrics over class probabilities, and the two decoding rules."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from sentence_reduction.metric import EXACT_WEIGHT, SCORE_WEIGHT, competition_scores, score_matrix

DECODING_RULES = ("argmax", "expected_score")


def decode(probabilities: np.ndarray, class_months: Sequence[int], rule: str) -> np.ndarray:
    """Class id per row: the most probable class, or the one of highest expected FinalScore."""
    if rule == "argmax":
        return probabilities.argmax(axis=1)
    if rule == "expected_score":
        return (probabilities @ expected_gain_matrix(class_months).T).argmax(axis=1)
    raise ValueError(f"decoding rule must be one of {DECODING_RULES}, not {rule!r}")


def expected_gain_matrix(class_months: Sequence[int]) -> np.ndarray:
    """``G[i, j]``: the FinalScore earned by predicting class i when the truth is class j."""
    months = np.asarray(class_months)
    return SCORE_WEIGHT * score_matrix(months) + EXACT_WEIGHT * np.eye(len(months))


def classification_metrics(
    probabilities: np.ndarray,
    class_ids: np.ndarray,
    class_months: Sequence[int],
    rule: str = "argmax",
    true_months: np.ndarray | None = None,
) -> dict[str, float]:
    """Loss, accuracy, weighted precision/recall/F1 and the competition's Score/ExtAcc/FinalScore.

    The competition's scores compare the predicted months with ``true_months``, the cases' own
    durations, when given; else with each true class's month, which is the same where every class is
    one month (the competition's labels) but flatters bins and a capped last class.
    """
    predicted = decode(probabilities, class_months, rule)
    return prediction_metrics(probabilities, predicted, class_ids, class_months, true_months)


def prediction_metrics(
    probabilities: np.ndarray,
    predicted: np.ndarray,
    class_ids: np.ndarray,
    class_months: Sequence[int],
    true_months: np.ndarray | None = None,
) -> dict[str, float]:
    """`classification_metrics` of predictions already decoded (by rules that may differ by row)."""
    class_ids = np.asarray(class_ids)
    precision, recall, f1, _ = precision_recall_fscore_support(
        class_ids, predicted, average="weighted", zero_division=0
    )
    months = np.asarray(class_months)
    return {
        "loss": cross_entropy(probabilities, class_ids),
        "accuracy": float(accuracy_score(class_ids, predicted)),
        "precision_weighted": float(precision),
        "recall_weighted": float(recall),
        "f1_weighted": float(f1),
        **competition_scores(months[predicted], months[class_ids] if true_months is None else np.asarray(true_months)),
    }


def cross_entropy(probabilities: np.ndarray, class_ids: np.ndarray) -> float:
    """Mean negative log-probability of the true class."""
    true_class_probability = probabilities[np.arange(len(class_ids)), class_ids]
    return float(-np.log(np.clip(true_class_probability, 1e-12, None)).mean())


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)
