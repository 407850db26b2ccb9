"""The parser of rulings: what decides a reduction (the sentence, the prison's recommendation and the
court's stance on it, awards, points, fines, earlier reductions...) read from each ruling's text into
the parsed features table, which every classical candidate reads.

It reads normalised text (NFKC digits, one space between paragraphs, the criminal's name as 某)
and also word-segmented copies of the rulings (a space between words, stop words such as 的/了/对/个
removed): every pattern allows spaces between its parts and does without those function words.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

_S = r"\s*"
_CJK = r"\u4e00-\u9fff"
_NUMBER = r"(?:\d+(?:\.\d+)?|[零〇一二两三四五六七八九十百千]+)"
_SMALL_NUMBER = r"(?:\d{1,2}|[零〇一二两三四五六七八九十]{1,3})"  # not a year such as 2015
# A term: "一年", "1年6个月", "十一个月", "一 年 零 六 个月", "3 月", "15 天". Segmented copies lose 月 as a
# stop word after 个 ("减去 有期徒刑 八个"), so 个 alone ends a count of months. 月份 is a date, not a term.
_TERM = (
    rf"(?=\s*{_SMALL_NUMBER}\s*(?:年|个|月(?!份)|日|天))"  # at least one part, so that a bare 减刑 is no term
    rf"(?:(?P<years>{_SMALL_NUMBER}){_S}年(?:{_S}零)?)?"
    rf"{_S}(?:(?P<months>{_SMALL_NUMBER}){_S}(?:个(?:{_S}月(?!份))?|月(?!份)))?"
    rf"{_S}(?:(?P<days>\d{{1,3}}|[零〇一二两三四五六七八九十]{{1,3}}){_S}[日天])?"
)
_SENTENCE_PART = r"[^。；;]"  # within one sentence
_CLAUSE = r"[^。；;，,]"  # within one clause
_PROPOSES = r"(?:建议|提请|提出|报请|呈报)"
_REDUCE_BY = rf"(?:减刑|减去{_S}(?:有期徒刑|剩余刑期|刑期|刑罚)?)"

_RECOMMENDED = re.compile(rf"{_PROPOSES}{_SENTENCE_PART}{{0,24}}?{_REDUCE_BY}{_S}{_TERM}")
_RECOMMENDED_TERM = re.compile(rf"{_PROPOSES}{_SENTENCE_PART}{{0,24}}?减为{_S}有期徒刑{_S}{_TERM}")
# A proposal whatever its amount says: the prison asked for a reduction (a third of real rulings give the amount).
_PROPOSAL = re.compile(rf"{_PROPOSES}{_S}(?:{_CJK}{{0,6}}{_S}){{0,2}}(?:减刑|减去|减为)")
# The court's stance on the proposal. It adopts or supports it ("减刑 建议 合法 予以 采纳", "提请 减刑 意见 予以
# 支持", "对减刑建议，本院予以采纳"), or it adjusts it ("减刑 幅度 不当 本院 予以 调整", "不予 采纳", the
# procuratorate's "建议 下调 减刑 幅度" that the court supports). Where the ruling states the amount, the court
# grants it when it adopts it (96 % of the dev rows) and less when it adjusts it (91 %, a reservation included;
# docs/real_rows.md).
_STANCE_GAP = r"[\s,，]*"  # a space, or a comma in the raw form
_ADOPTS = re.compile(
    rf"(?:建议|意见|幅度|提请|报请|减刑)(?:{_STANCE_GAP}[{_CJK}]{{1,4}}){{0,3}}?{_STANCE_GAP}"
    rf"(?:予以|应予以|应予|依法|予)?{_S}(?:采纳|支持|认可|准许|照准)"
)
# An adjustment overrides an adoption found in the same ruling (a "不予 采纳" matches both).
_ADJUSTS = re.compile(
    rf"(?:不予|不能|不应|未予|部分|难以){_S}(?:采纳|支持|认可|准许)|予以{_S}(?:调整|减低|降低|核减)"
    rf"|幅度{_S}(?:过大|偏大|过高|偏高|不当)"
    rf"|下调{_S}(?:减刑{_S})?幅度"
)
# A reduction refused, by the court or on the procuratorate's advice ("本次 暂 不予 减刑", "建议 不予 减刑"):
# the ruling grants none.
_REFUSED = re.compile(rf"不予{_S}(?:减刑|减去)|(?:暂缓|不宜){_S}减刑")
# The whole remaining term taken off ("减去 有期徒刑 剩余 刑期", "依法 减去 余刑"): the amount is what is left
# to serve, not a stated term.
_REMAINING_TERM = re.compile(rf"减去{_S}(?:有期徒刑{_S})?(?:剩余{_S}刑期|余刑)")
# A reduction granted before: to life from death, or by (to) a term; "裁定 减刑" alone may be the present one.
_PREVIOUS = re.compile(
    rf"(?:裁定|曾|已|先后|上次){_CLAUSE}{{0,25}}?"
    rf"(?P<kind>减为{_S}无期徒刑|(?:减刑|减去{_S}(?:有期徒刑|剩余刑期|刑期)?|减为{_S}有期徒刑){_S}{_TERM})"
)
# 判处 is dropped where a copy condenses the header to "盗窃罪 有期徒刑 十年".
_SENTENCE = re.compile(rf"(?:判处{_S})?(?:有期徒刑|有期){_S}(?:刑期{_S})?{_TERM}")
_NOT_ORIGINAL = re.compile(r"(?:减为|减去|减刑|改为)$")  # in front of 有期徒刑: a reduction, not the sentence
_LIFE = re.compile(rf"无期{_S}徒刑")
_DEATH_REPRIEVE = re.compile(r"死刑|死缓")  # a prisoner serving a death sentence is serving it with reprieve
_POLITICAL_RIGHTS = re.compile(rf"剥夺{_S}政治权利{_S}{_TERM}")
_FINE = re.compile(rf"罚金{_S}(?:人民币{_S})?(?P<amount>{_NUMBER}){_S}(?P<unit>万)?{_S}元")
# Points: "累计奖励分85.33分", "考核 积分 126", "获 奖励 84.5", "累计 考核 159.5" (分 dropped as a stop word);
# "奖励 1 次" and "奖励 6 表扬" are counts, "扣 考核 3" a deduction.
_POINTS = re.compile(
    rf"(?P<keyword>奖励分|考核分|积分|改造分|奖分|奖励|(?<!扣)(?<!扣 )考核){_S}(?:累计{_S}|共{_S}|计{_S})?"
    rf"(?P<points>\d+(?:\.\d+)?)(?![\d.])"
    rf"(?!{_S}[次个项])(?P<award>{_S}(?:表扬|记{_S}大?{_S}功|嘉奖|积极{_S}分子))?"
)
_AWARDS = {
    "praise": r"表扬",
    "merit": rf"记{_S}大?{_S}功",
    "material_reward": rf"物质{_S}奖励",
    "activist": rf"积极{_S}分子",
}
_AWARD_COUNT_AFTER = re.compile(rf"{_S}(?:奖励{_S})?(?:(?P<counted>{_NUMBER}){_S}次|(?P<bare>\d{{1,2}})(?![\d.]))")
# Before the award: "3次表扬", "4个表扬"; a bare number only after a verb of getting ("获得 4 表扬",
# "累计 6 表扬": a segmented copy drops 个 as a stop word), so that "表扬 3 记功 1" stays a list.
_AWARD_COUNT_BEFORE = re.compile(
    rf"(?:(?P<counted>{_NUMBER}){_S}[次个项]|(?:获得?|累计|共获?|合计|现有|奖励){_S}(?P<bare>\d{{1,2}})){_S}$"
)
_RECIDIVISM = re.compile(r"累犯|毒品再犯")
_DENIAL = re.compile(r"(?:非|不是|不属于?|不构成|不系|并非)$")
_UNPAID = re.compile(
    rf"(?:财产性?{_S}判项|罚金|赔偿|财产{_S}刑){_CLAUSE}{{0,8}}?(?:未|没有|尚未|无力|不能){_S}(?:履行|缴纳|缴清|交纳|执行)"
    rf"|(?:未|没有|尚未|无力|不能){_S}(?:履行|缴纳|缴清|交纳){_CLAUSE}{{0,8}}?(?:财产|罚金|赔偿|判项)"
)
_PAID = re.compile(rf"(?:已|全部|均已|主动){_S}(?:履行|缴纳|缴清|交纳)|履行{_S}完毕|缴纳{_S}(?:部分|全部)")
_CRIME = re.compile(r"犯\s*有?\s*([^，。；,;:：犯罪]{1,24}?)\s*罪")
# A condensed header opens with the crimes and the sentence: "抢劫罪 盗窃罪 有期徒刑 十五年 ...".
_HEADER_CRIMES = re.compile(rf"^((?:[{_CJK}、]{{1,20}}?罪{_S})+)(?=有期|无期|死刑|拘役|管制)")
_CRIME_SEPARATORS = re.compile(r"[、和及与]|\s|罪")


def _spaced(word: str) -> str:
    """A word as it reads in the raw text and in a segmented copy, which may split it anywhere."""
    return _S.join(re.escape(character) for character in word)


# The account of the sentence ends where the prison's account of the prisoner begins.
_CONDUCT_STARTS = re.compile(
    "|".join(_spaced(word) for word in ("经审理查明", "执行机关", "服刑期间", "本院认为", "改造期间", "确有悔改"))
)

_COURT_REASONS = re.compile(_spaced("本院认为"))
# A reservation in the court's reasoning ("本院认为 … 确有 悔改 表现 … 但 未 履行 财产性 判项"): it lowers the amount.
_RESERVATION = re.compile(r"(?<!不)(?:但|然而)")

# The trees' measures of the ruling (TREE_ONLY_COLUMNS).
_NUMBER_WRITTEN = re.compile(r"\d+(?:\.\d+)?")
_AWARD_MENTION = re.compile("|".join(_spaced(word) for word in ("表扬", "记功", "嘉奖", "积极分子", "立功")))
_SINCE_LAST_REDUCTION = re.compile(rf"上次{_S}减刑|减刑{_S}以来")

_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_UNITS = {"十": 10, "百": 100, "千": 1000}
_DAYS_PER_MONTH = 30

# Read by every classical candidate: the linear ones (beside their n-grams) and the trees.
FEATURE_COLUMNS = [
    "crime",
    "crime_count",
    "recommended_months",
    "recommended_term_months",
    "proposal_stated",
    "proposal_adopted",
    "proposal_adjusted",
    "reduction_refused",
    "remaining_term",
    "adopted_months",
    "adjusted_months",
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
    "activist_count",
    "reward_points",
    "recidivist",
    "property_unpaid",
    "property_paid",
]

# Read by the trees alone: the linear candidates, whose n-grams already see the words, measured no
# better with them (benchmarks/results/history_real_rows.jsonl). How much the ruling states (its length,
# its count of numbers) and how much the court's reasoning does (reservations lengthen it); its mentions
# of awards however counted, and the parsed award counts' sum, which trees, splitting on one column at a
# time, cannot form; whether it counts from a last reduction.
TREE_ONLY_COLUMNS = [
    "text_length",
    "number_count",
    "reasoning_length",
    "award_mentions",
    "award_count",
    "counts_from_last_reduction",
]
PARSED_COLUMNS = [*FEATURE_COLUMNS, *TREE_ONLY_COLUMNS]


def parse_rulings(cases: pd.DataFrame) -> pd.DataFrame:
    """The parsed features: ``id`` and one column per feature of ``PARSED_COLUMNS`` for each ruling; NaN
    where the ruling does not say (a term, a recommendation, points), 0 for counts and flags it does not
    mention."""
    rows = [ruling_features(text) for text in cases["fact"]]
    table = pd.DataFrame(rows, columns=PARSED_COLUMNS)
    table.insert(0, "id", cases["id"].to_numpy())
    return table


def aligned_features(cases: pd.DataFrame, parsed_features: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The parsed features ``columns`` of each case, rows in ``cases``' order; raises when the table does
    not cover every case (parsed from other rulings than these)."""
    ids = cases["id"].to_numpy()
    if (
        len(ids) == len(parsed_features)
        and np.array_equal(ids, parsed_features["id"].to_numpy())
        and cases["id"].is_unique
    ):
        # Parsed from these cases in their order (as the pipeline parses them): the rows the merge would give.
        return parsed_features[columns].reset_index(drop=True)
    features = cases[["id"]].merge(parsed_features, on="id", how="left", validate="one_to_one")
    if features["crime_count"].isna().any():
        raise ValueError("parsed_features does not cover every case: rerun the pipeline that parses them")
    return features[columns]


