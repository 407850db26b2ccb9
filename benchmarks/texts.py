"""The texts the GPU benchmarks train and predict on: random CJK characters (one token each, so every batch
is full), and rulings from the project's sample generator, normalised as the pipeline normalises them."""

from __future__ import annotations

import random

from benchmarks.parameters import ROOT

ALPHABET = [chr(code) for code in range(0x4E00, 0x4E00 + 4096)]  # CJK: one token per character


def synthetic_texts(count: int, characters: int, seed: int) -> list[str]:
    """``count`` texts of ``characters`` random characters of `ALPHABET`."""
    rng = random.Random(seed)
    return ["".join(rng.choices(ALPHABET, k=characters)) for _ in range(count)]


def generated_rulings(
    train_rows: int, eval_rows: int, test_rows: int
) -> tuple[list[str], list[int], list[str], list[int], list[str]]:
    """Train, held-out and test texts (with the labels of the first two, months capped at 33) from the
    sample generator, normalised with conf/base's text normalisation."""
    import yaml

    from sentence_reduction.pipelines.data.normalisation import normalise_rulings
    from sentence_reduction.sample_data import generate_rulings

    options = yaml.safe_load((ROOT / "conf/base/parameters_data.yml").read_text())["text_normalisation"]
    labelled, test = generate_rulings(train_rows + eval_rows, test_rows, seed=12)
    labelled, test = normalise_rulings(labelled, options), normalise_rulings(test, options)
    labels = labelled["label"].clip(upper=33).astype(int).tolist()
    facts = labelled["fact"].tolist()
    return facts[:train_rows], labels[:train_rows], facts[train_rows:], labels[train_rows:], test["fact"].tolist()
