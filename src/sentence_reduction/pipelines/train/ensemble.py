"""The ensemble of the candidates: chosen from out-of-fold probabilities alone, estimated honestly by
nested folds, applied to the test probabilities.

The search is kept small on purpose and holds every single candidate. Under ``ensemble.search: fitted``
the blend's weights are those of highest out-of-fold likelihood (a mixture fitted by EM): one smooth
optimum, where the best FinalScore over a grid of weights is the maximum of many noisy scores and moves
from one fold split to the next; a weak candidate gets a weight near 0. ``grid`` searches a simplex grid
of weights and two ways to combine. A blend is chosen over the best single candidate only when it scores
``ensemble.min_gain`` more: the guard the grid's maximum over many options needs, so that a weak candidate
is dropped rather than blended in on noise. The nested estimate shows what the choice itself is worth on
cases it was not chosen on.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.container import BarContainer
from sklearn.metrics import ConfusionMatrixDisplay, classification_report

from sentence_reduction.metric import competition_scores
from sentence_reduction.pipelines.data.folds import case_folds
from sentence_reduction.pipelines.train.out_of_fold import PROBABILITY_FLOOR, labelled_probabilities, probability_table
from sentence_reduction.scoring import DECODING_RULES, classification_metrics, decode, prediction_metrics

logger = logging.getLogger(__name__)

COMBINATIONS = ("probabilities", "log_probabilities")
SEARCHES = ("fitted", "grid")


def choose_ensemble(
    model_input: pd.DataFrame,
    fold_assignments: pd.DataFrame,
    class_table: pd.DataFrame,
    ensemble: dict[str, Any],
    evaluation: dict[str, Any],
    **oof_probabilities: pd.DataFrame,
) -> tuple[dict[str, Any], dict[str, Any], plt.Figure, pd.DataFrame]:
    """The combination of the candidates (``name=out-of-fold table``) of highest out-of-fold FinalScore;
    its metrics estimated by nested folds; the confusion matrix and per-class report of that estimate."""
    names = list(oof_probabilities)
    stacked, class_ids, true_months = _stack(oof_probabilities, model_input)
    folds = case_folds(model_input.loc[model_input["id"].isin(oof_probabilities[names[0]]["id"])], fold_assignments)
    months = class_table["months"].tolist()

    def choose(cases: np.ndarray) -> tuple:
        options = _options(stacked[:, cases], class_ids[cases], ensemble, evaluation)
        return _best(options, stacked[:, cases], true_months[cases], months, ensemble["min_gain"])

    best = choose(np.ones(len(class_ids), dtype=bool))
    nested_probabilities = np.zeros((len(class_ids), len(months)))
    nested_predicted = np.zeros(len(class_ids), dtype=int)
    chosen_by_fold = []
    held_out_folds = sorted(set(folds))
    for fold in held_out_folds:
        held_out = folds == fold
        # One fold alone leaves nothing to choose on: the choice is then scored on its own cases.
        chosen_on = ~held_out if len(held_out_folds) > 1 else held_out
        option = choose(chosen_on)
        nested_probabilities[held_out] = combine(stacked[:, held_out], *option[:2])
        nested_predicted[held_out] = decode(nested_probabilities[held_out], months, option[2])
        chosen_by_fold.append(_describe(option, names))

    choice = _describe(best, names)
    in_sample = classification_metrics(combine(stacked, *best[:2]), class_ids, months, best[2], true_months)
    metrics = {
        "estimate": (
            f"nested: each of the {len(held_out_folds)} folds' cases predicted by the combination chosen on the "
            "other folds' out-of-fold cases"
            if len(held_out_folds) > 1
            else "in-sample: one fold, so the combination is scored on the cases it was chosen on (optimistic)"
        ),
        "cases": int(len(class_ids)),
        **prediction_metrics(nested_probabilities, nested_predicted, class_ids, months, true_months),
        "in_sample": in_sample,
        "majority_class": _majority_class_metrics(model_input, class_ids, months, true_months),
        "chosen_by_fold": chosen_by_fold,
    }
    logger.info(
        "ensemble %s: FinalScore %.4f out of fold (nested), %.4f on the cases it was chosen on",
        choice,
        metrics["final_score"],
        in_sample["final_score"],
    )
    return (
        choice,
        metrics,
        _confusion_figure(class_ids, nested_predicted, months),
        _class_report(class_ids, nested_predicted, months),
    )


def apply_ensemble(ensemble: dict[str, Any], **test_probabilities: pd.DataFrame) -> pd.DataFrame:
    """The ensemble's class probabilities for the test cases (``name=test table`` per candidate)."""
    names = list(ensemble["weights"])
    if set(names) != set(test_probabilities):
        raise ValueError(
            f"the ensemble combines {sorted(names)} but test probabilities came for {sorted(test_probabilities)}"
        )
    ids = test_probabilities[names[0]]["id"]
    for name in names:
        if not test_probabilities[name]["id"].equals(ids):
            raise ValueError(f"the test probabilities of {name!r} are not over the same test ids: rerun the pipeline")
    stacked = np.stack([test_probabilities[name].drop(columns="id").to_numpy() for name in names])
    weights = np.array([ensemble["weights"][name] for name in names])
    return probability_table(ids, combine(stacked, weights, ensemble["combination"]))