def ruling_features(text: str) -> dict[str, Any]:
    """The features of one ruling's text (see ``parse_rulings``)."""
    conduct = _CONDUCT_STARTS.search(text)
    sentencing = text[: conduct.start()] if conduct else text
    crimes = _header_crimes(text) or _crimes(sentencing) or _crimes(text)
    previous = list(_PREVIOUS.finditer(text))
    reduced_by = [_term_months(match) for match in previous if not match.group("kind").startswith("减为")]
    reasoning = _court_reasoning(text)
    adjusted = bool(_ADJUSTS.search(text) or _RESERVATION.search(reasoning))
    adopted = bool(_ADOPTS.search(text)) and not adjusted
    # A later statement of the amount revises an earlier one ("提请 减刑 九个 但 … 鉴此 提请 法院 减刑 六个月").
    recommended = _last_term(_RECOMMENDED, text)
    award_counts = {f"{award}_count": _award_count(pattern, text) for award, pattern in _AWARDS.items()}
    return {
        "crime": crimes[0] if crimes else None,
        "crime_count": len(crimes),
        "recommended_months": recommended,
        "recommended_term_months": _first_term(_RECOMMENDED_TERM, text),
        "proposal_stated": int(bool(_PROPOSAL.search(text))),
        "proposal_adopted": int(adopted),
        "proposal_adjusted": int(adjusted),
        "reduction_refused": int(bool(_REFUSED.search(text))),
        "remaining_term": int(bool(_REMAINING_TERM.search(text))),
        "adopted_months": recommended if adopted else np.nan,
        "adjusted_months": recommended if adjusted else np.nan,
        "original_term_months": _original_term(sentencing, text),
        "life_sentence": int(bool(_LIFE.search(sentencing))),
        "death_reprieve": int(bool(_DEATH_REPRIEVE.search(sentencing))),
        "political_rights_months": _sentencing_term(_POLITICAL_RIGHTS, sentencing, text),
        "fine_yuan": _fine(sentencing, text),
        "previous_reductions": len(previous),
        "previous_reduction_months": float(sum(months for months in reduced_by if months is not None)),
        **award_counts,
        "reward_points": _reward_points(text),
        "recidivist": int(_is_recidivist(text)),
        "property_unpaid": int(bool(_UNPAID.search(text))),
        "property_paid": int(bool(_PAID.search(text))),
        "text_length": _length(text),
        "number_count": len(_NUMBER_WRITTEN.findall(text)),
        "reasoning_length": _length(reasoning),
        "award_mentions": len(_AWARD_MENTION.findall(text)),
        "award_count": sum(award_counts.values()),
        "counts_from_last_reduction": int(bool(_SINCE_LAST_REDUCTION.search(text))),
    }


