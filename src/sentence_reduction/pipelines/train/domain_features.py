"""The domain-feature candidate: what decides a reduction, parsed from the ruling, and a gradient-boosted
classifier on it.

The parser reads normalised text (NFKC digits, one space between paragraphs, the criminal's name as 某)
and also word-segmented copies of the rulings (a space between words, stop words such as 的/了/对/个
removed): every pattern allows spaces between its parts and does without those function words.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OrdinalEncoder
from threadpoolctl import threadpool_limits

from sentence_reduction.pipelines.train.out_of_fold import fit_out_of_fold, mean_class_probabilities, probability_table

_S = r"\s*"
_NUMBER = r"(?:\d+(?:\.\d+)?|[零〇一二两三四五六七八九十百千]+)"
# A term: "一年", "1年6个月", "十一个月", "一 年 零 六 个月", "3 月" (个 and 零 are stop words to some).
_SMALL_NUMBER = r"(?:\d{1,2}|[零〇一二两三四五六七八九十]+)"  # not a year such as 2015
_TERM = rf"(?:(?P<years>{_SMALL_NUMBER}){_S}年(?:{_S}零)?)?{_S}(?:(?P<months>{_SMALL_NUMBER}){_S}个?{_S}月)?"
_SENTENCE_PART = r"[^。；;]"  # within one sentence
_CLAUSE = r"[^。；;，,]"  # within one clause

_RECOMMENDED = re.compile(
    rf"(?:建议|提请|提出|报请){_SENTENCE_PART}{{0,20}}?(?:减刑|减去{_S}(?:有期徒刑|剩余刑期|刑期)?){_S}{_TERM}"
)
_RECOMMENDED_TERM = re.compile(rf"(?:建议|提请|提出|报请){_SENTENCE_PART}{{0,20}}?减为{_S}有期徒刑{_S}{_TERM}")
_PREVIOUS = re.compile(
    rf"(?:裁定|曾|已){_CLAUSE}{{0,25}}?(?P<kind>减刑|减去{_S}(?:有期徒刑|剩余刑期|刑期)?|减为{_S}(?:有期徒刑|无期徒刑))"
    rf"{_S}{_TERM}"
)
_SENTENCE = re.compile(rf"判处{_S}(?:有期徒刑|有期){_S}(?:刑期{_S})?{_TERM}")
_LIFE = re.compile(r"无期徒刑")
_DEATH_REPRIEVE = re.compile(rf"死刑{_S}[,，]?{_S}缓期|死缓")
_POLITICAL_RIGHTS = re.compile(rf"剥夺{_S}政治权利{_S}{_TERM}")
_FINE = re.compile(rf"罚金{_S}(?:人民币{_S})?(?P<amount>{_NUMBER}){_S}(?P<unit>万)?{_S}元")
_POINTS = re.compile(rf"(?:奖励分|考核分|考核积分|积分|改造分){_CLAUSE}{{0,6}}?(?P<points>\d+(?:\.\d+)?){_S}分")
_AWARDS = {
    "praise": r"表扬",
    "merit": rf"记{_S}大?{_S}功",
    "material_reward": rf"物质{_S}奖励",
}
_RECIDIVISM = re.compile(r"累犯|毒品再犯")
_DENIAL = re.compile(r"(?:非|不是|不属于?|不构成|不系|并非)$")
_UNPAID = re.compile(
    rf"(?:财产性?{_S}判项|罚金|赔偿|财产刑){_CLAUSE}{{0,8}}?(?:未|没有|尚未|无力|不能){_S}(?:履行|缴纳|缴清|交纳|执行)"
    rf"|(?:未|没有|尚未|无力|不能){_S}(?:履行|缴纳|缴清|交纳){_CLAUSE}{{0,8}}?(?:财产|罚金|赔偿|判项)"
)
_PAID = re.compile(rf"(?:已|全部|均已|主动){_S}(?:履行|缴纳|缴清|交纳)|履行{_S}完毕|缴纳{_S}(?:部分|全部)")
_CRIME = re.compile(r"犯\s*有?\s*([^，。；,;:：犯罪]{1,24}?)\s*罪")
_CRIME_SEPARATORS = re.compile(r"[、和及与]|\s")
# The account of the sentence ends where the prison's account of the prisoner begins.
_CONDUCT_STARTS = re.compile(r"经审理查明|执行机关认为|服刑期间|本院认为|改造期间")

_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_UNITS = {"十": 10, "百": 100, "千": 1000}

FEATURE_COLUMNS = [
    "crime",
    "crime_count",
    "recommended_months",
    "recommended_term_months",
    "original_term_months",
    "life_sentence",
    "death_reprieve",
    "political_rights_months",
    "fine_yuan",
    "previous_reductions",
    "previous_reduction_months",
    "praise_count",
    "merit_count",
    "material_reward_count",
    "reward_points",
    "recidivist",
    "property_unpaid",
    "property_paid",
]


def parse_domain_features(cases: pd.DataFrame) -> pd.DataFrame:
    """``id`` and one column per feature of ``FEATURE_COLUMNS`` for each ruling; NaN where the ruling
    does not say (a term, a recommendation, points), 0 for counts and flags it does not mention."""
    rows = [ruling_features(text) for text in cases["fact"]]
    table = pd.DataFrame(rows, columns=FEATURE_COLUMNS)
    table.insert(0, "id", cases["id"].to_numpy())
    return table


def ruling_features(text: str) -> dict[str, Any]:
    """The features of one ruling's text (see ``parse_domain_features``)."""
    conduct = _CONDUCT_STARTS.search(text)
    sentencing = text[: conduct.start()] if conduct else text
    crimes = _crimes(sentencing) or _crimes(text)
    previous = list(_PREVIOUS.finditer(text))
    reduced_by = [_term_months(match) for match in previous if not match.group("kind").startswith("减为")]
    return {
        "crime": crimes[0] if crimes else None,
        "crime_count": len(crimes),
        "recommended_months": _first_term(_RECOMMENDED, text),
        "recommended_term_months": _first_term(_RECOMMENDED_TERM, text),
        "original_term_months": _sentencing_term(_SENTENCE, sentencing, text),
        "life_sentence": int(bool(_LIFE.search(sentencing))),
        "death_reprieve": int(bool(_DEATH_REPRIEVE.search(sentencing))),
        "political_rights_months": _sentencing_term(_POLITICAL_RIGHTS, sentencing, text),
        "fine_yuan": _fine(text),
        "previous_reductions": len(previous),
        "previous_reduction_months": float(sum(months for months in reduced_by if months is not None)),
        **{f"{award}_count": _award_count(pattern, text) for award, pattern in _AWARDS.items()},
        "reward_points": _reward_points(text),
        "recidivist": int(_is_recidivist(text)),
        "property_unpaid": int(bool(_UNPAID.search(text))),
        "property_paid": int(bool(_PAID.search(text))),
    }


