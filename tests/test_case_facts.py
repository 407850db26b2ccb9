"""The case facts a transformer candidate's classifier reads beside the text (`model.case_facts`): what
they add to its output, their columns and statistics from the fold's training cases alone, the fold
job's fingerprint, the saved model's round trip, the predict pipeline's agreement with the fold's own
predictions, and a candidate without them unchanged."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from transformers import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

from sentence_reduction.finetune.engine import run_fold
from sentence_reduction.finetune.job import FoldJob
from sentence_reduction.finetune.model import CaseFactsClassifier, ModelSettings, build_model
from sentence_reduction.finetune.predictor import Predictor, predict_probabilities
from sentence_reduction.finetune.text import build_character_vocabulary, build_tokenizer
from sentence_reduction.pipelines.data.folds import case_folds
from sentence_reduction.pipelines.node_tags import FOLD_TRAINING
from sentence_reduction.pipelines.train import create_predict_pipeline, create_train_pipeline
from sentence_reduction.pipelines.train.parsing import parse_rulings
from sentence_reduction.pipelines.train.transformer import (
    case_facts,
    fact_columns,
    predict_fold,
    prepare_tokenizer,
    train_fold,
)

from .conftest import RULINGS
from .test_candidates import TINY_BERT, TINY_TRAINING, sample_tables  # noqa: F401 (a fixture)

TINY_MODEL = {"config": TINY_BERT, "max_length": 32}


@pytest.fixture(scope="module")
def sample(sample_tables: dict) -> dict:  # noqa: F811 (the fixture imported above)
    """The generated sample's 200 rulings (2 folds) and 20 test rulings (`sample_tables`), both parsed."""
    return {
        "model_input": sample_tables["model_input_table"],
        "fold_assignments": sample_tables["fold_assignments"],
        "test_cases": sample_tables["normalised_test_cases"],
        "class_table": sample_tables["class_table"],
        "parsed_features": parse_rulings(sample_tables["model_input_table"]),
        "test_parsed_features": parse_rulings(sample_tables["normalised_test_cases"]),
    }


def _train_fold(sample: dict, tmp_path, model: dict, **parsed) -> tuple:
    tokenizer = prepare_tokenizer(sample["model_input"], model)
    training = {**TINY_TRAINING, "work_dir": str(tmp_path / "work")}
    result = train_fold(
        sample["model_input"],
        sample["fold_assignments"],
        sample["test_cases"],
        tokenizer,
        sample["class_table"],
        {},
        model,
        training,
        "megatron_bert",
        0,
        **parsed,
    )
    return tokenizer, training, result


def _parsed(sample: dict) -> dict:
    return {name: sample[name] for name in ("parsed_features", "test_parsed_features")}


# The classifier -------------------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ["megatron-bert", "bert", "xlm-roberta"])
def test_a_new_classifier_with_case_facts_starts_as_the_texts_alone_and_keeps_its_encoder(architecture):
    settings = ModelSettings(config=TINY_BERT, architecture=architecture)
    facts = torch.randn(10, 3, dtype=torch.float64) * 5 + 2
    torch.manual_seed(0)
    text_alone = build_model(settings, num_labels=4, vocab_size=60).eval()
    torch.manual_seed(0)
    model = build_model(settings, 4, 60, fact_columns=["a", "b", "c"], training_facts=facts.tolist()).eval()

    assert isinstance(model, CaseFactsClassifier) and isinstance(model, type(text_alone))
    assert model.config.case_fact_columns == ["a", "b", "c"]
    # The encoder is the architecture's own: its runtime settings and regional compilation apply.
    assert type(model.base_model) is type(text_alone.base_model) and len(model.base_model.encoder.layer) == 1
    ids = torch.randint(5, 60, (2, 9))
    with torch.no_grad():
        before = model(input_ids=ids, case_facts=facts[:2].float()).logits
        assert torch.equal(before, text_alone(input_ids=ids).logits)  # the facts' weights start at zero
        model.facts_classifier.linear.weight.fill_(0.5)
        assert not torch.allclose(model(input_ids=ids, case_facts=facts[:2].float()).logits, before)
        assert not torch.allclose(
            model(input_ids=ids, case_facts=facts[:2].float()).logits,
            model(input_ids=ids, case_facts=facts[2:4].float()).logits,
        )


def test_the_classifier_standardises_the_facts_with_the_training_rows_statistics():
    training_facts = [[1.0, 10.0, 3.0], [3.0, 30.0, 3.0], [5.0, 20.0, 3.0]]
    model = build_model(
        ModelSettings(config=TINY_BERT), 4, 60, fact_columns=["a", "b", "c"], training_facts=training_facts
    )
    layer = model.facts_classifier
    assert torch.allclose(layer.mean, torch.tensor([3.0, 20.0, 3.0]))
    assert torch.allclose(layer.scale, torch.tensor([np.std([1, 3, 5]), np.std([10, 30, 20]), 1.0]).float())
    with pytest.raises(ValueError, match=r"a row of 2 facts per training case, not shape \(3, 3\)"):
        build_model(ModelSettings(config=TINY_BERT), 4, 60, fact_columns=["a", "b"], training_facts=training_facts)