def _length(text: str) -> int:
    """Characters, not counting the spaces a segmented copy puts between words."""
    return len(text) - text.count(" ")


def _court_reasoning(text: str) -> str:
    """The court's reasoning: the text after its first 本院认为, empty where the ruling has none (a CAIL
    fact, a truncated head)."""
    match = _COURT_REASONS.search(text)
    return text[match.end() :] if match else ""


def parse_chinese_numeral(text: str) -> float:
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
    years, months, days = match.group("years"), match.group("months"), match.group("days")
    if years is None and months is None and days is None:
        return None
    return (
        12 * (parse_chinese_numeral(years) if years else 0)
        + (parse_chinese_numeral(months) if months else 0)
        + (parse_chinese_numeral(days) / _DAYS_PER_MONTH if days else 0)
    )


def _terms(pattern: re.Pattern, text: str) -> list[float]:
    return [term for term in (_term_months(match) for match in pattern.finditer(text)) if term is not None]


def _first_term(pattern: re.Pattern, text: str) -> float:
    terms = _terms(pattern, text)
    return terms[0] if terms else np.nan


def _last_term(pattern: re.Pattern, text: str) -> float:
    terms = _terms(pattern, text)
    return terms[-1] if terms else np.nan


def _sentencing_term(pattern: re.Pattern, sentencing: str, text: str) -> float:
    """The last term in the account of the sentence (an appeal's replaces the first court's), else the
    first anywhere."""
    last = _last_term(pattern, sentencing)
    return _first_term(pattern, text) if np.isnan(last) else last


