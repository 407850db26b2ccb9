"""The train pipeline's classical candidates and their ensemble, out of fold, on a labelled file.

Runs the pipeline's own node functions with the project's parameters (conf/base, or --env): validation,
normalisation, label encoding and folds as the data pipeline does them, then the classical candidates
(the baseline, the feature model, the regression, the ordinal model), each candidate's out-of-fold
metrics, and the ensemble chosen out of fold with its nested estimate. Prints FinalScore, Score and
ExtAcc of each, the majority class and the wall time.
With ``--transformer`` also the fold transformers as the environment's parameters train them (on a
2-core CPU they cost more than the rest together), once per ``--truncation`` given (each reported; the
first joins the ensemble), without MLflow, in a temporary work folder (no resumed results). With
``--transformer-folds N`` only the first N folds train: quicker, scored on those folds' cases alone,
and left out of the ensemble.

    python -m benchmarks.real_rows ../shared/reference/dc611_dev_segmented.csv
    python -m benchmarks.real_rows data/01_raw/sample/train.csv
    python -m benchmarks.real_rows data/01_raw/sample/train.csv --transformer --truncation head tail head_tail
    python -m benchmarks.real_rows ../shared/reference/dc611_dev_segmented.csv --fold-seed 42 0 1 --params ordinal.C=5
    python -m benchmarks.real_rows /path/to/exercise_contest/data_train.json --env cail2018

``--fold-seed`` with several seeds measures each split of the folds and the mean over them (the split's
noise is about as large as most changes measured); ``--params`` changes parameters as ``kedro run
--params`` does, without editing ``conf/``. Each split is a record (`benchmarks.records`) of the experiment
`benchmarks.real_rows`, named by ``--run-name`` (default: the changed parameters): every candidate's, the
ensemble's and the majority class's scores as metrics ``<name>.final_score`` ...
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.parameters import ROOT, changed_parameters, changed_run_parameters
from benchmarks.records import Recorder, command_line
from sentence_reduction.config_loading import load_parameters
from sentence_reduction.datasets import RulingsDataset
from sentence_reduction.finetune.arguments import deep_merge
from sentence_reduction.pipelines.data.folds import NOT_HELD_OUT, assign_folds
from sentence_reduction.pipelines.data.ingestion import validate_rulings
from sentence_reduction.pipelines.data.labels import build_class_table, encode_labels
from sentence_reduction.pipelines.data.normalisation import normalise_rulings
from sentence_reduction.pipelines.train.candidates import CLASSICAL_CANDIDATES, Candidate
from sentence_reduction.pipelines.train.ensemble import choose_ensemble
from sentence_reduction.pipelines.train.out_of_fold import evaluate_candidate, stack_fold_probabilities
from sentence_reduction.pipelines.train.parsing import parse_rulings
from sentence_reduction.pipelines.train.transformer import (
    candidate_training,
    prepare_tokenizer,
    resolve_deepspeed_config,
    train_fold,
)

MODULE = EXPERIMENT = "benchmarks.real_rows"
SCORES = ("final_score", "score", "ext_acc")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    arguments = _arguments(argv)
    changed = changed_parameters(arguments.params)
    parameters = load_parameters(ROOT / "conf", arguments.env, changed)
    recorder = Recorder(EXPERIMENT, command_line(MODULE, argv), arguments.out)
    started = time.perf_counter()
    raw = RulingsDataset(str(arguments.file)).load()
    # The validation checks a test file beside the training file; one stand-in row satisfies it.
    columns = parameters["columns"]
    no_test = raw.head(1).drop(columns=columns["label"])
    if columns["id"]:
        no_test[columns["id"]] = "benchmark_stand_in"
    cases, _ = validate_rulings(raw, no_test, columns, parameters["validation"])
    normalised = normalise_rulings(cases, parameters["text_normalisation"])
    class_table = build_class_table(cases, parameters["label_encoding"])
    model_input = encode_labels(normalised, class_table)
    parsed_features = parse_rulings(model_input)

    final_scores: dict[str, list[float]] = {}
    for fold_seed in arguments.fold_seed or [parameters["folds"]["seed"]]:
        folds = assign_folds(model_input, {**parameters["folds"], "seed": fold_seed})
        rows = _one_split(arguments, parameters, model_input, parsed_features, folds, class_table)
        shape = f"{len(model_input)} rows, {len(class_table)} classes, {folds['fold'].nunique()} folds"
        print(f"{arguments.file}: {shape} (seed {fold_seed})")
        print(f"{'':22s} {'FinalScore':>10s} {'Score':>7s} {'ExtAcc':>7s}  decoding        fit s")
        for name, (values, note) in rows.items():
            print(f"{name:22s} {_scores(values)}  {note}")
            final_scores.setdefault(name, []).append(values["final_score"])
        _record(recorder, arguments, parameters, rows, fold_seed, shape)
    if len(arguments.fold_seed or []) > 1:
        print(f"mean FinalScore over the {len(arguments.fold_seed)} splits:")
        for name, values in final_scores.items():
            print(f"{name:22s} {sum(values) / len(values):10.4f}")
    print(f"wall time {time.perf_counter() - started:.1f} s")


def _record(
    recorder: Recorder,
    arguments: argparse.Namespace,
    parameters: dict,
    rows: dict[str, tuple[dict, str]],
    fold_seed: int,
    shape: str,
) -> None:
    """One split's scores as a run: ``<name>.<score>`` for each row of the table (``ensemble``, ``majority_class``),
    the changed parameters and, with ``--transformer``, each candidate's learning rate, epochs and batch."""
    names = {"ensemble (nested)": "ensemble", "majority class": "majority_class"}
    metrics, tags = {}, {}
    for name, (values, _) in rows.items():
        key = names.get(name, name)
        metrics.update({f"{key}.{score}": values[score] for score in SCORES})
        if "fit_s" in values:
            metrics[f"{key}.fit_s"] = values["fit_s"]
        if "decoding" in values:
            tags[f"{key}.decoding"] = values["decoding"]
    tags["ensemble.chosen"] = rows["ensemble (nested)"][1]
    params = {
        "file": arguments.file.name,
        "env": arguments.env,
        "fold_seed": fold_seed,
        "shape": shape,
        "transformer": arguments.transformer,
        "truncation": " ".join(arguments.truncation or []),
        "transformer_folds": arguments.transformer_folds,
        **changed_run_parameters(arguments.params),
    }
    for candidate in parameters["transformer_candidates"] if arguments.transformer else ():
        trained_with = fold_training(parameters, candidate, "")["arguments"]
        for key in ("learning_rate", "num_train_epochs", "per_device_train_batch_size"):
            params[f"{candidate}.{key}"] = trained_with.get(key)
    run_name = arguments.run_name or " ".join(arguments.params) or f"conf/{arguments.env}"
    recorder.log(run_name, params, metrics, tags)


