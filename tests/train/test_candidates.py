"""Transformer candidates by configuration: an encoder of another architecture from a folder in the hub's
layout, the `training` settings each candidate merges over the shared ones, two candidates' pipelines
feeding one ensemble, and folds that resume per candidate."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Node
from kedro.runner import SequentialRunner
from safetensors.torch import load_file
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

from sentence_reduction.config_loading import CONFIG_LOADER_ARGS, load_parameters
from sentence_reduction.finetune.arguments import InTrainingEvaluation, LauncherSettings, TrainingSettings
from sentence_reduction.finetune.model import ModelSettings, build_model
from sentence_reduction.finetune.text import build_character_vocabulary
from sentence_reduction.pipelines.data.folds import NOT_HELD_OUT, assign_folds, case_folds
from sentence_reduction.pipelines.data.ingestion import validate_rulings
from sentence_reduction.pipelines.data.labels import build_class_table, encode_labels
from sentence_reduction.pipelines.data.normalisation import normalise_rulings
from sentence_reduction.pipelines.node_tags import FOLD_TRAINING, INFERENCE
from sentence_reduction.pipelines.train import create_predict_pipeline, create_train_pipeline
from sentence_reduction.pipelines.train.candidates import CLASSICAL_CANDIDATES, Candidate
from sentence_reduction.pipelines.train.out_of_fold import probability_table
from sentence_reduction.pipelines.train.parsing import parse_rulings
from sentence_reduction.pipelines.train.transformer import candidate_training, prepare_tokenizer, train_fold
from tests.conftest import PROJECT_ROOT, RULINGS, TINY_TRAINING

TINY_BERT = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


def hub_folder(folder: Path, weights: str) -> Path:
    """A BERT encoder (masked-LM head, as checkpoints on the hub come) in the hub's layout: config.json,
    vocab.txt and its weights as ``weights`` (``model.safetensors`` or a pickled ``pytorch_model.bin``)."""
    vocabulary = build_character_vocabulary(RULINGS)
    torch.manual_seed(0)
    encoder = BertForMaskedLM(BertConfig(vocab_size=len(vocabulary), max_position_embeddings=64, **TINY_BERT))
    if weights == "model.safetensors":
        encoder.save_pretrained(folder)
    else:
        encoder.config.save_pretrained(folder)
        torch.save(encoder.state_dict(), folder / weights)
    (folder / "vocab.txt").write_text("\n".join(vocabulary) + "\n", encoding="utf-8")
    assert sorted(path.name for path in folder.iterdir()) == sorted(["config.json", "vocab.txt", weights])
    return folder


# An encoder of another architecture through a candidate's `model.pretrained_path` ---------------------


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_a_bert_encoder_in_the_hubs_layout_loads_through_a_candidates_pretrained_path(tmp_path, weights, caplog):
    folder = hub_folder(tmp_path / "bert-tiny", weights)
    model_parameters = {"pretrained_path": str(folder), "architecture": "bert", "max_length": 48}
    tokenizer = prepare_tokenizer(pd.DataFrame({"fact": RULINGS}), model_parameters)
    vocabulary = (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert tokenizer.convert_ids_to_tokens(list(range(len(vocabulary)))) == vocabulary  # the folder's own

    with caplog.at_level(logging.INFO):
        model = build_model(ModelSettings.from_params(model_parameters), num_labels=5, vocab_size=len(vocabulary))
    assert isinstance(model, BertForSequenceClassification) and model.config.num_labels == 5
    saved = BertForMaskedLM.from_pretrained(folder).state_dict()
    encoder = {name: tensor for name, tensor in model.state_dict().items() if name.startswith("bert.encoder.")}
    assert encoder and all(torch.equal(tensor, saved[name]) for name, tensor in encoder.items())

    reports = [record.getMessage() for record in caplog.records if str(folder) in record.getMessage()]
    assert len(reports) == 1 and "\n" not in reports[0], reports
    report = reports[0]
    assert report.startswith(f"BertForSequenceClassification from {folder}: ")
    loaded = len(model.state_dict()) - 4  # all but the new pooler and classifier
    assert f"{loaded} tensors loaded" in report
    assert "new: bert.pooler.dense.bias, bert.pooler.dense.weight, classifier.bias, classifier.weight;" in report
    assert "unused: cls.predictions." in report  # the masked-LM head the classifier has no use for


LOAD_SCRIPT = """
import logging, sys
from sentence_reduction.finetune.model import ModelSettings, build_model
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
print("loading", file=sys.stderr, flush=True)
build_model(ModelSettings(pretrained_path=sys.argv[1]), num_labels=5, vocab_size=0)
"""


def test_a_load_prints_its_one_report_line_and_nothing_else(tmp_path):
    """What a reader sees of one load, once per fold: the report line, no table, warning or progress bar."""
    folder = hub_folder(tmp_path / "bert-tiny", "model.safetensors")
    completed = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, str(folder)], capture_output=True, text=True, timeout=300, check=True
    )
    output = (completed.stdout + completed.stderr).split("loading\n", 1)[1]
    assert [line for line in output.splitlines() if line.strip()] == [
        line for line in output.splitlines() if line.startswith("sentence_reduction.finetune.model: ")
    ]
    assert output.count("\n") == 1, output[-3000:]


# The `training` settings ---------------------------------------------------------------------------


def test_training_settings_default_to_one_process_and_the_projects_gpu_choices():
    settings = TrainingSettings()
    assert TrainingSettings.from_params({}) == settings
    assert settings.arguments == {} and settings.gpu_arguments == {} and settings.inductor_config == {}
    assert settings.work_dir == "data/06_models/work"
    assert settings.in_training_evaluation == InTrainingEvaluation(fraction=0.01, min_rows=100)
    assert settings.launcher == LauncherSettings() and settings.launcher.world_size == 1
    assert settings.checkpoint_every_minutes is None
    # what the GPU path does once asked to compile, to use torch's fused AdamW: as conf/base sets them
    assert settings.compiled_region == "layers" and settings.compile_predictions and settings.clip_in_fused_optimizer
    assert not (settings.deepspeed_single_process or settings.bf16_master_weights)
    # settings read back from their own dict (the node outputs and the fold job hold them so) are equal
    assert TrainingSettings.from_params(dataclasses.asdict(settings)) == settings


@pytest.mark.parametrize(
    "parameters, named",
    [
        ({"arguments": {}, "regional_compile": True}, "regional_compile"),
        ({"in_training_evaluation": {"fractoin": 0.1}}, "fractoin"),
        ({"launcher": {"nproc": 2}}, "nproc"),
    ],
    ids=["top_level", "in_training_evaluation", "launcher"],
)
def test_an_unknown_training_parameter_stops_with_one_line_naming_it(parameters, named):
    with pytest.raises((ValueError, TypeError)) as raised:
        TrainingSettings.from_params(parameters)
    message = str(raised.value)
    assert named in message and "\n" not in message
    with pytest.raises((ValueError, TypeError), match=named):  # a candidate's own `training` too
        TrainingSettings().merged_with(parameters)


def test_a_candidates_training_is_merged_key_by_key_over_the_shared_one():
    shared = TrainingSettings.from_params(
        {
            "arguments": {"learning_rate": 1e-3, "num_train_epochs": 4, "seed": 42},
            "gpu_arguments": {"bf16": True, "accelerator_config": {"non_blocking": True}},
            "launcher": {"nproc_per_node": 1, "master_port": 29500},
            "in_training_evaluation": {"fraction": 0.01, "min_rows": 100},
        }
    )
    before = dataclasses.asdict(shared)
    merged = shared.merged_with(
        {
            "arguments": {"learning_rate": 5e-4},
            "gpu_arguments": {"accelerator_config": {"even_batches": False}},
            "launcher": {"nproc_per_node": 2},
            "bf16_master_weights": True,
        }
    )
    assert merged.arguments == {"learning_rate": 5e-4, "num_train_epochs": 4, "seed": 42}
    assert merged.gpu_arguments == {"bf16": True, "accelerator_config": {"non_blocking": True, "even_batches": False}}
    assert merged.launcher == LauncherSettings(nproc_per_node=2, master_port=29500)
    assert merged.in_training_evaluation == InTrainingEvaluation(fraction=0.01, min_rows=100)
    assert merged.bf16_master_weights and not shared.bf16_master_weights
    assert dataclasses.asdict(shared) == before  # the shared settings are left as they were
    assert shared.merged_with({}) == shared
    # the node that hands each candidate its settings does the same on the parameters
    assert candidate_training(before, {"arguments": {"learning_rate": 5e-4}})["arguments"] == {
        "learning_rate": 5e-4,
        "num_train_epochs": 4,
        "seed": 42,
    }


# Two candidates' pipelines -------------------------------------------------------------------------

CANDIDATES = ["megatron_bert", "bert"]


def test_two_candidates_train_on_every_fold_in_their_namespaces_and_both_feed_the_ensemble(monkeypatch):
    monkeypatch.setattr(Node, "__dotted_dataset_name_warned__", False, raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train = create_train_pipeline(2, CANDIDATES)
    assert not [warning for warning in caught if "contain '.'" in str(warning.message)]

    folds = {node.namespace: node for node in train.nodes if FOLD_TRAINING in node.tags}
    assert set(folds) == {f"{name}.fold_{fold}" for name in CANDIDATES for fold in (0, 1)}
    for namespace, node in folds.items():
        name = namespace.split(".")[0]
        assert node.name == f"{namespace}.train_fold"
        own = {f"{name}.tokenizer", f"{name}.deepspeed_config", f"{name}.training"}
        assert own | {f"params:transformer_candidates.{name}.model"} <= set(node.inputs)
        assert set(node.outputs) == {
            f"{namespace}.{output}" for output in ("model", "oof_probabilities", "test_probabilities", "metrics")
        }
    for name in CANDIDATES:  # each candidate's folds stacked into its own table and metrics
        stack = next(node for node in train.nodes if node.outputs == [f"{name}_oof_probabilities"])
        assert stack.inputs == [f"{name}.fold_0.oof_probabilities", f"{name}.fold_1.oof_probabilities"]
        assert f"{name}_metrics" in train.all_outputs() and f"{name}_test_probabilities" in train.all_outputs()

    everyone = [*CANDIDATES, *CLASSICAL_CANDIDATES]
    choose = next(node for node in train.nodes if node.name == "choose_ensemble")
    assert {f"{name}_oof_probabilities" for name in everyone} <= set(choose.inputs)
    apply = next(node for node in train.nodes if node.name == "apply_ensemble")
    assert set(apply.inputs) == {"ensemble", *(f"{name}_test_probabilities" for name in everyone)}
    plot = next(node for node in train.nodes if node.name == "plot_candidates")
    assert {f"{name}_metrics" for name in everyone} <= set(plot.inputs)
    assert "submission" in train.all_outputs()


def test_predict_is_each_fold_models_predictions_and_the_nodes_tagged_inference():
    train, predict = create_train_pipeline(2, CANDIDATES), create_predict_pipeline(2, CANDIDATES)
    fold_predictions = {f"{name}.fold_{fold}.predict_fold" for name in CANDIDATES for fold in (0, 1)}
    tagged = {node.name for node in train.nodes if INFERENCE in node.tags}
    assert {node.name for node in predict.nodes} == fold_predictions | tagged
    assert all(INFERENCE in node.tags for node in predict.nodes)
    assert not [node.name for node in predict.nodes if FOLD_TRAINING in node.tags or "fit_" in node.name]
    # it reads the saved models, never the training cases
    assert {f"{name}.fold_{fold}.model" for name in CANDIDATES for fold in (0, 1)} <= predict.inputs()
    assert {"baseline_models", "regression_models", "ordinal_models", "trees_models", "ensemble"} <= predict.inputs()
    assert "model_input_table" not in predict.inputs() and "fold_assignments" not in predict.inputs()
    assert "submission" in predict.outputs()


# The classical candidates, from one registry --------------------------------------------------------


@pytest.fixture(scope="module")
def sample_tables() -> dict:
    """200 rows of the generated sample as the data pipeline makes them (2 folds), 20 test rows, and the
    project's parameters."""
    parameters = load_parameters(PROJECT_ROOT / "conf", "local", {})
    raw = pd.read_csv(PROJECT_ROOT / "data" / "01_raw" / "sample" / "train.csv", dtype=str).head(200)
    test_raw = pd.read_csv(PROJECT_ROOT / "data" / "01_raw" / "sample" / "testA.csv", dtype=str).head(20)
    cases, test_cases = validate_rulings(raw, test_raw, parameters["columns"], parameters["validation"])
    class_table = build_class_table(cases, parameters["label_encoding"])
    model_input = encode_labels(normalise_rulings(cases, parameters["text_normalisation"]), class_table)
    return {
        "model_input_table": model_input,
        "fold_assignments": assign_folds(model_input, {**parameters["folds"], "n_splits": 2}),
        "class_table": class_table,
        "normalised_test_cases": normalise_rulings(test_cases, parameters["text_normalisation"]),
        "parameters": parameters,
    }


