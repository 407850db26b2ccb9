"""The regression candidate: ridge regression of log(months + 1) on the linear candidate's features, its
prediction turned into class probabilities by a normal distribution on that log scale.

The metric scores a prediction by its distance from the truth on exactly that scale, so a regression
there ranks near misses as the metric does, where a classifier treats every wrong class alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.pipeline import Pipeline

from sentence_reduction.pipelines.train.baseline import fit_on_linear_features


class LogMonthsRegressionClassifier(ClassifierMixin, BaseEstimator):
    """A classifier over classes of known months made of a regressor of log(months + 1): a class's
    probability is the normal density at its months around the regression's prediction, with the
    spread of the regressor's errors on folds of the training cases (never on the cases it predicts)."""

    def __init__(self, regressor: Any, class_months: list[float], sigma_folds: int = 3, random_state: int = 0):
        self.regressor = regressor
        self.class_months = class_months
        self.sigma_folds = sigma_folds
        self.random_state = random_state

    def fit(self, inputs: Any, class_ids: np.ndarray) -> LogMonthsRegressionClassifier:
        log_months = np.log1p(np.asarray(self.class_months, dtype=float)[class_ids])
        folds = KFold(self.sigma_folds, shuffle=True, random_state=self.random_state)
        held_out = cross_val_predict(clone(self.regressor), inputs, log_months, cv=folds)
        self.sigma_ = float(np.std(log_months - held_out))
        self.regressor_ = clone(self.regressor).fit(inputs, log_months)
        self.classes_ = np.arange(len(self.class_months))
        return self

    def predict_proba(self, inputs: Any) -> np.ndarray:
        predicted = self.regressor_.predict(inputs)[:, None]
        class_log_months = np.log1p(np.asarray(self.class_months, dtype=float))[None, :]
        # A floor keeps every class possible for a product of probabilities in the ensemble.
        density = norm.pdf((class_log_months - predicted) / max(self.sigma_, 1e-3)) + 1e-12
        return density / density.sum(axis=1, keepdims=True)


def fit_regression(
    model_input: pd.DataFrame,
    parsed_features: pd.DataFrame,
    fold_assignments: pd.DataFrame,
    class_table: pd.DataFrame,
    baseline: dict[str, Any],
    regression: dict[str, Any],
) -> tuple[list[Pipeline], pd.DataFrame]:
    """The fold models and the held-out cases' class probabilities, on the features ``baseline`` describes."""
    months = class_table["months"].astype(float).tolist()
    return fit_on_linear_features(
        lambda: LogMonthsRegressionClassifier(Ridge(alpha=regression["alpha"]), months, regression["sigma_folds"]),
        model_input,
        parsed_features,
        fold_assignments,
        class_table,
        baseline,
    )