def out_of_fold(
    candidates: Mapping[str, Candidate],
    parameters: dict,
    model_input: pd.DataFrame,
    parsed_features: pd.DataFrame,
    folds: pd.DataFrame,
    class_table: pd.DataFrame,
) -> dict[str, tuple[pd.DataFrame, float]]:
    """Each classical candidate's out-of-fold probabilities and the seconds its fit took."""
    results = {}
    for name, candidate in candidates.items():
        start = time.perf_counter()
        own = [parameters[key] for key in candidate.parameters]
        _, oof = candidate.fit(model_input, parsed_features, folds, class_table, *own)
        results[name] = (oof, time.perf_counter() - start)
    return results


def _one_split(
    arguments: argparse.Namespace,
    parameters: dict,
    model_input: pd.DataFrame,
    parsed_features: pd.DataFrame,
    folds: pd.DataFrame,
    class_table: pd.DataFrame,
) -> dict[str, tuple[dict, str]]:
    """Each candidate's, the nested ensemble's and the majority class's metrics on one split of the folds,
    with a note to print beside each."""
    fitted = out_of_fold(CLASSICAL_CANDIDATES, parameters, model_input, parsed_features, folds, class_table)
    oof = {name: table for name, (table, _) in fitted.items()}
    timings = {name: seconds for name, (_, seconds) in fitted.items()}
    for candidate, settings in parameters["transformer_candidates"].items() if arguments.transformer else ():
        for index, truncation in enumerate(arguments.truncation or [settings["model"].get("truncation", "head")]):
            name = candidate if index == 0 else f"{candidate}_{truncation}"
            start = time.perf_counter()
            oof[name] = _transformer(
                model_input, folds, class_table, parameters, candidate, truncation, arguments.transformer_folds
            )
            timings[name] = time.perf_counter() - start
    metrics = {
        name: {**evaluate_candidate(table, model_input, class_table, parameters["evaluation"]), "fit_s": timings[name]}
        for name, table in oof.items()
    }
    # Partly trained candidates, and the extra truncations measured, stay out of the ensemble.
    whole = {name for name in parameters["transformer_candidates"] if arguments.transformer_folds is None}
    blended = {name: table for name, table in oof.items() if name in whole or name in CLASSICAL_CANDIDATES}
    choice, ensemble_metrics, _, _ = choose_ensemble(
        model_input, folds, class_table, parameters["ensemble"], parameters["evaluation"], **blended
    )
    rows = {
        name: (values, f"{values['decoding']:15s} {values['fit_s']:6.1f}  {values['cases']} cases")
        for name, values in metrics.items()
    }
    rows["ensemble (nested)"] = (ensemble_metrics, f"of {', '.join(blended)}; chosen: {choice}")
    rows["majority class"] = (ensemble_metrics["majority_class"], "")
    return rows


