"""The candidates on the linear features (the linear, the regression and the ordinal candidates): the
analyzer chosen by the text's form, the parsed features beside the n-grams, log-months and cumulative
probabilities; and the parser on real rows."""

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from sentence_reduction.pipelines.data.normalisation import normalise_rulings
from sentence_reduction.pipelines.train.baseline import (
    fit_baseline,
    linear_inputs,
    predict_on_linear_features,
    text_analyzer,
)
from sentence_reduction.pipelines.train.column_features import (
    column_features,
    ngrams_counted_together,
    shared_features,
)
from sentence_reduction.pipelines.train.cumulative import CumulativeClassifier
from sentence_reduction.pipelines.train.ordinal import fit_ordinal
from sentence_reduction.pipelines.train.parsing import parse_rulings
from sentence_reduction.pipelines.train.regression import LogMonthsRegressionClassifier, fit_regression
from tests.conftest import PROJECT_ROOT

DEV_ROWS = PROJECT_ROOT.parent / "shared" / "reference" / "dc611_dev_segmented.csv"
needs_dev_rows = pytest.mark.skipif(not DEV_ROWS.is_file(), reason="the real dev rows live in ../shared (absent here)")
BASELINE = {
    "analyzer": "auto",
    "segmented_space_share": 0.15,
    "word_ngram_range": [1, 2],
    "char_ngram_range": [1, 2],
    "min_df": 1,
    "max_features": 2000,
    "parsed_features": True,
    "min_category_cases": 2,
    "C": 10.0,
    "max_iter": 300,
}
MONTHS = [0, 3, 6, 9, 12]
CLASS_TABLE = pd.DataFrame({"class_id": range(len(MONTHS)), "months": MONTHS})


def _segmented_cases(n: int = 100) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    class_ids = rng.integers(1, len(MONTHS), n)
    words = {3: "三个", 6: "六个月", 9: "九个", 12: "一年"}
    facts = [
        f"盗窃罪 有期徒刑 {rng.integers(3, 15)}年 执行 机关 建议 减刑 {words[MONTHS[c]]} 获 表扬 {rng.integers(1, 6)}"
        for c in class_ids
    ]
    cases = pd.DataFrame({"id": [f"id_{i}" for i in range(n)], "fact": facts, "class_id": class_ids})
    folds = pd.DataFrame({"id": cases["id"], "fold": np.arange(n) % 4})
    return cases, folds


def test_the_analyzer_follows_the_form_of_the_text():
    segmented = pd.Series(["盗窃罪 有期徒刑 十年 执行 机关 建议 减刑 六个月"])
    raw = pd.Series(["罪犯某，男，犯盗窃罪，判处有期徒刑十年。 执行机关建议对其减刑六个月。"])
    assert text_analyzer(segmented, BASELINE) == "word" and text_analyzer(raw, BASELINE) == "char"
    assert text_analyzer(segmented, {**BASELINE, "analyzer": "char"}) == "char"
    with pytest.raises(ValueError, match="analyzer"):
        text_analyzer(raw, {**BASELINE, "analyzer": "bpe"})


def test_linear_inputs_refuse_features_of_other_cases():
    cases, _ = _segmented_cases(4)
    with pytest.raises(ValueError, match="parsed_features does not cover"):
        linear_inputs(cases, parse_rulings(cases.head(2)))


def test_log_months_probabilities_peak_at_the_predicted_months():
    inputs = np.array([[0.0], [1.0], [2.0], [3.0], [4.0]] * 8)
    class_ids = np.array([0, 1, 2, 3, 4] * 8)
    from sklearn.linear_model import LinearRegression

    classifier = LogMonthsRegressionClassifier(LinearRegression(), MONTHS, sigma_folds=2).fit(inputs, class_ids)
    probabilities = classifier.predict_proba(inputs[:5])
    assert np.allclose(probabilities.sum(axis=1), 1) and classifier.sigma_ > 0
    # A straight line through log(months + 1) misses the ends, but never by a whole class in the middle.
    assert (np.abs(probabilities.argmax(axis=1) - class_ids[:5]) <= 1).all()
    assert probabilities[2, 2] > probabilities[2, 0]