def _original_term(sentencing: str, text: str) -> float:
    """The fixed term the court imposed: as ``_sentencing_term``, skipping the terms of reductions
    ("减为有期徒刑二十年", "减去有期徒刑八个月")."""

    def imposed(part: str) -> list[float]:
        return [
            term
            for match in _SENTENCE.finditer(part)
            if (term := _term_months(match)) is not None
            and not _NOT_ORIGINAL.search(part[max(0, match.start() - 8) : match.start()].replace(" ", ""))
        ]

    terms = imposed(sentencing)
    if terms:
        return terms[-1]
    anywhere = imposed(text)
    return anywhere[0] if anywhere else np.nan


def _header_crimes(text: str) -> list[str]:
    match = _HEADER_CRIMES.match(text)
    return [crime for crime in _CRIME_SEPARATORS.split(match.group(1)) if crime] if match else []


def _crimes(text: str) -> list[str]:
    match = _CRIME.search(text)
    if match is None:
        return []
    return [crime for crime in _CRIME_SEPARATORS.split(match.group(1)) if crime]


def _fine(sentencing: str, text: str) -> float:
    """The fine in yuan: as ``_sentencing_term``, the last in the account of the sentence (an appeal's
    replaces the first court's), else the first anywhere."""
    stated = list(_FINE.finditer(sentencing))
    match = stated[-1] if stated else _FINE.search(text)
    if match is None:
        return np.nan
    return parse_chinese_numeral(match.group("amount")) * (10_000 if match.group("unit") else 1)