def test_the_predictor_says_in_one_line_when_the_facts_do_not_fit_the_model():
    vocabulary = build_character_vocabulary(RULINGS)
    tokenizer = build_tokenizer(vocabulary)
    settings, training = ModelSettings(config=TINY_BERT), FoldJob(**_job_values(tokenizer)).training
    reads_facts = build_model(settings, 4, len(vocabulary), fact_columns=["a", "b"], training_facts=[[1, 2], [3, 4]])
    text_alone = build_model(settings, 4, len(vocabulary))
    texts = RULINGS[:3]
    for model, facts, message in [
        (reads_facts, None, "the model reads 2 case facts: none were given"),
        (reads_facts, [[1.0, 2.0]] * 2, r"case facts of shape \(2, 2\): a row of 2 facts per text \(3\)"),
        (text_alone, [[1.0]] * 3, "the model reads no case facts: case facts were given"),
    ]:
        with pytest.raises(ValueError, match=message):
            Predictor(model, tokenizer, settings, training)(texts, facts)
    assert Predictor(reads_facts, tokenizer, settings, training)([], []).shape == (0, 4)


# The fold job ---------------------------------------------------------------------------------------


def _job_values(tokenizer, **changes) -> dict:
    texts = RULINGS * 3
    values = {
        "name": "fold_0",
        "train_texts": texts[:16],
        "train_labels": [index % 2 for index in range(16)],
        "eval_texts": texts[16:24],
        "eval_labels": [index % 2 for index in range(8)],
        "predict_texts": RULINGS[:4],
        "tokenizer": tokenizer,
        "class_months": [0, 1],
        "model": TINY_MODEL,
        "training": {**TINY_TRAINING, "arguments": {**TINY_TRAINING["arguments"], "num_train_epochs": 3}},
    }
    return {**values, **changes}


def test_a_classifier_with_case_facts_learns_what_only_the_facts_say(tmp_path):
    """Every text the same ruling, the class in one fact alone: with the facts the classifier tells the
    classes apart; the text's classifier cannot."""
    tokenizer = build_tokenizer(build_character_vocabulary(RULINGS))
    same_text = {name: [RULINGS[0]] * count for name, count in [("train_texts", 16), ("eval_texts", 8)]}
    text_alone = run_fold(FoldJob(**_job_values(tokenizer, **same_text)), tmp_path / "text")
    facts = {
        "fact_columns": ["the_class", "noise"],
        **{
            f"{split}_facts": [[float(index % 2), float(index % 3)] for index in range(count)]
            for split, count in [("train", 16), ("eval", 8), ("predict", 4)]
        },
    }
    with_facts = run_fold(FoldJob(**_job_values(tokenizer, **same_text, **facts)), tmp_path / "facts")

    assert np.allclose(text_alone.eval_probabilities, text_alone.eval_probabilities[0], atol=1e-6)
    assert with_facts.eval_probabilities.argmax(axis=1).tolist() == [index % 2 for index in range(8)]
    assert with_facts.predict_probabilities.argmax(axis=1).tolist() == [0, 1, 0, 1]


def test_the_fold_fingerprint_changes_with_the_facts_and_the_setting():
    tokenizer = build_tokenizer(build_character_vocabulary(RULINGS))
    facts = {
        "fact_columns": ["a"],
        "train_facts": [[float(index)] for index in range(16)],
        "eval_facts": [[0.0]] * 8,
        "predict_facts": [[0.0]] * 4,
    }
    fingerprints = {
        FoldJob(**_job_values(tokenizer)).fingerprint(),
        FoldJob(**_job_values(tokenizer, model={**TINY_MODEL, "case_facts": True}, **facts)).fingerprint(),
        FoldJob(**_job_values(tokenizer, model={**TINY_MODEL, "case_facts": True}, **facts)).fingerprint(),
        FoldJob(
            **_job_values(tokenizer, model={**TINY_MODEL, "case_facts": True}, **{**facts, "eval_facts": [[1.0]] * 8})
        ).fingerprint(),
        FoldJob(**_job_values(tokenizer, model={**TINY_MODEL, "case_fact_min_cases": 3})).fingerprint(),
    }
    assert len(fingerprints) == 4  # the same job twice, four different ones


def test_a_saved_classifier_with_case_facts_loads_back_and_predicts_the_same(tmp_path):
    tokenizer = build_tokenizer(build_character_vocabulary(RULINGS))
    facts = {
        "fact_columns": ["a", "b"],
        **{
            f"{split}_facts": [[float(index % 5), float(index) ** 2] for index in range(count)]
            for split, count in [("train", 16), ("eval", 8), ("predict", 4)]
        },
    }
    job = FoldJob(**_job_values(tokenizer, **facts))
    result = run_fold(job, tmp_path / "work")

    assert {"facts_classifier.mean", "facts_classifier.scale", "facts_classifier.linear.weight"} <= set(
        load_file(result.model.folder / "model.safetensors")
    )
    assert json.loads((result.model.folder / "config.json").read_text())["case_fact_columns"] == ["a", "b"]
    loaded = result.model.load()
    assert isinstance(loaded, CaseFactsClassifier)
    assert isinstance(loaded, MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(loaded.config)])
    for texts, split, expected in [
        (job.eval_texts, "eval", result.eval_probabilities),
        (job.predict_texts, "predict", result.predict_probabilities),
    ]:
        again = predict_probabilities(loaded, job.load_tokenizer(), texts, job.model, job.training, job.facts(split))
        assert np.array_equal(again, expected)


