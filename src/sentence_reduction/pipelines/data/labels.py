"""Duration-to-class encoding: months to class ids and back, described by a saved class table.

Three schemes:
- ``direct``: month m is class m for m < n_classes; longer reductions fall in the last class (the
  winning recipe: 34 classes, months above 33 in class 33).
- ``bins``: explicit bin edges ``[e0, e1, ..., ek]`` give classes ``[e_i, e_{i+1})`` (the last bin also
  takes everything above), each decoded to a representative month, for data whose durations reach
  hundreds of months (e.g. CAIL2018 imprisonment terms).
- ``auto``: ``direct`` when the training labels fit it (at most ``AUTO_TAIL_SHARE`` of them above the
  last class), else ``bins`` made from the training labels (`bins_for_labels`): the competition's
  months stay one class each, longer durations get bins of equal width on the metric's log scale.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

# With ``scheme: auto``, the share of training labels allowed above the last direct class (they are
# decoded as its month, as the winning recipe does) before the labels get bins instead.
AUTO_TAIL_SHARE = 0.01


def build_class_table(train_cases: pd.DataFrame, encoding: dict[str, Any]) -> pd.DataFrame:
    """The class table of the encoding (``auto``: chosen from the training labels), after reporting
    how many training labels fall in the last, open-ended class (a long tail there suggests more
    classes or the ``bins`` scheme)."""
    if encoding["scheme"] == "auto":
        encoding = encoding_for_labels(train_cases["label"], int(encoding["n_classes"]))
    table = class_table(encoding)
    beyond = int((train_cases["label"] > table["min_months"].iloc[-1]).sum())
    if beyond:
        logger.info(
            "%d training label(s) above %d months fall in the last class (decoded as %d months)",
            beyond,
            table["min_months"].iloc[-1],
            table["months"].iloc[-1],
        )
    return table


def encoding_for_labels(labels: pd.Series, n_classes: int) -> dict[str, Any]:
    """``direct`` with ``n_classes`` classes when at most `AUTO_TAIL_SHARE` of the labels lie above the
    last class, else ``bins`` from `bins_for_labels`."""
    labels = np.asarray(labels, dtype=np.int64)
    beyond = float(np.mean(labels > n_classes - 1)) if labels.size else 0.0
    if beyond <= AUTO_TAIL_SHARE:
        logger.info("label encoding auto: direct, %d classes (months 0-%d)", n_classes, n_classes - 1)
        return {"scheme": "direct", "n_classes": n_classes}
    edges, months = bins_for_labels(labels, n_classes)
    logger.info(
        "label encoding auto: %.1f %% of the training labels lie above %d months (up to %d): %d bins, edges %s",
        100 * beyond,
        n_classes - 1,
        labels.max(),
        len(months),
        edges,
    )
    return {"scheme": "bins", "bin_edges": edges, "bin_months": months}


def bins_for_labels(labels: np.ndarray, n_classes: int) -> tuple[list[int], list[int]]:
    """At most ``n_classes`` bins over months 0 to the longest label, equally wide in ln(months + 1)
    (the competition metric's scale) but never narrower than one month, so short durations keep a
    class each; the narrowest width that fits is found by bisection. Each bin decodes to its most
    frequent training label (exact matches count in the metric), or, where no label falls, to the
    month at its centre on the log scale."""
    longest = int(labels.max())

    def edges_for(width: float) -> list[int]:
        edges = [0]
        while edges[-1] <= longest:
            edges.append(max(edges[-1] + 1, math.ceil(math.exp(math.log(edges[-1] + 1) + width) - 1)))
        return edges

    low, high = 0.0, math.log(longest + 2)  # one bin spans everything at the upper end
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (low, middle) if len(edges_for(middle)) - 1 <= n_classes else (middle, high)
    edges = edges_for(high)
    months = []
    for start, end in zip(edges[:-1], edges[1:]):
        inside = labels[(labels >= start) & (labels < end)]
        if inside.size:
            values, counts = np.unique(inside, return_counts=True)
            months.append(int(values[np.argmax(counts)]))  # the smallest of the most frequent
        else:
            months.append(min(end - 1, max(start, round(math.sqrt(start + 1) * math.sqrt(end) - 1))))
    return edges, months


def class_table(encoding: dict[str, Any]) -> pd.DataFrame:
    """The class table: for each class id, the months it covers and the month it decodes to."""
    if encoding["scheme"] == "direct":
        n_classes = int(encoding["n_classes"])
        months = np.arange(n_classes)
        upper = months.astype(float)
        upper[-1] = np.inf
        return pd.DataFrame({"class_id": months, "min_months": months, "max_months": upper, "months": months})
    if encoding["scheme"] == "bins":
        edges = [int(edge) for edge in encoding["bin_edges"]]
        representatives = [int(month) for month in encoding["bin_months"]]
        if edges != sorted(set(edges)) or edges[0] != 0:
            raise ValueError(f"label_encoding.bin_edges must start at 0 and increase strictly: {edges}")
        if len(representatives) != len(edges) - 1:
            raise ValueError("label_encoding.bin_months needs one month per bin (len(bin_edges) - 1)")
        highs: list[float] = [edge - 1 for edge in edges[1:]]
        highs[-1] = np.inf
        for low, high, month in zip(edges[:-1], highs, representatives):
            if not low <= month <= high:
                raise ValueError(f"representative month {month} is outside its bin [{low}, {high}]")
        return pd.DataFrame(
            {
                "class_id": np.arange(len(representatives)),
                "min_months": edges[:-1],
                "max_months": np.asarray(highs, dtype=float),
                "months": representatives,
            }
        )
    raise ValueError(f"label_encoding.scheme must be 'auto', 'direct' or 'bins', not {encoding['scheme']!r}")


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
