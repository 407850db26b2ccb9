"""A fitted `ColumnTransformer`'s features of some rows, the values its `transform` gives, with less
overhead: each fitted part is called on the plain array of its columns. On a few rows scikit-learn's
checks of a DataFrame, per part and per call, cost more than the parts' own work (the linear
candidates' features of one ruling: 5.9 ms a fold through `transform`, 1.9 ms here).

Within `ngrams_counted_together(models)` (the fold models of a candidate predicting the same rows), TF-IDF
parts that analyse texts alike count each text's n-grams once, over the union of their vocabularies, and
each takes the counts of its own terms: n-gram counting is nearly all of the features' time on many rows.

Within `shared_features()` (a served request), the features of the same rows under equal fitted
transformers are computed once: the linear, the regression and the ordinal candidates' fold models fit
their features on the same rows with the same parameters, so each fold's three transformers are equal,
and a request would otherwise compute the same features three times.
"""

from __future__ import annotations

import hashlib
import pickle
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.pipeline import Pipeline
from sklearn.utils import check_array
from sklearn.utils._set_output import _get_output_config

# Per distinct fitted transformer (its fingerprint), the rows transformed in this scope and their features.
_SHARED: ContextVar[dict[str, list[tuple[pd.DataFrame, Any]]] | None] = ContextVar("shared_features", default=None)
_FINGERPRINTS: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
# Per TF-IDF part (its id) in this scope, its vectorizers' joint counter and the texts counted so far.
_TOGETHER: ContextVar[dict[int, tuple[_JointCounter, list[tuple[np.ndarray, Any]]]] | None] = ContextVar(
    "ngrams_counted_together", default=None
)
_JOINT_COUNTERS: OrderedDict[tuple[str, ...], _JointCounter] = OrderedDict()  # the latest few, by members
_KEPT_COUNTERS = 8
# CountVectorizer parameters that do not say how a text is analysed (a vocabulary's size and source).
_NOT_ANALYSIS = {"vocabulary", "min_df", "max_df", "max_features"}


@contextmanager
def shared_features() -> Iterator[None]:
    """A scope in which `column_features` computes the features of the same rows under equal fitted
    transformers once (and holds them until the scope ends)."""
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


@contextmanager
def ngrams_counted_together(models: Sequence[Any]) -> Iterator[None]:
    """A scope in which the TF-IDF parts of ``models``' column transformers (pipelines that start with
    one) that analyse texts alike count the n-grams of the rows they transform once for all of them."""
    groups: dict[str, list[TfidfVectorizer]] = {}
    for model in models:
        if isinstance(model, Pipeline) and isinstance(model[0], ColumnTransformer):
            for _, part, _ in model[0].transformers_:
                if type(part) is TfidfVectorizer:
                    groups.setdefault(repr(sorted(_analysis(part).items())), []).append(part)
    together = {}
    for vectorizers in groups.values():
        if len(vectorizers) > 1:
            counted: list[tuple[np.ndarray, Any]] = []
            counter = _joint_counter(vectorizers)
            together.update({id(vectorizer): (counter, counted) for vectorizer in vectorizers})
    token = _TOGETHER.set(together)
    try:
        yield
    finally:
        _TOGETHER.reset(token)


def pipeline_probabilities(model: Any, inputs: Any) -> np.ndarray:
    """``model.predict_proba(inputs)``; for a `Pipeline` that starts with a `ColumnTransformer`, its
    features from `column_features`, then the rest of the pipeline."""
    if not (isinstance(model, Pipeline) and len(model) > 1 and isinstance(model[0], ColumnTransformer)):
        return model.predict_proba(inputs)
    features = column_features(model[0], inputs)
    return (model[-1] if len(model) == 2 else model[1:]).predict_proba(features)


def column_features(transformer: ColumnTransformer, rows: pd.DataFrame) -> Any:
    """``transformer.transform(rows)``: the same values, computed part by part on plain arrays (where
    the transformer was fitted on a DataFrame and each part reads named columns), once per distinct
    fitted transformer and rows within `shared_features()`."""
    shared = _SHARED.get()
    if shared is None:
        return _transformed(transformer, rows)
    seen = shared.setdefault(fingerprint(transformer), [])
    for earlier, features in seen:
        if earlier is rows or (earlier.columns.equals(rows.columns) and earlier.equals(rows)):
            return features
    features = _transformed(transformer, rows)
    seen.append((rows, features))
    return features


def fingerprint(transformer: ColumnTransformer) -> str:
    """A digest of what the fitted transformer computes with (each fitted part and the columns it reads,
    its weights, whether its output is sparse), made once per object: equal digests, equal transformers.
    Pickled item by item: a pickle also records which of its strings are one object, so that equal
    transformers pickled whole (or a part with its name) differ."""
    if transformer not in _FINGERPRINTS:
        digest = hashlib.sha256()
        state = [*(item for part in transformer.transformers_ for item in part), transformer.transformer_weights]
        for item in [*state, transformer.sparse_output_]:
            digest.update(pickle.dumps(item, protocol=5))
        _FINGERPRINTS[transformer] = digest.hexdigest()
    return _FINGERPRINTS[transformer]