# The nodes: facts from the parsed rulings -------------------------------------------------------------


def test_the_facts_columns_and_statistics_come_from_the_folds_training_cases_alone(sample, tmp_path):
    """Held-out cases of a crime no training case has, and numbers far beyond the training cases': no
    column of their own, and neither moves the standardisation."""
    model_input, parsed = sample["model_input"], sample["parsed_features"].copy()
    held_out = case_folds(model_input, sample["fold_assignments"]) == 0
    parsed_rows = parsed.set_index("id").loc[model_input["id"]]
    parsed_rows.loc[held_out, "crime"] = "只在验证集的罪"
    parsed_rows.loc[held_out, "reward_points"] = 1e9
    parsed = parsed_rows.reset_index()
    model = {**TINY_MODEL, "case_facts": True, "case_fact_min_cases": 2}
    _, _, (fold_model, oof, _, _) = _train_fold(
        sample, tmp_path, model, parsed_features=parsed, test_parsed_features=sample["test_parsed_features"]
    )

    classifier = fold_model.load()
    train = model_input[~held_out]
    columns = fact_columns(parsed.set_index("id").loc[train["id"]].reset_index(), min_cases=2)
    assert classifier.config.case_fact_columns == columns
    assert "crime=只在验证集的罪" not in columns and any(column.startswith("crime=") for column in columns)
    assert "reward_points" in columns and "recommended_months:missing" in columns
    training_facts = np.asarray(case_facts(train, parsed, columns))
    scale = training_facts.std(axis=0)
    assert np.allclose(classifier.facts_classifier.mean.numpy(), training_facts.mean(axis=0), atol=1e-5)
    assert np.allclose(classifier.facts_classifier.scale.numpy(), np.where(scale > 0, scale, 1), atol=1e-5)
    assert sorted(oof["id"]) == sorted(model_input["id"][held_out])


def test_the_predict_pipeline_gives_the_folds_own_test_probabilities(sample, tmp_path):
    model = {**TINY_MODEL, "case_facts": True}
    tokenizer, training, (fold_model, _, tested, _) = _train_fold(sample, tmp_path, model, **_parsed(sample))
    assert fold_model.load().config.case_fact_columns
    test_parsed = sample["test_parsed_features"].iloc[::-1]  # matched by id, not by order
    predicted = predict_fold(fold_model, tokenizer, sample["test_cases"], model, training, test_parsed)
    pd.testing.assert_frame_equal(predicted, tested)
    # Other facts, other probabilities: the predictions read them.
    other = sample["test_parsed_features"].assign(recommended_months=24.0, reward_points=500.0, praise_count=9)
    differ = predict_fold(fold_model, tokenizer, sample["test_cases"], model, training, other)
    assert not np.allclose(differ.drop(columns="id").to_numpy(), tested.drop(columns="id").to_numpy())


def test_a_candidate_without_case_facts_ignores_the_parsed_rulings(sample, tmp_path, caplog):
    _, _, (fold_model, oof, tested, _) = _train_fold(sample, tmp_path, TINY_MODEL)
    with caplog.at_level(logging.INFO):
        _, _, (_, oof_again, tested_again, _) = _train_fold(sample, tmp_path, TINY_MODEL, **_parsed(sample))
    assert any("finished result found" in message for message in caplog.messages)  # the same job
    pd.testing.assert_frame_equal(oof_again, oof)
    pd.testing.assert_frame_equal(tested_again, tested)
    classifier = fold_model.load()
    assert not isinstance(classifier, CaseFactsClassifier) and not hasattr(classifier.config, "case_fact_columns")
    assert not any(key.startswith("facts_classifier") for key in load_file(fold_model.folder / "model.safetensors"))


def test_every_transformer_fold_and_its_predictions_get_the_parsed_rulings():
    train, predict = create_train_pipeline(2, ["megatron_bert"]), create_predict_pipeline(2, ["megatron_bert"])
    folds = [node for node in train.nodes if FOLD_TRAINING in node.tags]
    predictions = [node for node in predict.nodes if node.name.endswith("predict_fold")]
    assert len(folds) == len(predictions) == 2
    assert all({"parsed_features", "test_parsed_features"} <= set(node.inputs) for node in folds)
    assert all("test_parsed_features" in node.inputs for node in predictions)
    producers = {output: node.name for node in predict.nodes for output in node.outputs}
    assert producers["test_parsed_features"] == "parse_test_rulings"  # the predict pipeline parses the test cases