def chinese_number(text: str) -> float:
    """``"十三"`` -> 13, ``"二十"`` -> 20, ``"一百零五"`` -> 105, ``"六"`` -> 6; Arabic digits as they are."""
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    total, digit = 0, None
    for character in text:
        if character in _DIGITS:
            digit = _DIGITS[character]
        elif character in _UNITS:
            total += (1 if digit is None else digit) * _UNITS[character]
            digit = None
        else:
            raise ValueError(f"not a number: {text!r}")
    return float(total + (digit or 0))


def _term_months(match: re.Match) -> float | None:
    years, months = match.group("years"), match.group("months")
    if years is None and months is None:
        return None
    return 12 * (chinese_number(years) if years else 0) + (chinese_number(months) if months else 0)


def _terms(pattern: re.Pattern, text: str) -> list[float]:
    return [term for term in (_term_months(match) for match in pattern.finditer(text)) if term is not None]


def _first_term(pattern: re.Pattern, text: str) -> float:
    terms = _terms(pattern, text)
    return terms[0] if terms else np.nan


def _sentencing_term(pattern: re.Pattern, sentencing: str, text: str) -> float:
    """The last term in the account of the sentence (an appeal's replaces the first court's), else the
    first anywhere."""
    terms = _terms(pattern, sentencing)
    return terms[-1] if terms else _first_term(pattern, text)


