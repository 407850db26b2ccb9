"""The logged model: rows parsed by MLflow become the text table the pipeline reads from a file, once
they are found to be rulings; the model loads its artifacts once and runs the pipeline's nodes itself.
(The model end to end, predicted and served, is in test_pipelines.py; bad requests to a served model
and its log, here.)"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Node, Pipeline
from mlflow.exceptions import MlflowException
from transformers import MegatronBertConfig, MegatronBertForSequenceClassification

from sentence_reduction.datasets import SequenceClassifierDataset
from sentence_reduction.finetune.job import SavedModel
from sentence_reduction.input_errors import InputDataError
from sentence_reduction.pipelines.train import column_features as column_features_module
from sentence_reduction.serving import (
    RequestLimits,
    RulingsPipelineModel,
    checked_rulings,
    model_artifacts,
    rulings_table,
)


def test_rulings_parsed_by_mlflow_become_text_with_empty_fields_empty():
    parsed = pd.DataFrame({" id ": [7, 8, 9], "fact": ["罪犯某", np.nan, "x"]})  # as read_csv infers them
    table = rulings_table(parsed)
    assert list(table.columns) == ["id", "fact"]
    assert table.to_dict("list") == {"id": ["7", "8", "9"], "fact": ["罪犯某", "", "x"]}


def test_the_model_carries_every_input_of_the_inference_pipeline_but_the_rulings_and_parameters():
    inference = Pipeline(
        [
            Node(lambda raw, columns: raw, ["test_raw", "params:columns"], "cases", name="validate"),
            Node(
                lambda cases, model, rule: cases,
                ["cases", "fold_model", "decoding_rule"],
                "predictions",
                name="predict",
            ),
        ]
    )
    assert model_artifacts(inference) == {"fold_model", "decoding_rule"}


LIMITS = RequestLimits(max_rows=3, max_text_chars=50)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ({"id": ["a", "b"], "fact": ["罪犯某", 12345]}, "<input>, row 2, field 'fact': not text: int 12345"),
        ({"id": ["a"], "fact": [["罪犯", "某"]]}, "<input>, row 1, field 'fact': not text: list ['罪犯', '某']"),
        ({"id": ["a"], "fact": [{"text": "x"}]}, "<input>, row 1, field 'fact': not text: dict {'text': 'x'}"),
        ({"id": [["a"]], "fact": ["罪犯某"]}, "<input>, row 1, field 'id': not text or a number: list ['a']"),
        (
            {"id": ["a", "b"], "fact": ["罪犯某", "刑" * 51]},
            "<input>, row 2, field 'fact': 51 characters, more than a ruling may have here "
            "(50, serving.max_text_chars)",
        ),
        (
            {"id": list("abcd"), "fact": ["罪犯某"] * 4},
            "<input>: 4 rulings in one request, more than 3 (serving.max_rows): send fewer",
        ),
    ],
    ids=["number", "list", "object", "list-id", "too-long", "too-many"],
)
def test_a_request_that_is_not_rulings_is_refused_with_one_line(rows, message):
    with pytest.raises(InputDataError) as refused:
        checked_rulings(pd.DataFrame(rows), "fact", LIMITS)
    assert str(refused.value) == message


def test_rulings_within_the_limits_pass_as_text_with_numbered_ids_and_empty_fields_left_to_validation():
    rows = pd.DataFrame({"id": [7, 8, 9], "fact": ["罪犯某", None, "刑" * 50]})
    assert checked_rulings(rows, "fact", LIMITS).to_dict("list") == {
        "id": ["7", "8", "9"],
        "fact": ["罪犯某", "", "刑" * 50],
    }


def _fold_labels(rulings: pd.DataFrame, fold_model: SavedModel, rule: dict) -> pd.DataFrame:
    """A stand-in for the predict pipeline's nodes: a fold model's class count as every ruling's label."""
    return pd.DataFrame({"id": rulings["id"], "label": fold_model.load().config.num_labels + rule["offset"]})


def test_the_served_model_loads_its_artifacts_once_and_runs_the_pipeline_nodes_in_process(tmp_path, monkeypatch):
    config = MegatronBertConfig(
        vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8, num_labels=3
    )
    MegatronBertForSequenceClassification(config).save_pretrained(tmp_path / "fold_model")
    inference = Pipeline(
        [Node(_fold_labels, ["test_raw", "fold_model", "params:rule"], "predictions", name="fold_labels")]
    )
    catalog = DataCatalog(
        {
            "test_raw": MemoryDataset(),
            "fold_model": SequenceClassifierDataset(str(tmp_path / "fold_model")),
            "params:rule": MemoryDataset({"offset": 1}),
        }
    )
    model = RulingsPipelineModel(inference, catalog, "test_raw", text_column="fact", limits=LIMITS, torch_threads=1)
    artifacts = model.extract_pipeline_artifacts(parameters_saving_folder=tmp_path)
    loads = []
    real_load = SavedModel.load

    def counted_load(self):
        loads.append(self.folder)
        return real_load(self)

    monkeypatch.setattr(SavedModel, "load", counted_load)
    model.load_context(SimpleNamespace(artifacts=artifacts))
    for ids in (["a"], ["b", "c"]):
        answer = model.predict(None, pd.DataFrame({"id": ids, "fact": ["罪犯某"] * len(ids)}))
        assert answer.to_dict("list") == {"id": ids, "label": [4] * len(ids)}
    assert loads == [tmp_path / "fold_model"]
    with pytest.raises(MlflowException, match=r"^<input>, row 1, field 'fact': not text: float 1\.5$"):
        model.predict(None, pd.DataFrame({"id": ["a"], "fact": [1.5]}))


def test_the_served_model_answers_its_warm_up_rulings_as_it_loads_with_features_shared_within_a_request(tmp_path):
    seen = []

    def features(rulings: pd.DataFrame) -> pd.DataFrame:
        # Inside a request the candidates' equal fitted transformers share their features.
        seen.append((rulings["id"].tolist(), column_features_module._SHARED.get() is not None))
        return pd.DataFrame({"id": rulings["id"], "label": 1})

    inference = Pipeline([Node(features, "test_raw", "predictions", name="features")])
    catalog = DataCatalog({"test_raw": MemoryDataset()})
    warm_up = pd.DataFrame({"id": ["w1", "w2"], "fact": ["罪犯某", "罪犯某某"]})
    model = RulingsPipelineModel(
        inference, catalog, "test_raw", text_column="fact", limits=LIMITS, torch_threads=1, warm_up_rulings=warm_up
    )
    model.load_context(SimpleNamespace(artifacts=model.extract_pipeline_artifacts(parameters_saving_folder=tmp_path)))
    assert seen == [(["w1", "w2"], True)]  # answered once as it loads
    model.predict(None, pd.DataFrame({"id": ["a"], "fact": ["罪犯某"]}))
    assert seen[1:] == [(["a"], True)] and column_features_module._SHARED.get() is None