def fold_training(parameters: dict, candidate: str, work_dir: str) -> dict[str, Any]:
    """The `training` parameters transformer ``candidate``'s folds train with: the shared ones with the
    candidate's own merged in key by key, in ``work_dir``, without MLflow or progress bars."""
    own = parameters["transformer_candidates"][candidate].get("training") or {}
    quiet = {"work_dir": work_dir, "arguments": {"report_to": "none", "disable_tqdm": True}}
    return candidate_training(parameters["training"], deep_merge(own, quiet))


def _transformer(
    model_input: pd.DataFrame,
    folds: pd.DataFrame,
    class_table: pd.DataFrame,
    parameters: dict,
    candidate: str,
    truncation: str,
    n_folds: int | None,
) -> pd.DataFrame:
    """A transformer candidate's out-of-fold probabilities (of the first ``n_folds`` folds, or all), with
    ``truncation``, trained from scratch."""
    settings = parameters["transformer_candidates"][candidate]
    model = {**settings["model"], "truncation": truncation}
    tokenizer = prepare_tokenizer(model_input, model)
    test_cases = model_input[["id", "fact"]].head(1)  # the node predicts a test set too; one row is enough
    with tempfile.TemporaryDirectory() as work_dir:
        training = fold_training(parameters, candidate, work_dir)
        deepspeed_config = resolve_deepspeed_config(training)
        tables = [
            train_fold(
                model_input,
                folds,
                test_cases,
                tokenizer,
                class_table,
                deepspeed_config,
                model,
                training,
                candidate,
                fold,
            )[1]
            for fold in sorted(set(folds["fold"]) - {NOT_HELD_OUT})[:n_folds]
        ]
    return stack_fold_probabilities(*tables)


def _scores(values: dict) -> str:
    return " ".join(f"{values[score]:{width}.4f}" for score, width in zip(SCORES, (10, 7, 7), strict=True))


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "file",
        type=Path,
        help="a labelled file as the pipeline reads one (a CSV, or JSON lines: CAIL2018's data_train.json with "
        "--env cail2018); the `columns:` map names its columns",
    )
    parser.add_argument("--env", default="local", help="the Kedro environment whose parameters to use")
    parser.add_argument(
        "--fold-seed", type=int, nargs="+", help="other splits of the folds (seeds): each, and their mean"
    )
    parser.add_argument(
        "--params", nargs="+", default=[], metavar="KEY=VALUE", help="changed parameters, as kedro run --params"
    )
    parser.add_argument("--transformer", action="store_true", help="also the fold transformers")
    parser.add_argument("--truncation", nargs="+", help="with --transformer: each of these (head, tail, head_tail)")
    parser.add_argument("--transformer-folds", type=int, help="with --transformer: only the first N folds")
    parser.add_argument("--run-name", help="the records' run name (default: the changed parameters)")
    parser.add_argument("--out", help="records appended here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main()