def _award_count(award: str, text: str) -> float:
    """Times awarded: the numbers written beside the award ("表扬6次", "3次表扬", "表扬 4" and "获得 4 表扬"
    where a copy dropped 次 or 个), one for a mention without a number ("获得表扬"). Summed over the
    mentions, although a ruling often states the same awards twice (the prison's proposal, the court's
    findings): the largest instead of the sum measured no better on real rows
    (benchmarks/results/history_real_rows.jsonl)."""
    total = 0.0
    for mention in re.finditer(award, text):
        after = _AWARD_COUNT_AFTER.match(text, mention.end())
        before = _AWARD_COUNT_BEFORE.search(text[max(0, mention.start() - 10) : mention.start()])
        if after:
            total += parse_chinese_numeral(after.group("counted") or after.group("bare"))
        elif before:
            total += parse_chinese_numeral(before.group("counted") or before.group("bare"))
        else:
            total += 1.0
    return total


def _reward_points(text: str) -> float:
    points = [
        float(match.group("points"))
        for match in _POINTS.finditer(text)
        if not (match.group("keyword") == "奖励" and match.group("award"))
    ]
    return max(points) if points else np.nan


def _is_recidivist(text: str) -> bool:
    """累犯 that no 非/不/无 in front of it denies ("非累犯", "不是累犯", "不构成 累犯")."""
    for mention in _RECIDIVISM.finditer(text):
        preceding = text[max(0, mention.start() - 8) : mention.start()].replace(" ", "")
        if not _DENIAL.search(preceding):
            return True
    return False
