"""The ordinal candidate: the months as ordered classes, one logistic regression per threshold between
neighbouring classes (Frank and Hall's ordinal classification) on the linear candidate's features.

A multinomial model treats every wrong class alike; here each model answers "more than m months?", so
neighbouring months share their evidence, as the metric's log-distance scoring rewards.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from sentence_reduction.pipelines.train.baseline import fit_on_linear_features
from sentence_reduction.pipelines.train.cumulative import CumulativeClassifier


def fit_ordinal(
    model_input: pd.DataFrame,
    parsed_features: pd.DataFrame,
    fold_assignments: pd.DataFrame,
    class_table: pd.DataFrame,
    baseline: dict[str, Any],
    ordinal: dict[str, Any],
) -> tuple[list[Pipeline], pd.DataFrame]:
    """The fold models and the held-out cases' class probabilities, on the features ``baseline`` describes."""
    return fit_on_linear_features(
        lambda: CumulativeClassifier(LogisticRegression(C=ordinal["C"], max_iter=ordinal["max_iter"])),
        model_input,
        parsed_features,
        fold_assignments,
        class_table,
        baseline,
    )