def combine(stacked: np.ndarray, weights: np.ndarray, combination: str) -> np.ndarray:
    """Rows of class probabilities from candidates' ``stacked[c]``: the weighted mean of probabilities,
    or of log-probabilities (a weighted geometric mean), normalised."""
    if combination == "probabilities":
        return np.tensordot(weights, stacked, axes=1)
    if combination == "log_probabilities":
        log_mean = np.tensordot(weights, np.log(np.clip(stacked, PROBABILITY_FLOOR, None)), axes=1)
        combined = np.exp(log_mean - log_mean.max(axis=1, keepdims=True))
        return combined / combined.sum(axis=1, keepdims=True)
    raise ValueError(f"ensemble combination must be one of {COMBINATIONS}, not {combination!r}")


def _stack(
    oof_probabilities: dict[str, pd.DataFrame], model_input: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = {name: set(table["id"]) for name, table in oof_probabilities.items()}
    first = next(iter(ids.values()))
    if any(other != first for other in ids.values()):
        raise ValueError(f"the candidates' out-of-fold probabilities cover different cases: {sorted(ids)}")
    arrays = [labelled_probabilities(table, model_input) for table in oof_probabilities.values()]
    return np.stack([probabilities for probabilities, _, _ in arrays]), arrays[0][1], arrays[0][2]


def _options(
    stacked: np.ndarray, class_ids: np.ndarray, ensemble: dict[str, Any], evaluation: dict[str, Any]
) -> list[tuple]:
    """Every (weights, combination, decoding) the search tries: each candidate alone, and the fitted blend
    or the grid's; fewer candidates first, so that a tie goes to the simpler ensemble."""
    n_candidates = len(stacked)
    rules = DECODING_RULES if evaluation["decoding"] == "auto" else (evaluation["decoding"],)
    if ensemble["search"] == "fitted":
        singles = [(weights, "probabilities") for weights in np.eye(n_candidates)]
        blends = [(fitted_weights(stacked, class_ids), "probabilities")] if n_candidates > 1 else []
        return [(weights, combination, rule) for weights, combination in singles + blends for rule in rules]
    if ensemble["search"] != "grid":
        raise ValueError(f"ensemble search must be one of {SEARCHES}, not {ensemble['search']!r}")
    steps = round(1 / ensemble["weight_step"])
    grid = [
        np.array(counts) / steps
        for counts in itertools.product(range(steps + 1), repeat=n_candidates)
        if sum(counts) == steps
    ]
    grid.sort(key=lambda weights: (np.count_nonzero(weights), -weights.max()))
    options = []
    for weights in grid:
        # One candidate alone is the same under both combinations.
        combinations = ensemble["combinations"] if np.count_nonzero(weights) > 1 else ensemble["combinations"][:1]
        options += [(weights, combination, rule) for combination in combinations for rule in rules]
    return options


def fitted_weights(
    stacked: np.ndarray, class_ids: np.ndarray, iterations: int = 1000, tolerance: float = 1e-9
) -> np.ndarray:
    """The mixture weights over the candidates' ``stacked[c]`` probabilities of highest likelihood of
    the true classes: EM for a mixture's weights, each step the mean share of each case's likelihood that
    each candidate carries, which never lowers the likelihood."""
    likelihoods = np.clip(stacked[:, np.arange(len(class_ids)), class_ids].T, PROBABILITY_FLOOR, None)
    weights = np.full(len(stacked), 1 / len(stacked))
    for _ in range(iterations):
        shares = likelihoods * weights
        updated = (shares / shares.sum(axis=1, keepdims=True)).mean(axis=0)
        converged = np.abs(updated - weights).max() < tolerance
        weights = updated
        if converged:
            break
    return weights


def _best(
    options: list[tuple], stacked: np.ndarray, true_months: np.ndarray, months: list[int], min_gain: float
) -> tuple:
    """The option of highest FinalScore against the cases' own months (the first, so the simplest, of
    equals); a blend only when it beats the best single candidate by ``min_gain``."""

    def final_score(option: tuple) -> float:
        weights, combination, rule = option
        predicted = decode(combine(stacked, weights, combination), months, rule)
        return competition_scores(month_of_class[predicted], true_months)["final_score"]

    month_of_class = np.asarray(months)

    scores = np.array([final_score(option) for option in options])
    single = np.array([np.count_nonzero(option[0]) == 1 for option in options])
    best, best_single = int(np.argmax(scores)), int(np.argmax(np.where(single, scores, -np.inf)))
    return options[best] if scores[best] >= scores[best_single] + min_gain else options[best_single]


def _describe(option: tuple, names: list[str]) -> dict[str, Any]:
    weights, combination, rule = option
    return {
        "weights": {name: float(weight) for name, weight in zip(names, weights, strict=True)},
        "combination": combination,
        "decoding": rule,
    }


def _majority_class_metrics(
    model_input: pd.DataFrame, class_ids: np.ndarray, months: list[int], true_months: np.ndarray
) -> dict[str, float]:
    majority = int(model_input["class_id"].mode().iloc[0])
    constant = np.zeros((len(class_ids), len(months)))
    constant[:, majority] = 1.0
    return classification_metrics(constant, class_ids, months, true_months=true_months)


def _confusion_figure(class_ids: np.ndarray, predicted: np.ndarray, months: list[int]) -> plt.Figure:
    figure, axes = plt.subplots(figsize=(11, 10))
    ConfusionMatrixDisplay.from_predictions(
        class_ids,
        predicted,
        labels=np.arange(len(months)),
        display_labels=months,
        ax=axes,
        colorbar=False,
        include_values=len(months) <= 20,
        cmap="Blues",
    )
    axes.set_xlabel("predicted months")
    axes.set_ylabel("true months")
    axes.set_title("Out-of-fold confusion matrix of the ensemble (nested)")
    figure.tight_layout()
    return figure


def _class_report(class_ids: np.ndarray, predicted: np.ndarray, months: list[int]) -> pd.DataFrame:
    report = classification_report(
        class_ids,
        predicted,
        labels=np.arange(len(months)),
        target_names=[str(month) for month in months],
        output_dict=True,
        zero_division=0,
    )
    return pd.DataFrame(report).T.rename_axis("months").reset_index()


def plot_candidates(ensemble_metrics: dict[str, Any], **candidate_metrics: dict[str, Any]) -> plt.Figure:
    """FinalScore, Score and ExtAcc out of fold of each candidate, the ensemble (nested) and the majority
    class, side by side."""
    rows = {
        **candidate_metrics,
        "ensemble (nested)": ensemble_metrics,
        "majority class": ensemble_metrics["majority_class"],
    }
    scores = ("final_score", "score", "ext_acc")
    table = pd.DataFrame({name: {score: values[score] for score in scores} for name, values in rows.items()}).T
    figure, axes = plt.subplots(figsize=(9, 5))
    table.plot.bar(ax=axes, rot=0)
    for container in axes.containers:
        if isinstance(container, BarContainer):  # every one of a bar plot's
            axes.bar_label(container, fmt="%.3f", fontsize=7)
    axes.set_ylim(0, 1)
    axes.set_ylabel("out of fold")
    axes.set_title("Candidates and their ensemble")
    figure.tight_layout()
    return figure
