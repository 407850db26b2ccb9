"""Wiring of the `pretrain` pipeline: each candidate named in `pretraining.candidates` pretrained in its
own namespace, writing `<candidate>.pretrained_encoder`."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

from sentence_reduction.pipelines.node_tags import PRETRAINING
from sentence_reduction.pipelines.pretrain.nodes import pretrain_encoder


def create_pipeline(candidates: Sequence[str]) -> Pipeline:
    """One pretraining node per candidate, on the normalised training and test rulings."""
    return Pipeline(
        [
            Node(
                update_wrapper(partial(pretrain_encoder, candidate=name), pretrain_encoder),
                inputs=[
                    "normalised_train_cases",
                    "normalised_test_cases",
                    f"params:transformer_candidates.{name}.model",
                    "params:training",
                    f"params:transformer_candidates.{name}.training",
                    "params:pretraining",
                ],
                outputs=f"{name}.pretrained_encoder",
                name="pretrain_encoder",
                namespace=name,
                tags=PRETRAINING,
            )
            for name in candidates
        ]
    )