def test_cumulative_probabilities_cover_the_classes_seen_in_their_order():
    # Class 2 of 0..4 never occurs in training: the thresholds are between the classes seen.
    inputs = np.array([[0.0], [1.0], [3.0], [4.0]] * 10)
    class_ids = np.array([0, 1, 3, 4] * 10)
    from sklearn.linear_model import LogisticRegression

    classifier = CumulativeClassifier(LogisticRegression(C=100.0)).fit(inputs, class_ids)
    assert classifier.classes_.tolist() == [0, 1, 3, 4]
    probabilities = classifier.predict_proba(np.array([[0.0], [1.0], [3.0], [4.0], [2.0]]))
    assert probabilities.shape == (5, 4) and np.allclose(probabilities.sum(axis=1), 1) and (probabilities > 0).all()
    assert probabilities[:4].argmax(axis=1).tolist() == [0, 1, 2, 3]
    # between the classes seen, the mass sits on the neighbours of the missing class
    assert probabilities[4, 1] + probabilities[4, 2] > 0.8
    with pytest.raises(ValueError, match="at least two classes"):
        CumulativeClassifier(LogisticRegression()).fit(inputs[:3], np.zeros(3, dtype=int))


def test_crossing_threshold_estimates_are_rearranged_not_cut():
    """Independent threshold models may say P(class > 1) < P(class > 2): sorting each row keeps every
    estimate, where a running minimum would leave class 2 with nothing."""

    class Crossing:
        estimators_ = ()  # as a fitted MultiOutputClassifier's, of which only the answers count here

        def predict_proba(self, inputs):
            return [np.array([[1 - p, p]]) for p in (0.9, 0.3, 0.6, 0.1)]

    from sklearn.linear_model import LogisticRegression

    classifier = CumulativeClassifier(LogisticRegression())
    classifier.classes_, classifier.thresholds_ = np.arange(5), Crossing()
    probabilities = classifier.predict_proba(np.zeros((1, 1)))
    assert np.allclose(probabilities, [[0.1, 0.3, 0.3, 0.2, 0.1]])


def test_every_linear_feature_candidate_learns_the_recommendation_from_segmented_text_out_of_fold():
    cases, folds = _segmented_cases()
    features = parse_rulings(cases)
    for fit in (
        lambda: fit_baseline(cases, features, folds, CLASS_TABLE, BASELINE),
        lambda: fit_regression(cases, features, folds, CLASS_TABLE, BASELINE, {"alpha": 1.0, "sigma_folds": 3}),
        lambda: fit_ordinal(cases, features, folds, CLASS_TABLE, BASELINE, {"C": 10.0, "max_iter": 300}),
    ):
        models, oof = fit()
        probabilities = oof.set_index("id").loc[cases["id"]].to_numpy()
        assert len(models) == 4 and (probabilities.argmax(axis=1) == cases["class_id"]).mean() > 0.9


@needs_dev_rows
def test_parser_on_real_segmented_rows():
    rows = pd.read_csv(DEV_ROWS)
    options = {"fold_full_width": True, "collapse_whitespace": True, "mask_criminal_name": True, "name_mask": "某"}
    features = parse_rulings(normalise_rulings(rows, options))
    recommended = features["recommended_months"]
    stated = recommended.notna()
    # A third of real rulings state the recommendation; the court grants it exactly in over half of
    # those and almost never more (docs/real_rows.md).
    assert stated.mean() > 0.3
    assert (recommended[stated] == rows["label"][stated]).mean() > 0.5
    assert (rows["label"][stated] > recommended[stated]).mean() < 0.02
    assert features["crime"].notna().mean() > 0.9 and features["original_term_months"].notna().mean() > 0.75


def test_texts_in_which_the_parser_finds_nothing_still_fit():
    # CAIL2018-style facts: no header, no proposal, no awards; months in bins of hundreds.
    rng = np.random.default_rng(1)
    class_table = pd.DataFrame({"class_id": range(3), "months": [6, 36, 170]})
    class_ids = rng.integers(0, 3, 60)
    words = {0: "盗窃手机一部", 1: "持刀抢劫现金", 2: "贩卖海洛因五百克"}
    cases = pd.DataFrame(
        {
            "id": [f"c{i}" for i in range(60)],
            "fact": [f"公诉机关指控：被告人某{words[c]}，后被抓获。" for c in class_ids],
            "class_id": class_ids,
        }
    )
    folds = pd.DataFrame({"id": cases["id"], "fold": np.arange(60) % 3})
    features = parse_rulings(cases)
    assert features["recommended_months"].isna().all() and features["crime"].isna().all()
    for fit in (
        lambda: fit_regression(cases, features, folds, class_table, BASELINE, {"alpha": 1.0, "sigma_folds": 3}),
        lambda: fit_ordinal(cases, features, folds, class_table, BASELINE, {"C": 10.0, "max_iter": 300}),
    ):
        probabilities = fit()[1].set_index("id").loc[cases["id"]].to_numpy()
        assert np.allclose(probabilities.sum(axis=1), 1) and (probabilities.argmax(axis=1) == class_ids).mean() > 0.8


