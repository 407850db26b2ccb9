"""Binary gradient-boosted classifiers that read the same rows, predicted together: their trees stacked
into one node table and walked for every row and tree at once with numpy, each tree only to its own depth.

scikit-learn predicts a `HistGradientBoostingClassifier` one tree at a time, each call with its own
overhead (and each classifier first encodes the rows again): the trees candidate's 165 classifiers of
100 trees took 230 ms for one ruling, nearly all of it in those calls. Here the rows are encoded once per
distinct fitted encoder, every tree is walked in the same numpy steps, and each classifier's leaf values
are added in its own order onto its baseline: the same sums, so the same probabilities, to the last bit.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE

# Categories a boosted tree can split on (its bitsets hold 8 x 32 of them).
_CATEGORIES = 256


class StackedTrees:
    """The trees of binary `HistGradientBoostingClassifier`s fitted on the same columns, as one table."""

    def __init__(self, classifiers: Sequence[HistGradientBoostingClassifier]):
        self.classifiers = list(classifiers)
        # The rows each classifier reads, encoded as it encodes them: once per distinct fitted encoder.
        self.encoders: list[HistGradientBoostingClassifier] = []
        self.encoder_of: list[int] = []
        for classifier in self.classifiers:
            if len(classifier.classes_) != 2 or classifier.n_trees_per_iteration_ != 1:
                raise ValueError("stacked trees are for binary classifiers")
            index = next((i for i, encoder in enumerate(self.encoders) if _same_encoder(encoder, classifier)), None)
            if index is None:
                index = len(self.encoders)
                self.encoders.append(classifier)
            self.encoder_of.append(index)
        self.n_features = self.classifiers[0].n_features_in_
        self.iterations = max(classifier.n_iter_ for classifier in self.classifiers)
        self._stack()

    def _stack(self) -> None:
        """Every tree's nodes in one table, classifier after classifier, iteration after iteration (a
        classifier with fewer iterations padded with trees of a single leaf of 0, which adds nothing)."""
        tables, roots, depths, offset = [], [], [], 0
        categorical_rows: list[np.ndarray] = []
        padding = _leaf_of_zero()
        for classifier, encoder in zip(self.classifiers, self.encoder_of, strict=True):
            known, feature_map = classifier._bin_mapper.make_known_categories_bitsets()
            trees = [(iteration[0].nodes, iteration[0].raw_left_cat_bitsets) for iteration in classifier._predictors]
            trees += [padding] * (self.iterations - len(trees))
            for nodes, left_bitsets in trees:
                table = {
                    "feature": nodes["feature_idx"].astype(np.intp) + encoder * self.n_features,
                    "threshold": nodes["num_threshold"],
                    "missing_left": nodes["missing_go_to_left"].astype(bool),
                    "value": nodes["value"],
                    "left": np.where(nodes["is_leaf"], np.arange(len(nodes)), nodes["left"]) + offset,
                    "right": np.where(nodes["is_leaf"], np.arange(len(nodes)), nodes["right"]) + offset,
                    "categorical": np.full(len(nodes), -1),
                }
                for node in np.flatnonzero(nodes["is_categorical"] & ~nodes["is_leaf"]):
                    table["categorical"][node] = len(categorical_rows)
                    categorical_rows.append(
                        _categorical_goes_left(
                            left_bitsets[nodes["bitset_idx"][node]],
                            known[feature_map[nodes["feature_idx"][node]]],
                            bool(nodes["missing_go_to_left"][node]),
                        )
                    )
                tables.append(table)
                roots.append(offset)
                depths.append(int(nodes["depth"].max()))  # walking this many steps from its root reaches a leaf
                offset += len(nodes)
        self.nodes = {name: np.concatenate([table[name] for table in tables]) for name in tables[0]}
        # The trees walked deepest first: at each step, only those not yet at a leaf (a prefix).
        deepest_first = np.argsort(-np.array(depths), kind="stable")
        self.roots = np.array(roots)[deepest_first]
        self.walking = [int((np.array(depths) > step).sum()) for step in range(max(depths))]
        self.table_order = np.argsort(deepest_first)  # a tree's place in the walk, in table order
        self.categorical_left = np.array(categorical_rows or np.zeros((1, _CATEGORIES), bool))
        self.baselines = np.array([classifier._baseline_prediction.item() for classifier in self.classifiers])

    def positive_probabilities(self, inputs: Any) -> np.ndarray:
        """Each classifier's probability of class 1 for each row: a column per classifier."""
        encoded = np.hstack([encoder._preprocess_X(inputs, reset=False) for encoder in self.encoders])
        nodes, rows = self.nodes, np.arange(len(encoded))[:, None]
        walked = np.tile(self.roots, (len(encoded), 1))
        for walking in self.walking:
            node = walked[:, :walking]
            value = encoded[rows, nodes["feature"][node]]
            missing = np.isnan(value)
            goes_left = np.where(missing, nodes["missing_left"][node], value <= nodes["threshold"][node])
            categorical = nodes["categorical"][node]
            split = (categorical >= 0) & ~missing
            if split.any():
                category = value[split]
                goes_left[split] = np.where(
                    category < 0,
                    nodes["missing_left"][node[split]],
                    self.categorical_left[categorical[split], np.minimum(category, _CATEGORIES - 1).astype(np.intp)],
                )
            walked[:, :walking] = np.where(goes_left, nodes["left"][node], nodes["right"][node])
        leaves = nodes["value"][walked[:, self.table_order]].reshape(
            len(encoded), len(self.classifiers), self.iterations
        )
        # Added one tree after another onto the baseline, as scikit-learn adds them.
        raw = np.broadcast_to(self.baselines, leaves.shape[:2]).copy()
        for iteration in range(self.iterations):
            raw += leaves[:, :, iteration]
        return np.column_stack(
            [classifier._loss.predict_proba(raw[:, [index]])[:, 1] for index, classifier in enumerate(self.classifiers)]
        )


