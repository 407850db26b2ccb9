"""Project pipelines: `data`, `train`, `predict` and `pretrain`."""

from __future__ import annotations

import os
from pathlib import Path

from kedro.config import OmegaConfigLoader
from kedro.framework.project import settings
from kedro.pipeline import Pipeline

from sentence_reduction.pipelines import data, pretrain, train
from sentence_reduction.pipelines.data.folds import fold_count


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    `train` = `data` + one fine-tuning branch per transformer candidate and fold + the other candidates +
    the ensemble + submission; `predict` = the test file's ingestion + every saved model and the saved
    ensemble + the same submission step, written as `predictions`. Its datasets are renamed (``new_...``,
    kept in memory by the catalog) so that it overwrites nothing `train` wrote. `pretrain` = the rulings'
    validation and normalisation + the continued pretraining of each candidate `pretraining.candidates`
    names (`<candidate>.pretrained_encoder`).
    """
    parameters = _shaping_parameters()
    n_folds = fold_count(parameters["folds"])
    candidates = list(parameters["transformer_candidates"])
    data_pipeline = data.create_pipeline()
    train_pipeline = data_pipeline + train.create_train_pipeline(n_folds, candidates)
    inference = (
        data.create_test_ingestion_pipeline()
        + data_pipeline.only_nodes("normalise_test_rulings")
        + train.create_predict_pipeline(n_folds, candidates)
    )
    predict_pipeline = Pipeline(
        inference,
        outputs={name: "predictions" if name == "submission" else _renamed(name) for name in inference.all_outputs()},
    )
    pretrain_pipeline = data_pipeline.only_nodes(
        "validate_rulings", "normalise_train_rulings", "normalise_test_rulings"
    ) + pretrain.create_pipeline(parameters["pretraining"]["candidates"])
    return {
        "__default__": train_pipeline,
        "data": data_pipeline,
        "train": train_pipeline,
        "predict": predict_pipeline,
        "pretrain": pretrain_pipeline,
    }


def _renamed(name: str) -> str:
    """``new_<name>``, or within a namespace ``<namespace>.new_<name>`` (the namespace stays its own)."""
    namespace, _, base = name.rpartition(".")
    return f"{namespace}.new_{base}" if namespace else f"new_{base}"


def _shaping_parameters() -> dict:
    """The parameters from conf/ (base, then KEDRO_ENV or local) that shape the pipelines: `folds` (the
    fold count), the names of the `transformer_candidates` and the candidates `pretraining` names; read
    when the pipelines are built, before any run-time parameter is known."""
    arguments = {**settings.CONFIG_LOADER_ARGS, "env": os.environ.get("KEDRO_ENV")}
    loader = OmegaConfigLoader(conf_source=str(_project_root() / settings.CONF_SOURCE), **arguments)
    parameters = loader["parameters"]
    return {
        "folds": parameters["folds"],
        "transformer_candidates": parameters["transformer_candidates"],
        "pretraining": parameters.get("pretraining", {"candidates": []}),
    }


def _project_root() -> Path:
    """The folder holding the project's pyproject.toml: the working folder or one above it (a session
    opened from notebooks/, say)."""
    here = Path.cwd().resolve()
    return next((folder for folder in (here, *here.parents) if (folder / "pyproject.toml").is_file()), here)