@pytest.mark.parametrize("name", list(CLASSICAL_CANDIDATES))
def test_each_classical_candidate_fits_on_the_folds_and_predicts_with_the_one_shape(sample_tables, name):
    candidate = CLASSICAL_CANDIDATES[name]
    model_input, test_cases = sample_tables["model_input_table"], sample_tables["normalised_test_cases"]
    class_table, parameters = sample_tables["class_table"], sample_tables["parameters"]
    assert candidate.parameters and set(candidate.parameters) <= set(parameters)  # its own keys, in conf/base
    models, oof = candidate.fit(
        model_input,
        parse_rulings(model_input),
        sample_tables["fold_assignments"],
        class_table,
        *(parameters[key] for key in candidate.parameters),
    )
    assert len(models) == 2
    assert sorted(oof["id"]) == sorted(model_input["id"]) and oof.shape[1] == 1 + len(class_table)
    test = candidate.predict(models, test_cases, parse_rulings(test_cases).iloc[::-1], class_table)
    assert test["id"].tolist() == test_cases["id"].tolist()
    assert test.shape[1] == 1 + len(class_table) and np.allclose(test.drop(columns="id").sum(axis=1), 1)


class _KeptDataset(MemoryDataset):
    """An in-memory dataset that the runner does not empty once its last reader has run."""

    def _release(self) -> None:
        pass