def _digest(value: Any) -> str:
    """A digest of an object's pickle, made once per object."""
    if value not in _FINGERPRINTS:
        _FINGERPRINTS[value] = hashlib.sha256(pickle.dumps(value, protocol=5)).hexdigest()
    return _FINGERPRINTS[value]


class _JointCounter:
    """TF-IDF vectorizers that analyse texts alike, counted together: one `CountVectorizer` over the
    union of their vocabularies, and for each vectorizer the union's columns of its terms, in its own
    columns' order."""

    def __init__(self, vectorizers: Sequence[TfidfVectorizer]):
        terms = sorted(set().union(*(vectorizer.vocabulary_ for vectorizer in vectorizers)))
        union = {term: index for index, term in enumerate(terms)}
        self.counter = CountVectorizer(**_analysis(vectorizers[0]), vocabulary=union)
        self.columns = {}
        for vectorizer in vectorizers:
            columns = np.empty(len(vectorizer.vocabulary_), dtype=np.intp)
            for term, column in vectorizer.vocabulary_.items():
                columns[column] = union[term]
            self.columns[_digest(vectorizer)] = columns

    def transform(self, vectorizer: TfidfVectorizer, counts: Any) -> Any:
        """``vectorizer.transform`` of the texts whose union counts are ``counts``: the counts of its own
        terms, stored as its `CountVectorizer.transform` stores them, then its idf weighting."""
        own = counts[:, self.columns[_digest(vectorizer)]]
        # Its index type, as `CountVectorizer` picks it (for this many entries), and its indices sorted.
        index = np.int32 if own.nnz <= np.iinfo(np.int32).max else np.int64
        own = type(own)((own.data, own.indices.astype(index), own.indptr.astype(index)), shape=own.shape)
        own.sort_indices()
        return vectorizer._tfidf.transform(own, copy=False)


def _joint_counter(vectorizers: Sequence[TfidfVectorizer]) -> _JointCounter:
    members = tuple(_digest(vectorizer) for vectorizer in vectorizers)
    if members not in _JOINT_COUNTERS:
        _JOINT_COUNTERS[members] = _JointCounter(vectorizers)
        while len(_JOINT_COUNTERS) > _KEPT_COUNTERS:
            _JOINT_COUNTERS.popitem(last=False)
    _JOINT_COUNTERS.move_to_end(members)
    return _JOINT_COUNTERS[members]


def _analysis(vectorizer: TfidfVectorizer) -> dict[str, Any]:
    """The parameters by which ``vectorizer`` turns a text into counts of n-grams."""
    names = set(CountVectorizer().get_params()) - _NOT_ANALYSIS
    return {name: value for name, value in vectorizer.get_params().items() if name in names}


def _transform_part(part: Any, values: np.ndarray) -> Any:
    """``part.transform(values)``; a TF-IDF part within `ngrams_counted_together` from its joint counts."""
    joint = (_TOGETHER.get() or {}).get(id(part))
    if joint is None:
        return part.transform(values)
    counter, counted = joint
    counts = next((counts for texts, counts in counted if np.array_equal(texts, values)), None)
    if counts is None:
        counts = counter.counter.transform(values)
        counted.append((values, counts))
    return counter.transform(part, counts)


def _transformed(transformer: ColumnTransformer, rows: pd.DataFrame) -> Any:
    parts = _parts(transformer, rows)
    if parts is None:
        return transformer.transform(rows)
    with warnings.catch_warnings():
        # The parts were fitted on DataFrames; their columns were selected here by those names.
        warnings.filterwarnings("ignore", message="X does not have valid feature names", category=UserWarning)
        outputs = [_transform_part(part, rows[columns].to_numpy()) for part, columns in parts]
    # As `ColumnTransformer._hstack`.
    if transformer.sparse_output_:
        return sparse.hstack(
            [check_array(output, accept_sparse=True, ensure_all_finite=False) for output in outputs]
        ).tocsr()
    return np.hstack([output.toarray() if sparse.issparse(output) else output for output in outputs])


def _parts(transformer: ColumnTransformer, rows: Any) -> list[tuple[Any, str | list[str]]] | None:
    """The fitted parts and the columns each reads, where each can be called on its columns' array
    (a transformer fitted on a DataFrame, without weights, parts on named columns, its output an
    array); else None."""
    if not (
        isinstance(rows, pd.DataFrame)
        and hasattr(transformer, "feature_names_in_")
        and not transformer.transformer_weights
        and _get_output_config("transform", transformer)["dense"] == "default"
    ):
        return None
    parts = []
    for _, part, columns in transformer.transformers_:
        named = isinstance(columns, str) or (isinstance(columns, list) and all(isinstance(c, str) for c in columns))
        if not named:
            return None
        if isinstance(part, str):
            if part != "drop":
                return None  # "passthrough"
            continue
        if isinstance(columns, list) and not columns:
            continue  # a part of no columns: skipped by `transform` too
        parts.append((part, columns))
    return parts