def _same_encoder(first: HistGradientBoostingClassifier, second: HistGradientBoostingClassifier) -> bool:
    """Whether two classifiers encode rows alike: no categorical encoder, or encoders with the same
    categorical columns and categories."""
    if first._preprocessor is None or second._preprocessor is None:
        return first._preprocessor is second._preprocessor
    encoders = [classifier._preprocessor.named_transformers_["encoder"] for classifier in (first, second)]
    return np.array_equal(first.is_categorical_, second.is_categorical_) and all(
        np.array_equal(a, b, equal_nan=True)
        for a, b in zip(encoders[0].categories_, encoders[1].categories_, strict=True)
    )


def _categorical_goes_left(left: np.ndarray, known: np.ndarray, missing_left: bool) -> np.ndarray:
    """For each category, whether a categorical split sends it left: those in its left bitset; an
    unknown one goes where a missing value goes (as scikit-learn's `_predict_one_from_raw_data`)."""
    categories = np.arange(_CATEGORIES)
    in_left = (left[categories // 32] >> (categories % 32).astype(np.uint32)) & 1
    is_known = (known[categories // 32] >> (categories % 32).astype(np.uint32)) & 1
    return np.where(in_left == 1, True, np.where(is_known == 1, False, missing_left))


def _leaf_of_zero() -> tuple[np.ndarray, np.ndarray]:
    nodes = np.zeros(1, dtype=PREDICTOR_RECORD_DTYPE)
    nodes["is_leaf"] = True
    return nodes, np.zeros((0, 8), dtype=np.uint32)


_STACKED: weakref.WeakKeyDictionary[Any, StackedTrees] = weakref.WeakKeyDictionary()


def stacked_trees(owner: Any, classifiers: Sequence[HistGradientBoostingClassifier]) -> StackedTrees:
    """``classifiers``' stacked trees, made once per ``owner`` (the fitted model holding them) and
    kept while it lives."""
    if owner not in _STACKED:
        _STACKED[owner] = StackedTrees(classifiers)
    return _STACKED[owner]
