"""The classical candidates, by name: each one's fit and predict, of one shape, and the top-level parameters
its fit takes. The train pipeline makes each one's nodes from this registry (`pipeline.py`), and its
datasets are named after it (``<name>_models``, ``<name>_oof_probabilities``, ``<name>_test_probabilities``,
``<name>_metrics``); the ensemble reads every candidate under its name. Adding a candidate is one entry
here and its two functions.

The transformer candidates are named in conf/ (`transformer_candidates`) and train per fold instead
(`transformer.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from sentence_reduction.pipelines.train.baseline import fit_baseline, predict_on_linear_features
from sentence_reduction.pipelines.train.ordinal import fit_ordinal
from sentence_reduction.pipelines.train.regression import fit_regression
from sentence_reduction.pipelines.train.trees import fit_trees, predict_trees

Fit = Callable[..., tuple[list[Any], pd.DataFrame]]
Predict = Callable[[list[Any], pd.DataFrame, pd.DataFrame, pd.DataFrame], pd.DataFrame]


@dataclass(frozen=True)
class Candidate:
    """A candidate fitted on the folds by scikit-learn.

    ``fit(model_input, parsed_features, fold_assignments, class_table, *own_parameters)`` returns one
    model per fold and the held-out cases' class probabilities (``id, prob_*``); ``own_parameters`` are
    the values of the top-level parameters ``parameters`` names, in that order.
    ``predict(models, test_cases, test_parsed_features, class_table)`` returns the test cases' class
    probabilities, in ``test_cases``' order.
    """

    fit: Fit
    predict: Predict
    parameters: tuple[str, ...]


# In the order the ensemble lists them (after the transformer candidates).
CLASSICAL_CANDIDATES: dict[str, Candidate] = {
    # TF-IDF n-grams and the parsed features, logistic regression.
    "baseline": Candidate(fit_baseline, predict_on_linear_features, ("baseline",)),
    # Gradient-boosted trees on the parsed features.
    "trees": Candidate(fit_trees, predict_trees, ("trees",)),
    # Ridge regression of log(months + 1) on the baseline's features.
    "regression": Candidate(fit_regression, predict_on_linear_features, ("baseline", "regression")),
    # Ordinal logistic regression on the baseline's features.
    "ordinal": Candidate(fit_ordinal, predict_on_linear_features, ("baseline", "ordinal")),
}
