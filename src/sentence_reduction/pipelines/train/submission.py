"""The submission: the ensemble's test probabilities decoded into one month per test case."""

from __future__ import annotations

from typing import Any

import pandas as pd

from sentence_reduction.pipelines.data.labels import class_to_months
from sentence_reduction.scoring import decode


def write_submission(
    test_cases: pd.DataFrame, test_probabilities: pd.DataFrame, class_table: pd.DataFrame, ensemble: dict[str, Any]
) -> pd.DataFrame:
    """``id,label``: one integer month per test case, in the test file's order, by the ensemble's
    decoding rule."""
    if not test_probabilities["id"].equals(test_cases["id"].reset_index(drop=True)):
        raise ValueError("test probabilities do not follow the test file's ids: rerun the pipeline")
    months = class_table["months"].tolist()
    class_ids = decode(test_probabilities.drop(columns="id").to_numpy(), months, ensemble["decoding"])
    return pd.DataFrame(
        {"id": test_cases["id"].to_numpy(), "label": class_to_months(class_ids, class_table).astype(int)}
    )
