"""The logged model's input: rows parsed by MLflow become the text table the pipeline reads from a file.
(The model end to end, predicted and served, is in test_pipelines.py.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
from kedro.pipeline import Node, Pipeline

from sentence_reduction.serving import model_artifacts, rulings_table


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
