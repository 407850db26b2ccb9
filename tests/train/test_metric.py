"""The competition metric against hand-computed values, band edges included."""

import math

import numpy as np
import pytest

from sentence_reduction.metric import case_scores, competition_scores, score_matrix


@pytest.mark.parametrize(
    ("predicted", "truth", "expected"),
    [
        (9, 9, 1.0),  # exact
        (11, 9, 1.0),  # |ln12 - ln10| = 0.182
        (6, 4, 0.8),  # |ln7 - ln5| = 0.336
        (4, 2, 0.6),  # |ln5 - ln3| = 0.511
        (1, 0, 0.4),  # ln2 = 0.693
        (3, 1, 0.4),  # ln4 - ln2 = 0.693
        (12, 4, 0.2),  # ln13 - ln5 = 0.956
        (2, 0, 0.0),  # ln3 = 1.099
        (0, 33, 0.0),
    ],
)
def test_case_score_bands(predicted, truth, expected):
    assert case_scores([predicted], [truth])[0] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("edge", "inside", "outside"), [(0.2, 1.0, 0.8), (0.4, 0.8, 0.6), (0.6, 0.6, 0.4), (0.8, 0.4, 0.2), (1.0, 0.2, 0.0)]
)
def test_band_edges_are_closed_on_the_right(edge, inside, outside):
    truth = 4.0
    at_edge = math.exp(edge) * (truth + 1) - 1
    just_past = math.exp(edge + 1e-6) * (truth + 1) - 1
    assert case_scores([at_edge], [truth])[0] == inside
    assert case_scores([just_past], [truth])[0] == outside
    # symmetric in prediction and truth
    assert case_scores([truth], [at_edge])[0] == inside


def test_final_score_hand_computed():
    scores = competition_scores([9, 0, 6], [9, 1, 4])
    assert scores["score"] == pytest.approx((1.0 + 0.4 + 0.8) / 3)
    assert scores["ext_acc"] == pytest.approx(1 / 3)
    assert scores["final_score"] == pytest.approx(0.7 * 2.2 / 3 + 0.3 / 3)


def test_score_matrix_matches_case_scores():
    months = [0, 1, 5, 12, 33]
    matrix = score_matrix(months)
    for i, predicted in enumerate(months):
        for j, truth in enumerate(months):
            assert matrix[i, j] == case_scores([predicted], [truth])[0]
    assert np.allclose(matrix, matrix.T)


def test_rejects_mismatched_or_negative_input():
    with pytest.raises(ValueError, match="shape"):
        case_scores([1, 2], [1])
    with pytest.raises(ValueError, match=">= 0"):
        case_scores([-1], [1])
