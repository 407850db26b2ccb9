"""The competition's metric (CCF BDCI 2021, task 611): Score, ExtAcc and FinalScore.

For a predicted month ``lp`` and the true month ``la``, ``v = |ln(lp+1) - ln(la+1)|`` falls in a
band that scores 1.0 (v <= 0.2), 0.8 (<= 0.4), 0.6 (<= 0.6), 0.4 (<= 0.8), 0.2 (<= 1.0) or 0.
``FinalScore = 0.7 * Score + 0.3 * ExtAcc``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

BAND_EDGES = np.array([0.2, 0.4, 0.6, 0.8, 1.0])
BAND_SCORES = np.array([1.0, 0.8, 0.6, 0.4, 0.2, 0.0])
SCORE_WEIGHT = 0.7
EXACT_WEIGHT = 0.3
# Band edges are closed on the right; a tiny tolerance keeps a distance that is exactly an edge in
# real arithmetic (e.g. ln(11) - ln(9) computed in floats) in the band it belongs to.
_EDGE_TOLERANCE = 1e-12


def case_scores(predicted_months: ArrayLike, true_months: ArrayLike) -> np.ndarray:
    """Per-case Score_i in {1, 0.8, 0.6, 0.4, 0.2, 0} for each prediction against the truth."""
    predicted = np.asarray(predicted_months, dtype=float)
    truth = np.asarray(true_months, dtype=float)
    if predicted.shape != truth.shape:
        raise ValueError(f"shape mismatch: {predicted.shape} predictions vs {truth.shape} labels")
    if (predicted < 0).any() or (truth < 0).any():
        raise ValueError("months must be >= 0")
    distance = np.abs(np.log1p(predicted) - np.log1p(truth))
    band = np.searchsorted(BAND_EDGES, distance - _EDGE_TOLERANCE, side="left")
    return BAND_SCORES[band]


def score_matrix(months: ArrayLike) -> np.ndarray:
    """``S[i, j]``: the Score of predicting ``months[i]`` when the truth is ``months[j]``."""
    predicted, truth = np.meshgrid(np.asarray(months, dtype=float), np.asarray(months, dtype=float), indexing="ij")
    return case_scores(predicted, truth)


def competition_scores(predicted_months: ArrayLike, true_months: ArrayLike) -> dict[str, float]:
    """Score (mean banded log distance), ExtAcc (exact match) and FinalScore for a prediction set."""
    predicted = np.asarray(predicted_months)
    truth = np.asarray(true_months)
    score = float(case_scores(predicted, truth).mean())
    exact = float((predicted == truth).mean())
    return {
        "score": score,
        "ext_acc": exact,
        "final_score": SCORE_WEIGHT * score + EXACT_WEIGHT * exact,
    }
