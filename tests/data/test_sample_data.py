"""The synthetic ruling generator: seeded, in the competition's format, on the real label histogram,
reading like real rulings, learnable but not trivially, and the committed sample is its output."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from threadpoolctl import threadpool_limits

from sentence_reduction.sample_data import (
    LABEL_PROPORTIONS,
    chinese_duration,
    chinese_numeral,
    generate_rulings,
    main,
    write_sample,
)
from tests.conftest import PROJECT_ROOT

SAMPLE_DIR = PROJECT_ROOT / "data" / "01_raw" / "sample"
CHINESE_SENTENCE = re.compile(r"有期徒刑(?:刑期)?[一二三四五六七八九十]+(?:年|个月)|无期徒刑|死刑，缓期二年执行")
# SHA-256 of the first 30 characters of each of the 25 public real rows (DC611 reference examples):
# the texts themselves must not enter the repository, their fingerprints catch a pasted row.
REAL_HEAD_SHA256 = frozenset(
    {
        "0c76049479dbff1dbcc5d8f94119defc32a3d45ac4c5e97d93d4d6d6f8a98326",
        "192e48afcbe637e8c8da645805023c784c1a0cf37949d0d29641afb7a323401c",
        "1dc7e62eb81a89c202e2e86128821efabf928b77299208ed549f7887a4f6c21b",
        "3017691a7b2bda70f9dcc80f55b852a750979217224370a211bca967ffed8abe",
        "3111011d5e9cf48afc3e853d6618bf6b8adf66d9be1fbe8b5b2ecc871c640b1e",
        "49b0c8a80c3b786090de72f2df4eb7fef76835434999eecd04904b4943d8e417",
        "4ddf32245d0b060795015b0282adf151b5b9e3c0a31f05c9a0dec2a48f31b6aa",
        "5adf8e9425c911e71236901fde73d55f2cd30bc4704bb0e253465eff86e77fc2",
        "7227ec7d4068ca462476655f0194448b864cf18a925e72fd5c144449d673ced8",
        "72eab8fd582a392c45dbf99ec5f7896d2ec74e0dfba571dc0f1e1074264fbe84",
        "789a7197009b9bf39e063fa410e8bf296b10679db27b61298777527d4fe6a607",
        "795f9859302a6908ba9ac39abfcc4cbe8b7fd1888f8ec54108b9697da7885644",
        "7cb80c76c002c46caea4815722163d3bbd374c4e0cb1d95bd6ee4d69b5517727",
        "8ca800b0f804c3ecb47bc34263a51095384f0a061bd77858107d17f614425c69",
        "9909b3cdf00d7dbf43498dcd261123a0725574bccf18efe5ba0a86cc091e7d8e",
        "a96a6d9139db9d6c83a9ce88861bd5003e19108eee6410da008efba9fc8a2370",
        "ae723d92bfddc3f19590fed0f3578dd4415788bd014e25f5014ac80308fe32ee",
        "c752ab4e2e742fa4da853e3708a9ceb5242224acf84330f9bd70ee2fb73dddbe",
        "c7bb92aea91b997f1d2f67bf4b64b710100eb7bc5515191f5e4dd532e70f116e",
        "cf054715782c6631732df8713ede3b5c095d2bff31962bdd26c5313232c72223",
        "cf747a1feb23604c613217726375b8df93757c7373fd625a16efe7dbb8e3776d",
        "de4702f9e86f5591316549cac88d429c747b161070c6db2c4ed8f1d75bb5d53f",
        "f508e1b583d4f17c675284dd31c34d9f4b3df91fdd31bb1d6b73ffdea6676fb7",
        "f60ac810bc7318806005bb3662e0aa7cb2fa195853bf0786540714dc5430975e",
        "f7a1914b2ab79957d02d27858b3d64cf751bb7c32414998626245a4fd54ca65a",
    }
)


@pytest.fixture(scope="module")
def large_draw() -> tuple[pd.DataFrame, pd.DataFrame]:
    return generate_rulings(20_000, 1_000, seed=7)


def test_same_seed_gives_identical_frames_and_another_seed_differs() -> None:
    train_a, test_a = generate_rulings(200, 50, seed=3)
    train_b, test_b = generate_rulings(200, 50, seed=3)
    pd.testing.assert_frame_equal(train_a, train_b)
    pd.testing.assert_frame_equal(test_a, test_b)
    train_c, _ = generate_rulings(200, 50, seed=4)
    assert (train_c["fact"] != train_a["fact"]).all()


def test_frames_have_the_competition_layout() -> None:
    train, test = generate_rulings(120, 30, seed=1)
    assert list(train.columns) == ["id", "fact", "label"]
    assert list(test.columns) == ["id", "fact"]
    assert train["id"].tolist() == [f"id_{i}" for i in range(120)]
    assert test["id"].tolist() == [f"id_{i}" for i in range(120, 150)]
    assert pd.api.types.is_integer_dtype(train["label"])
    assert train["label"].between(0, 33).all()


def test_large_draw_follows_the_reference_label_histogram(large_draw) -> None:
    train, _ = large_draw
    observed = train["label"].value_counts(normalize=True)
    labels = set(LABEL_PROPORTIONS) | set(observed.index)
    total_variation = 0.5 * sum(abs(observed.get(k, 0.0) - LABEL_PROPORTIONS.get(k, 0.0)) for k in labels)
    assert total_variation < 0.05
    assert set(observed.index) == set(LABEL_PROPORTIONS)  # every real label, rare ones included
    assert not {31, 32} & set(observed.index)
    assert (train["label"] > 24).mean() < 0.005


def test_rulings_read_like_real_ones(large_draw) -> None:
    train, test = large_draw
    facts = pd.concat([train["fact"], test["fact"]], ignore_index=True)
    for fact in facts:
        name = re.match(r"罪犯([^，]+)，", fact).group(1)
        assert fact.count(name) >= 3
        assert "xx月xx日" in fact
        assert not re.search(r"\d+月\d+日", fact)  # day-level dates are always masked
        assert CHINESE_SENTENCE.search(fact)
        assert "\n" not in fact and "  " not in fact
        assert fact.split(" ")[-1].startswith("本院认为")  # the ruling's own amount is cut off
    lengths = facts.str.len()
    assert 550 < lengths.mean() < 700
    assert lengths.between(300, 900).mean() > 0.85
    assert lengths.max() < 2500
    for trait in ["获得表扬", "累计奖励分", "累犯", "财产性判项未履行", "建议对该犯减刑", "无期徒刑", "剥夺政治权利"]:
        assert facts.str.contains(trait).any(), trait
    recommended = facts.str.contains("建议对该犯减刑|建议减去有期徒刑|提请对其减刑").mean()
    assert 0.3 < recommended < 0.5


def test_no_real_row_is_reproduced(large_draw) -> None:
    train, test = large_draw
    facts = pd.concat([train["fact"], test["fact"]])
    assert not facts.duplicated().any()
    heads = {hashlib.sha256(fact[:30].encode("utf-8")).hexdigest() for fact in facts}
    assert not heads & REAL_HEAD_SHA256


def test_chinese_numerals_are_written_as_in_rulings() -> None:
    assert [chinese_numeral(n) for n in (3, 10, 13, 20, 25)] == ["三", "十", "十三", "二十", "二十五"]
    assert [chinese_duration(m) for m in (8, 12, 18, 102, 156)] == [
        "八个月",
        "一年",
        "一年六个月",
        "八年六个月",
        "十三年",
    ]


@pytest.mark.slow
def test_tfidf_logistic_regression_learns_the_labels_but_not_perfectly() -> None:
    train, _ = generate_rulings(1000, 0, seed=611)
    model = make_pipeline(
        TfidfVectorizer(
            analyzer="char", ngram_range=(2, 4), sublinear_tf=True, min_df=3, max_df=0.3, max_features=5000
        ),
        LogisticRegression(C=20, max_iter=200),
    )
    # One BLAS thread: on small machines the default thread pool oversubscribes and runs 10x slower.
    with threadpool_limits(1):
        accuracy = cross_val_score(
            model, train["fact"], train["label"], cv=KFold(3, shuffle=True, random_state=0)
        ).mean()
    majority = train["label"].value_counts(normalize=True).max()
    assert accuracy > majority + 0.06
    assert accuracy < 0.6


def test_committed_sample_is_what_write_sample_regenerates(tmp_path: Path) -> None:
    write_sample(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["testA.csv", "train.csv"]  # no temp files left
    for name in ["train.csv", "testA.csv"]:
        assert (tmp_path / name).read_bytes() == (SAMPLE_DIR / name).read_bytes(), name
    train_bytes = (SAMPLE_DIR / "train.csv").read_bytes()
    assert train_bytes.startswith(b"id,fact,label\nid_0,")  # UTF-8 without BOM, a header, LF endings
    assert len(pd.read_csv(SAMPLE_DIR / "train.csv")) == 1000
    assert len(pd.read_csv(SAMPLE_DIR / "testA.csv")) == 300


def test_command_line_writes_files_that_read_back_as_generated(tmp_path: Path) -> None:
    main(["--output", str(tmp_path / "out"), "--n-train", "6", "--n-test", "2", "--seed", "5"])
    train, test = generate_rulings(6, 2, seed=5)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "out" / "train.csv"), train)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "out" / "testA.csv"), test)
    assert np.array_equal(pd.read_csv(tmp_path / "out" / "testA.csv")["id"], ["id_6", "id_7"])