def _fit_class_frequencies(model_input, parsed_features, fold_assignments, class_table):
    """A candidate of the registry's shape for the test below: each fold's class frequencies."""
    folds = case_folds(model_input, fold_assignments)
    models, tables = [], []
    for fold in sorted(set(folds) - {NOT_HELD_OUT}):
        counts = np.bincount(model_input["class_id"][folds != fold], minlength=len(class_table)) + 1.0
        models.append(counts / counts.sum())
        held_out = model_input["id"][folds == fold]
        tables.append(probability_table(held_out, np.tile(models[-1], (len(held_out), 1))))
    return models, pd.concat(tables, ignore_index=True)


def _predict_class_frequencies(models, test_cases, test_parsed_features, class_table):
    return probability_table(test_cases["id"], np.tile(np.mean(models, axis=0), (len(test_cases), 1)))


def test_a_candidate_added_to_the_registry_is_fitted_evaluated_predicted_and_blended(sample_tables, monkeypatch):
    for other in ("trees", "regression", "ordinal"):  # quicker: the baseline beside the new one
        monkeypatch.delitem(CLASSICAL_CANDIDATES, other)
    monkeypatch.setitem(
        CLASSICAL_CANDIDATES,
        "frequencies",
        Candidate(_fit_class_frequencies, _predict_class_frequencies, ()),
    )
    train = create_train_pipeline(2, [])
    names = {node.name for node in train.nodes}
    assert {"fit_frequencies", "evaluate_frequencies", "predict_frequencies"} <= names
    fit = next(node for node in train.nodes if node.name == "fit_frequencies")
    assert fit.inputs == ["model_input_table", "parsed_features", "fold_assignments", "class_table"]
    predict = create_predict_pipeline(2, [])
    assert "predict_frequencies" in {node.name for node in predict.nodes} and "frequencies_models" in predict.inputs()

    # The project's catalog keeps its datasets by the factories, each in its file.
    loader = OmegaConfigLoader(str(PROJECT_ROOT / "conf"), **CONFIG_LOADER_ARGS)
    catalog = DataCatalog.from_config(loader["catalog"])
    for dataset, path in [
        ("frequencies_models", "data/06_models/frequencies_models.pkl"),
        ("frequencies_oof_probabilities", "data/07_model_output/frequencies_oof_probabilities.parquet"),
        ("frequencies_test_probabilities", "data/07_model_output/frequencies_test_probabilities.parquet"),
        ("frequencies_metrics", "data/08_reporting/frequencies_metrics.json"),
    ]:
        assert str(catalog.get(dataset)._describe()).count(path) == 1, dataset

    # The train pipeline (no transformer candidate) runs it beside the others; the ensemble chooses among all.
    parameters = sample_tables["parameters"]
    catalog = DataCatalog(
        {
            **{name: MemoryDataset(table) for name, table in sample_tables.items() if name != "parameters"},
            **{
                name: MemoryDataset(parameters[name.removeprefix("params:")])
                for name in train.inputs()
                if "params:" in name
            },
        }
    )
    for name in ("ensemble", *(f"{candidate}_metrics" for candidate in CLASSICAL_CANDIDATES)):
        catalog[name] = _KeptDataset()  # read after the run
    SequentialRunner().run(train, catalog)
    metrics = {name: catalog.load(f"{name}_metrics") for name in CLASSICAL_CANDIDATES}
    assert metrics["frequencies"]["cases"] == 200
    assert set(catalog.load("ensemble")["weights"]) == set(CLASSICAL_CANDIDATES)
    assert metrics["baseline"]["final_score"] > metrics["frequencies"]["final_score"]
    assert catalog.load("submission")["id"].tolist() == sample_tables["normalised_test_cases"]["id"].tolist()