def test_ordinal_thresholds_predicted_together_give_each_regressions_probabilities_to_the_last_bit():
    cases, folds = _segmented_cases()
    models, _ = fit_ordinal(cases, parse_rulings(cases), folds, CLASS_TABLE, BASELINE, {"C": 10.0, "max_iter": 300})
    for model in models:
        inputs = model[:-1].transform(linear_inputs(cases, parse_rulings(cases)))
        thresholds = model[-1].thresholds_
        one_by_one = np.column_stack([probabilities[:, 1] for probabilities in thresholds.predict_proba(inputs)])
        assert np.array_equal(model[-1]._above_thresholds(inputs), one_by_one)


def _same_sparse(first, second) -> bool:
    """The same matrix to the bit, stored alike (a sparse one: entries, their order, index types)."""
    if isinstance(first, np.ndarray):
        return type(second) is np.ndarray and first.dtype == second.dtype and np.array_equal(first, second)
    return (
        type(first) is type(second)
        and first.shape == second.shape
        and first.dtype == second.dtype
        and first.indices.dtype == second.indices.dtype
        and np.array_equal(first.indptr, second.indptr)
        and np.array_equal(first.indices, second.indices)
        and np.array_equal(first.data, second.data)
    )


@pytest.mark.parametrize("analyzer", ["word", "char"])
def test_features_computed_fast_are_the_column_transformers_to_the_last_bit(analyzer):
    cases, folds = _segmented_cases()
    parameters = {**BASELINE, "analyzer": analyzer, "char_ngram_range": [1, 3]}
    models, _ = fit_baseline(cases, parse_rulings(cases), folds, CLASS_TABLE, parameters)
    # New rulings: n-grams no fold has seen, one no vocabulary of one fold holds, a crime never seen.
    test_cases = cases.head(7).assign(id=lambda table: table["id"] + "_test")
    test_cases.loc[0, "fact"] = "抢劫罪 有期徒刑 无期 从未 见过 的 词"
    inputs = linear_inputs(test_cases, parse_rulings(test_cases))
    for model in models:
        assert _same_sparse(column_features(model[0], inputs), model[0].transform(inputs))
    with ngrams_counted_together(models):  # the folds' n-grams counted once, over their vocabularies' union
        for model in models:
            assert _same_sparse(column_features(model[0], inputs), model[0].transform(inputs))
    served = predict_on_linear_features(models, test_cases, parse_rulings(test_cases), CLASS_TABLE)
    by_scikit_learn = np.zeros((len(models), len(inputs), len(CLASS_TABLE)))
    for fold, model in enumerate(models):
        by_scikit_learn[fold][:, model.classes_] = model.predict_proba(inputs)
    assert np.array_equal(served.drop(columns="id").to_numpy(), by_scikit_learn.mean(axis=0))


def test_a_request_transforms_its_rulings_once_per_distinct_fitted_feature_transformer():
    cases, folds = _segmented_cases()
    parsed = parse_rulings(cases)
    linear, _ = fit_baseline(cases, parsed, folds, CLASS_TABLE, BASELINE)
    ordinal, _ = fit_ordinal(cases, parsed, folds, CLASS_TABLE, BASELINE, {"C": 10.0, "max_iter": 300})
    inputs = linear_inputs(cases.head(3), parsed)
    same_rows = linear_inputs(cases.head(3), parsed)
    with shared_features():
        features = column_features(linear[0][0], inputs)
        # The ordinal candidate's fold 0 fitted its features on the same rows alike: not computed again.
        assert column_features(ordinal[0][0], same_rows) is features
        assert column_features(linear[1][0], inputs) is not features  # another fold: other rows, other terms
        assert column_features(ordinal[0][0], inputs.head(2)) is not features
    assert column_features(ordinal[0][0], inputs) is not features  # outside a request: nothing kept


@needs_dev_rows
def test_features_of_real_rulings_computed_fast_are_sparse_and_the_column_transformers_to_the_last_bit():
    rows = pd.read_csv(DEV_ROWS).head(240)
    options = {"fold_full_width": True, "collapse_whitespace": True, "mask_criminal_name": True, "name_mask": "某"}
    cases = normalise_rulings(rows, options)
    months = np.unique(cases["label"])
    cases["class_id"] = np.searchsorted(months, cases["label"])
    class_table = pd.DataFrame({"class_id": range(len(months)), "months": months})
    folds = pd.DataFrame({"id": cases["id"], "fold": np.arange(len(cases)) % 3})
    parameters = {**BASELINE, "analyzer": "char", "char_ngram_range": [1, 3], "max_features": 20000}
    train, test = cases.iloc[:200], cases.iloc[200:]
    models, _ = fit_baseline(train, parse_rulings(train), folds, class_table, parameters)
    inputs = linear_inputs(test, parse_rulings(test))
    with ngrams_counted_together(models):
        for model in models:
            features = column_features(model[0], inputs)
            assert sparse.issparse(features) and _same_sparse(features, model[0].transform(inputs))
