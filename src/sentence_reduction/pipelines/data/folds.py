"""Fold assignment: which cases each fold holds out for validation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold, StratifiedShuffleSplit

NOT_HELD_OUT = -1


def assign_folds(model_input: pd.DataFrame, folds: dict[str, Any]) -> pd.DataFrame:
    """``id, fold``: the fold in which each case is held out for validation.

    ``stratified_kfold`` holds out every case exactly once over ``n_splits`` folds;
    ``holdout`` is the winning solution's single split, holding out ``holdout_fraction`` of the cases
    (fold 0) and training on the rest (fold -1, never held out).
    Classes too small to be spread over the folds are stratified with the largest class, so they
    cannot crash it.
    """
    strata = _strata(model_input["class_id"].to_numpy(), min_members=_min_members(folds))
    placeholder = np.zeros(len(model_input))
    assignment = np.full(len(model_input), NOT_HELD_OUT)
    if folds["strategy"] == "stratified_kfold":
        splitter = StratifiedKFold(n_splits=int(folds["n_splits"]), shuffle=True, random_state=folds["seed"])
        for fold, (_, held_out) in enumerate(splitter.split(placeholder, strata)):
            assignment[held_out] = fold
    elif folds["strategy"] == "holdout":
        splitter = StratifiedShuffleSplit(n_splits=1, test_size=folds["holdout_fraction"], random_state=folds["seed"])
        _, held_out = next(splitter.split(placeholder, strata))
        assignment[held_out] = 0
    else:
        raise ValueError(f"folds.strategy must be 'stratified_kfold' or 'holdout', not {folds['strategy']!r}")
    return pd.DataFrame({"id": model_input["id"].to_numpy(), "fold": assignment})


def case_folds(model_input: pd.DataFrame, fold_assignments: pd.DataFrame) -> np.ndarray:
    """The fold that holds out each case of ``model_input``, in its order."""
    folds = model_input[["id"]].merge(fold_assignments, on="id", how="left", validate="one_to_one")["fold"]
    if folds.isna().any():
        raise ValueError("fold_assignments does not cover every case: rerun the data pipeline")
    return folds.to_numpy(dtype=int)


def fold_count(folds: dict[str, Any]) -> int:
    """How many fold models the strategy trains."""
    return int(folds["n_splits"]) if folds["strategy"] == "stratified_kfold" else 1


def _min_members(folds: dict[str, Any]) -> int:
    return int(folds["n_splits"]) if folds["strategy"] == "stratified_kfold" else 2


def _strata(class_ids: np.ndarray, min_members: int) -> np.ndarray:
    """Class ids, with classes of fewer than ``min_members`` cases stratified with the largest class
    (pooled on their own they could still be too few)."""
    values, counts = np.unique(class_ids, return_counts=True)
    rare = values[counts < min_members]
    return np.where(np.isin(class_ids, rare), values[counts.argmax()], class_ids)
