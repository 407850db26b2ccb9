"""Duration-to-class encoding: months to class ids and back, described by a saved class table.

Two schemes:
- ``direct``: month m is class m for m < n_classes; longer reductions fall in the last class (the
  winning recipe: 34 classes, months above 33 in class 33).
- ``bins``: explicit bin edges ``[e0, e1, ..., ek]`` give classes ``[e_i, e_{i+1})`` (the last bin also
  takes everything above), each decoded to a representative month, for data whose durations reach
  hundreds of months (e.g. CAIL2018 imprisonment terms).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)


def build_class_table(train_cases: pd.DataFrame, encoding: dict[str, Any]) -> pd.DataFrame:
    """The class table of the encoding, after reporting how many training labels fall in the last,
    open-ended class (a long tail there suggests more classes or the ``bins`` scheme)."""
    table = class_table(encoding)
    beyond = int((train_cases["label"] > table["min_months"].iloc[-1]).sum())
    if beyond:
        logger.info(
            "%d training label(s) above %d months fall in the last class (decoded as %d months)",
            beyond, table["min_months"].iloc[-1], table["months"].iloc[-1],
        )
    return table


def class_table(encoding: dict[str, Any]) -> pd.DataFrame:
    """The class table: for each class id, the months it covers and the month it decodes to."""
    if encoding["scheme"] == "direct":
        n_classes = int(encoding["n_classes"])
        months = np.arange(n_classes)
        upper = months.astype(float)
        upper[-1] = np.inf
        return pd.DataFrame(
            {"class_id": months, "min_months": months, "max_months": upper, "months": months}
        )
    if encoding["scheme"] == "bins":
        edges = [int(edge) for edge in encoding["bin_edges"]]
        representatives = [int(month) for month in encoding["bin_months"]]
        if edges != sorted(set(edges)) or edges[0] != 0:
            raise ValueError(f"label_encoding.bin_edges must start at 0 and increase strictly: {edges}")
        if len(representatives) != len(edges) - 1:
            raise ValueError("label_encoding.bin_months needs one month per bin (len(bin_edges) - 1)")
        upper = [edge - 1 for edge in edges[1:]]
        upper[-1] = np.inf
        for low, high, month in zip(edges[:-1], upper, representatives):
            if not low <= month <= high:
                raise ValueError(f"representative month {month} is outside its bin [{low}, {high}]")
        return pd.DataFrame(
            {
                "class_id": np.arange(len(representatives)),
                "min_months": edges[:-1],
                "max_months": np.asarray(upper, dtype=float),
                "months": representatives,
            }
        )
    raise ValueError(f"label_encoding.scheme must be 'direct' or 'bins', not {encoding['scheme']!r}")


def months_to_class(months: pd.Series | np.ndarray, class_table: pd.DataFrame) -> np.ndarray:
    """Class id of each duration in months."""
    lower_edges = class_table["min_months"].to_numpy()
    return np.searchsorted(lower_edges, np.asarray(months), side="right") - 1


def class_to_months(class_ids: pd.Series | np.ndarray, class_table: pd.DataFrame) -> np.ndarray:
    """Representative month of each class id."""
    return class_table["months"].to_numpy()[np.asarray(class_ids, dtype=int)]


def encode_labels(train_cases: pd.DataFrame, class_table: pd.DataFrame) -> pd.DataFrame:
    """The model input table: ``id, fact, label`` plus ``class_id``."""
    return train_cases.assign(class_id=months_to_class(train_cases["label"], class_table))