# Resume per candidate and fold ---------------------------------------------------------------------


def test_a_finished_fold_of_one_candidate_is_reused_while_the_other_candidates_folds_train(tmp_path, caplog):
    """Each candidate's folds keep their work in `work_dir/<candidate>/fold_<n>`: the second run of the
    train pipeline reuses what the first finished and trains only what it did not (here the BERT
    candidate, loaded from a folder in the hub's layout)."""
    texts = RULINGS * 3
    model_input = pd.DataFrame(
        {
            "id": [f"case_{index}" for index in range(len(texts))],
            "fact": texts,
            "class_id": [index % 4 for index in range(len(texts))],
            "label": [index % 4 for index in range(len(texts))],
        }
    )
    fold_assignments = pd.DataFrame({"id": model_input["id"], "fold": [index % 2 for index in range(len(texts))]})
    test_cases = pd.DataFrame({"id": ["test_0", "test_1"], "fact": RULINGS[:2]})
    class_table = pd.DataFrame({"months": [0, 1, 2, 3]})
    models = {
        "megatron_bert": {"config": TINY_BERT, "max_length": 48},
        "bert": {"pretrained_path": str(hub_folder(tmp_path / "bert-tiny", "model.safetensors")), "max_length": 48},
    }
    training = {**TINY_TRAINING, "work_dir": str(tmp_path / "work")}
    work = tmp_path / "work"

    def run(name: str, fold: int):
        tokenizer = prepare_tokenizer(model_input, models[name])
        return train_fold(
            model_input, fold_assignments, test_cases, tokenizer, class_table, {}, models[name], training, name, fold
        )

    first = run("megatron_bert", 0)  # the first run trained this fold, then stopped
    finished = work / "megatron_bert" / "fold_0" / "result" / "fingerprint"
    written_at = finished.stat().st_mtime_ns
    assert not (work / "bert").exists() and not (work / "megatron_bert" / "fold_1").exists()

    with caplog.at_level(logging.INFO):
        again = run("megatron_bert", 0)
        bert = run("bert", 0)
        second_fold = run("megatron_bert", 1)
    reused = [message for message in caplog.messages if "finished result found" in message]
    assert reused == [
        f"megatron_bert.fold_0: finished result found in {work / 'megatron_bert' / 'fold_0'}, not retraining"
    ]
    assert finished.stat().st_mtime_ns == written_at
    pd.testing.assert_frame_equal(again[1], first[1])
    for name, fold in (("bert", 0), ("megatron_bert", 1)):
        assert (work / name / f"fold_{fold}" / "result" / "fingerprint").is_file()
    assert bert[1]["id"].tolist() == first[1]["id"].tolist()  # the same held-out cases, another model
    assert set(second_fold[1]["id"]).isdisjoint(first[1]["id"])
    assert set(load_file(bert[0].folder / "model.safetensors")) >= {"classifier.weight", "bert.pooler.dense.weight"}
