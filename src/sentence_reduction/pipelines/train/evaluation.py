"""Out-of-fold evaluation, the TF-IDF baseline, and the submission."""

from __future__ import annotations

import logging
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import ConfusionMatrixDisplay, classification_report
from sklearn.pipeline import make_pipeline
from threadpoolctl import threadpool_limits

from sentence_reduction.evaluation import DECODING_RULES, classification_metrics, decode
from sentence_reduction.pipelines.data.labels import class_to_months
from sentence_reduction.pipelines.train.fine_tuning import probability_table

logger = logging.getLogger(__name__)


def evaluate_out_of_fold(
    model_input: pd.DataFrame, class_table: pd.DataFrame, evaluation: dict[str, Any], *oof_tables: pd.DataFrame
) -> tuple[dict[str, Any], plt.Figure, pd.DataFrame, dict[str, str]]:
    """Metrics over every held-out case of every fold, under both decoding rules; the confusion matrix
    and per-class report of the chosen rule; and the rule (``auto``: whichever scores higher)."""
    probabilities, class_ids = _align(model_input, oof_tables)
    months = class_table["months"].tolist()
    by_rule = {rule: classification_metrics(probabilities, class_ids, months, rule) for rule in DECODING_RULES}
    rule = evaluation["decoding"]
    if rule == "auto":
        rule = max(DECODING_RULES, key=lambda name: by_rule[name]["final_score"])
    predicted = decode(probabilities, months, rule)
    metrics = {
        "decoding": rule,
        "cases": int(len(class_ids)),
        **by_rule[rule],
        "by_decoding": by_rule,
        "majority_class": _majority_class_metrics(model_input, class_ids, months),
    }
    logger.info(
        "out of fold (%s decoding): FinalScore %.4f, Score %.4f, ExtAcc %.4f, accuracy %.4f, "
        "majority-class FinalScore %.4f",
        rule, metrics["final_score"], metrics["score"], metrics["ext_acc"], metrics["accuracy"],
        metrics["majority_class"]["final_score"],
    )
    return metrics, _confusion_figure(class_ids, predicted, months), _class_report(class_ids, predicted, months), {
        "rule": rule
    }


def evaluate_baseline(
    model_input: pd.DataFrame, fold_assignments: pd.DataFrame, class_table: pd.DataFrame, baseline: dict[str, Any]
) -> dict[str, float]:
    """Character n-gram TF-IDF + logistic regression under the same folds and metrics."""
    folds = model_input[["id"]].merge(fold_assignments, on="id", validate="one_to_one")["fold"].to_numpy()
    n_classes = len(class_table)
    probabilities = np.zeros((len(model_input), n_classes))
    for fold in sorted(set(folds) - {-1}):
        held_out = folds == fold
        classifier = make_pipeline(
            TfidfVectorizer(
                analyzer="char",
                ngram_range=tuple(baseline["ngram_range"]),
                max_features=baseline["max_features"],
                sublinear_tf=True,
            ),
            LogisticRegression(C=baseline["C"], max_iter=baseline["max_iter"]),
        )
        # One BLAS thread: beside torch's threads, more oversubscribe the cores (14 s against 1 s a fit
        # on 2 cores), and the sparse solver gains little from them anyway.
        with threadpool_limits(limits=1, user_api="blas"):
            classifier.fit(model_input["fact"][~held_out], model_input["class_id"][~held_out])
        probabilities[np.ix_(held_out, classifier.classes_)] = classifier.predict_proba(
            model_input["fact"][held_out]
        )
    evaluated = folds != -1
    metrics = classification_metrics(
        probabilities[evaluated], model_input["class_id"].to_numpy()[evaluated], class_table["months"].tolist()
    )
    logger.info("baseline (TF-IDF + logistic regression) out of fold: FinalScore %.4f", metrics["final_score"])
    return metrics


def average_test_probabilities(*test_tables: pd.DataFrame) -> pd.DataFrame:
    """The fold ensemble: the mean of the folds' class probabilities for each test case."""
    first = test_tables[0]
    for table in test_tables[1:]:
        if not table["id"].equals(first["id"]):
            raise ValueError("the folds' test probabilities are not over the same test ids")
    mean = np.mean([table.drop(columns="id").to_numpy() for table in test_tables], axis=0)
    return probability_table(first["id"], mean)


def write_submission(
    test_cases: pd.DataFrame, test_probabilities: pd.DataFrame, class_table: pd.DataFrame, decoding_rule: dict[str, str]
) -> pd.DataFrame:
    """``id,label``: one integer month per test case, in the test file's order."""
    if not test_probabilities["id"].equals(test_cases["id"].reset_index(drop=True)):
        raise ValueError("test probabilities do not follow the test file's ids: rerun the pipeline")
    months = class_table["months"].tolist()
    class_ids = decode(test_probabilities.drop(columns="id").to_numpy(), months, decoding_rule["rule"])
    return pd.DataFrame({"id": test_cases["id"].to_numpy(), "label": class_to_months(class_ids, class_table).astype(int)})


def _align(model_input: pd.DataFrame, oof_tables: tuple[pd.DataFrame, ...]) -> tuple[np.ndarray, np.ndarray]:
    oof = pd.concat(oof_tables, ignore_index=True)
    if oof["id"].duplicated().any():
        raise ValueError("a case is held out by more than one fold")
    labelled = oof.merge(model_input[["id", "class_id"]], on="id", validate="one_to_one")
    return labelled.filter(regex=r"^prob_").to_numpy(), labelled["class_id"].to_numpy()


def _majority_class_metrics(model_input: pd.DataFrame, class_ids: np.ndarray, months: list[int]) -> dict[str, float]:
    majority = int(model_input["class_id"].mode().iloc[0])
    constant = np.zeros((len(class_ids), len(months)))
    constant[:, majority] = 1.0
    return classification_metrics(constant, class_ids, months)


def _confusion_figure(class_ids: np.ndarray, predicted: np.ndarray, months: list[int]) -> plt.Figure:
    figure, axes = plt.subplots(figsize=(11, 10))
    ConfusionMatrixDisplay.from_predictions(
        class_ids, predicted, labels=np.arange(len(months)), display_labels=months, ax=axes,
        colorbar=False, include_values=len(months) <= 20, cmap="Blues",
    )
    axes.set_xlabel("predicted months")
    axes.set_ylabel("true months")
    axes.set_title("Out-of-fold confusion matrix")
    figure.tight_layout()
    return figure


def _class_report(class_ids: np.ndarray, predicted: np.ndarray, months: list[int]) -> pd.DataFrame:
    report = classification_report(
        class_ids, predicted, labels=np.arange(len(months)), target_names=[str(month) for month in months],
        output_dict=True, zero_division=0,
    )
    table = pd.DataFrame(report).T.rename_axis("months").reset_index()
    return table