def _crimes(text: str) -> list[str]:
    match = _CRIME.search(text)
    if match is None:
        return []
    return [crime for crime in _CRIME_SEPARATORS.split(match.group(1)) if crime]


def _fine(text: str) -> float:
    match = _FINE.search(text)
    if match is None:
        return np.nan
    return chinese_number(match.group("amount")) * (10_000 if match.group("unit") else 1)


def _award_count(award: str, text: str) -> float:
    """Times awarded: the numbers written beside the award ("表扬6次", "3次表扬"), one for a mention
    without a number ("获得表扬")."""
    total = 0.0
    for mention in re.finditer(award, text):
        after = re.match(rf"{_S}({_NUMBER}){_S}次", text[mention.end() :])
        before = re.search(rf"({_NUMBER}){_S}次{_S}$", text[max(0, mention.start() - 8) : mention.start()])
        count = after or before
        total += chinese_number(count.group(1)) if count else 1.0
    return total


def _reward_points(text: str) -> float:
    points = [float(match.group("points")) for match in _POINTS.finditer(text)]
    return max(points) if points else np.nan


def _is_recidivist(text: str) -> bool:
    """累犯 that no 非/不/无 in front of it denies ("非累犯", "不是累犯", "不构成 累犯")."""
    for mention in _RECIDIVISM.finditer(text):
        preceding = text[max(0, mention.start() - 8) : mention.start()].replace(" ", "")
        if not _DENIAL.search(preceding):
            return True
    return False


def fit_feature_model(
    domain_features: pd.DataFrame,
    model_input: pd.DataFrame,
    fold_assignments: pd.DataFrame,
    class_table: pd.DataFrame,
    feature_model: dict[str, Any],
) -> tuple[list[Pipeline], pd.DataFrame]:
    """A gradient-boosted classifier on the domain features per fold, and its out-of-fold probabilities.

    One OpenMP thread: beside torch's threads in the same process, the trees' OpenMP threads contend for
    the cores (measured on 2 cores: 7 s with one thread, 29 s by default, 232 s with two)."""
    features = _aligned(domain_features, model_input)

    def make_classifier() -> Pipeline:
        # The crime as a category: rare ones pooled, one unseen at prediction time treated as missing.
        crime = OrdinalEncoder(
            handle_unknown="use_encoded_value",
            unknown_value=np.nan,
            encoded_missing_value=np.nan,
            min_frequency=feature_model["min_crime_cases"],
        )
        # A number the ruling does not give as -1, below every real value (a tree splits on it as on
        # missing): a column missing in every training case would break the trees' binning.
        numbers = SimpleImputer(strategy="constant", fill_value=-1, keep_empty_features=True)
        return make_pipeline(
            ColumnTransformer([("crime", crime, ["crime"]), ("numbers", numbers, FEATURE_COLUMNS[1:])]),
            HistGradientBoostingClassifier(categorical_features=[0], **feature_model["classifier"]),
        )

    with threadpool_limits(limits=1, user_api="openmp"):
        return fit_out_of_fold(make_classifier, features, model_input, fold_assignments, len(class_table))


def predict_feature_model(
    feature_models: list[Pipeline], test_features: pd.DataFrame, class_table: pd.DataFrame
) -> pd.DataFrame:
    """The test cases' class probabilities: the mean of the fold models'."""
    with threadpool_limits(limits=1, user_api="openmp"):
        probabilities = mean_class_probabilities(feature_models, test_features[FEATURE_COLUMNS], len(class_table))
    return probability_table(test_features["id"], probabilities)


def _aligned(domain_features: pd.DataFrame, model_input: pd.DataFrame) -> pd.DataFrame:
    features = model_input[["id"]].merge(domain_features, on="id", how="left", validate="one_to_one")
    if features["crime_count"].isna().any():
        raise ValueError("domain_features does not cover every training case: rerun the train pipeline")
    return features[FEATURE_COLUMNS]
