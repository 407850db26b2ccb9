"""The parser of rulings on hand-written ruling snippets: real phrasings, word-segmented copies, missing
and odd forms."""

import math

import numpy as np
import pandas as pd
import pytest

from sentence_reduction.pipelines.data.normalisation import normalise_rulings
from sentence_reduction.pipelines.train.parsing import (
    FEATURE_COLUMNS,
    TREE_ONLY_COLUMNS,
    parse_chinese_numeral,
    parse_rulings,
    ruling_features,
)

NORMALISATION = {"fold_full_width": True, "collapse_whitespace": True, "mask_criminal_name": True, "name_mask": "某"}

# After the pipeline's normalisation, as the parser sees it (name masked, NFKC digits).
REAL = (
    "罪犯吴智信，男，1990年xx月xx日出生，汉族，非累犯，现在广西贵港监狱服刑，以被告人吴智信犯抢劫、盗窃罪，"
    "判处有期徒刑二十年，剥夺政治权利四年，并处罚金人民币210000元；该犯不服，提出上诉，经玉林市中级人民法院于"
    "2013年xx月xx日作出刑事判决，判处有期徒刑十五年，剥夺政治权利一年，并处罚金人民币190000元。"
    "执行机关认为，罪犯吴智信在服刑期间确有悔改表现，建议对该犯减刑一年，并提供了证据。 经审理查明，"
    "获得记功1次，获得表扬6次。截至2015年5月止，累计奖励分85.33分。 另查明，该犯至今未缴纳原判罚金190000元。"
)


def _normalised(text: str) -> str:
    frame = pd.DataFrame({"id": ["id_0"], "fact": [text]})
    return normalise_rulings(frame, NORMALISATION)["fact"][0]


def test_real_phrasing_after_normalisation():
    features = ruling_features(_normalised(REAL))
    assert features["crime"] == "抢劫" and features["crime_count"] == 2
    assert features["recommended_months"] == 12
    assert features["original_term_months"] == 180  # the appeal's fifteen years, not the first court's twenty
    assert features["political_rights_months"] == 12
    assert features["fine_yuan"] == 190000  # the appeal's, as for the term
    assert (features["merit_count"], features["praise_count"], features["material_reward_count"]) == (1, 6, 0)
    assert features["reward_points"] == pytest.approx(85.33)
    assert features["recidivist"] == 0  # 非累犯
    assert (features["property_unpaid"], features["property_paid"]) == (1, 0)
    assert (features["life_sentence"], features["death_reprieve"], features["previous_reductions"]) == (0, 0, 0)


def test_word_segmented_copy_without_stop_words_parses_the_same():
    # jieba-style: a space between words, 的/了/对/个 removed.
    segmented = (
        "罪犯 某 男 非 累犯 现在 广西 贵港 监狱 服刑 以 被告人 某 犯 抢劫 、 盗窃罪 "
        "判处 有期徒刑 二十年 剥夺 政治权利 四年 "
        "并处 罚金 人民币 210000 元 经 玉林市 中级 人民法院 判决 "
        "判处 有期徒刑 十五年 剥夺 政治权利 一年 执行 机关 认为 "
        "确有 悔改 表现 建议 该犯 减刑 一年 六 月 经 审理 查明 获得 记功 1 次 获得 表扬 6 次 累计 奖励分 85.33 分 "
        "另 查明 该犯 至今 未 缴纳 原判 罚金 190000 元"
    )
    features = ruling_features(_normalised(segmented))
    assert features["crime"] == "抢劫" and features["crime_count"] == 2
    assert features["recommended_months"] == 18
    assert features["original_term_months"] == 180 and features["political_rights_months"] == 12
    assert features["fine_yuan"] == 210000  # the appeal states none; the unpaid 190000 after 另查明 is no sentence
    assert (features["merit_count"], features["praise_count"]) == (1, 6)
    assert features["reward_points"] == pytest.approx(85.33)
    assert features["recidivist"] == 0 and features["property_unpaid"] == 1


@pytest.mark.parametrize(
    ("snippet", "months"),
    [
        ("执行机关提请对其减刑六个月。", 6),
        ("建议对罪犯某减去有期徒刑八个月，报送本院。", 8),
        ("监狱建议对该犯减刑1年6个月。", 18),
        ("建议对该犯减刑一年零三个月", 15),
        ("报请 减刑 十 个 月", 10),
        ("提出减刑建议书报送本院审理。", None),  # a proposal without its amount
        ("本院认为，可予减刑。", None),
    ],
)
def test_recommended_reduction_forms(snippet, months):
    value = ruling_features(snippet)["recommended_months"]
    assert math.isnan(value) if months is None else value == months, value


def test_life_death_reprieve_previous_reduction_and_recidivism():
    text = (
        "罪犯某，男，累犯，以被告人某犯故意杀人罪，判处死刑，缓期二年执行，剥夺政治权利终身。"
        "2012年xx月xx日经某省高级人民法院裁定减为无期徒刑，2015年xx月xx日裁定减为有期徒刑二十年。"
        "服刑期间，获表扬三次，物质奖励2次。该犯财产性判项已履行完毕。建议将其刑罚减为有期徒刑十九年。"
    )
    features = ruling_features(text)
    assert features["death_reprieve"] == 1 and math.isnan(features["original_term_months"])
    assert features["previous_reductions"] == 2 and features["previous_reduction_months"] == 0
    assert features["recommended_term_months"] == 19 * 12 and math.isnan(features["recommended_months"])
    assert features["recidivist"] == 1
    assert (features["praise_count"], features["material_reward_count"]) == (3, 2)
    assert (features["property_unpaid"], features["property_paid"]) == (0, 1)


def test_previous_reduction_amount_and_denied_recidivism():
    text = (
        "罪犯某，不是累犯，因犯盗窃罪被判处有期徒刑十三年。2016年xx月xx日经本院裁定减去有期徒刑八个月。"
        "经审理查明，获得表扬，另查明，罪犯财产性判项未履行，本人无履行能力。建议对该犯减刑六个月。"
    )
    features = ruling_features(text)
    assert features["original_term_months"] == 156 and features["crime"] == "盗窃"
    assert features["previous_reductions"] == 1 and features["previous_reduction_months"] == 8
    assert features["recommended_months"] == 6
    assert features["praise_count"] == 1  # a mention without a number counts once
    assert features["recidivist"] == 0 and features["property_unpaid"] == 1


def test_a_ruling_that_says_nothing_parses_to_missing_values_and_zero_counts():
    features = parse_rulings(pd.DataFrame({"id": ["a"], "fact": ["罪犯某，男，汉族。本院认为，可予减刑。"]}))
    assert list(features.columns) == ["id", *FEATURE_COLUMNS, *TREE_ONLY_COLUMNS]
    row = features.iloc[0]
    assert row["crime"] is None and row["crime_count"] == 0
    for column in ("recommended_months", "original_term_months", "reward_points", "fine_yuan"):
        assert np.isnan(row[column]), column
    assert row[["praise_count", "merit_count", "recidivist", "property_unpaid", "previous_reductions"]].sum() == 0


@pytest.mark.parametrize(
    ("text", "measures"),
    [
        # text_length, number_count, reasoning_length, award_mentions, award_count, counts_from_last_reduction
        ("获得 表扬 2 次 记功 1 次 监狱 改造 积极 分子 奖励 84.5 上次 减刑 以来", (30, 3, 0, 3, 4, 1)),
        ("获得表扬6次，记功1次。自上次减刑以来，累计奖励分85.33分。本院认为，该犯确有悔改表现。", (46, 3, 10, 2, 7, 1)),
        ("该犯 减刑 一年 以后 表扬 本院 认为 但 未 履行", (18, 0, 4, 1, 1, 0)),  # 减刑 一年 以后: no last reduction
    ],
)
def test_the_trees_measures_of_a_ruling(text, measures):
    features = ruling_features(text)
    assert tuple(features[column] for column in TREE_ONLY_COLUMNS) == measures


@pytest.mark.parametrize(
    ("text", "value"),
    [("六", 6), ("十", 10), ("十三", 13), ("二十", 20), ("二十五", 25), ("一百零五", 105), ("两", 2), ("85.33", 85.33)],
)
def test_parse_chinese_numerals(text, value):
    assert parse_chinese_numeral(text) == pytest.approx(value)


def test_parse_chinese_numeral_refuses_other_text():
    with pytest.raises(ValueError, match="not a number"):
        parse_chinese_numeral("半")


@pytest.mark.parametrize(
    ("snippet", "months"),
    [
        # Word-segmented copies: 月 dropped after 个 as a stop word, 该/对 missing, spaces anywhere.
        ("确有 悔改 表现 建议 减刑 六个月 执行 机关", 6),
        ("本院 提出 减去 有期徒刑 八个 建议 考核 期 获得 记功 奖励 2 次", 8),
        ("建议 犯 减去 有期徒刑 一年 四个 建议 城郊 人民检察院", 16),
        ("理由 建议 予以 减刑 一年 六个月 服刑 期间", 18),
        ("确有 悔改 表现 提请 本院 减刑 15 天 服刑", 0.5),
        # A revised proposal: the later amount.
        ("确有 悔改 表现 提请 减刑 九个 但 财产性 判项 未 履行 减刑 幅度 三个 鉴此 提请 法院 减刑 六个月", 6),
        # Must not match: a proposal without its amount, a month of the calendar, a working-day count.
        ("提请 减刑 符合 法律 条件 提请 程序 符合 法律", None),
        ("建议 减刑 原判 8 月份 被告人", None),
        ("监狱 提请 减刑 假释 评审 委员会 评审 公示 五个 工作日", None),
    ],
)
def test_recommended_reduction_in_segmented_copies(snippet, months):
    value = ruling_features(snippet)["recommended_months"]
    assert math.isnan(value) if months is None else value == pytest.approx(months), value


def test_condensed_header_of_a_segmented_copy():
    features = ruling_features(
        "抢劫罪 盗窃罪 有期徒刑 十五年 执行 机关 提出 服刑 期间 确有 悔改 表现 获 表扬 4 建议 减去 有期徒刑 八个 "
        "2 4 获 奖励 84.5 获 监狱 改造 积极分子 获得 奖励 1 次"
    )
    assert (features["crime"], features["crime_count"]) == ("抢劫", 2)
    assert features["original_term_months"] == 180  # not the 8 months of the proposal
    assert features["praise_count"] == 4 and features["activist_count"] == 1
    assert features["reward_points"] == pytest.approx(84.5)  # "奖励 1 次" is a count, not points
    assert features["proposal_stated"] == 1 and features["recommended_months"] == 8


def test_life_and_death_headers_and_a_commutation_that_is_no_original_term():
    life = ruling_features("故意杀人罪 无期徒刑 执行 机关 提请 减刑 建议 减为 有期徒刑 二十二年")
    assert life["life_sentence"] == 1 and life["recommended_term_months"] == 264
    assert math.isnan(life["original_term_months"]) and math.isnan(life["recommended_months"])
    assert ruling_features("贩卖毒品罪 死刑 执行 机关 认为 确有 悔改 表现")["death_reprieve"] == 1


def test_a_text_without_the_header_or_any_proposal_has_no_crime_from_the_word_criminal():
    features = ruling_features("罪犯某，男，汉族，现在某监狱服刑。本院认为，该犯确有悔改表现。")
    assert features["crime"] is None and features["proposal_stated"] == 0


@pytest.mark.parametrize(
    ("snippet", "stance"),
    [
        # The court adopts or supports the proposal: segmented, and raw with its commas.
        ("建议 减刑 六个月 本院认为 确有 悔改 表现 减刑 建议 合法 予以 采纳", "adopted"),
        ("建议 减刑 六个月 执行 机关 提请 减刑 幅度 本院 予以 采纳", "adopted"),
        ("建议对该犯减刑六个月。本院认为，执行机关提请减刑的意见，本院予以支持。", "adopted"),
        ("监狱提请对该犯减刑六个月，对该减刑建议，本院予以采纳。", "adopted"),
        # It adjusts it: declines, lowers, or keeps a reservation in its reasoning.
        ("建议 减刑 六个月 执行 机关 提请 减刑 幅度 不当 本院 予以 调整", "adjusted"),
        ("建议 减刑 六个月 检察机关 建议 下调 减刑 幅度 予以 支持", "adjusted"),
        ("建议 减刑 六个月 提请 减刑 建议 合法 但 提请 幅度 偏高 本院 予以 减低", "adjusted"),
        ("建议对该犯减刑六个月。对执行机关的减刑建议，本院不予采纳。", "adjusted"),
        ("建议 减刑 六个月 本院认为 确有 悔改 表现 但 未 履行 财产性 判项 减刑 幅度", "adjusted"),
        # Neither: the facts or evidence confirmed, a "但" before the court's reasoning, 不但 in it.
        ("建议 减刑 六个月 上述 事实 证据 本院 予以 确认 本院认为 符合 法定 减刑 条件", None),
        ("建议 减刑 六个月 但 该犯 系 累犯 本院认为 确有 悔改 表现 可予 减刑", None),
        ("建议减刑六个月。本院认为，该犯不但认罪悔罪，而且积极劳动，可予减刑。", None),
    ],
)
def test_the_courts_stance_on_the_proposal(snippet, stance):
    features = ruling_features(snippet)
    assert features["recommended_months"] == 6
    assert (features["proposal_adopted"], features["proposal_adjusted"]) == (stance == "adopted", stance == "adjusted")
    for name in ("adopted", "adjusted"):
        value = features[f"{name}_months"]
        assert value == 6 if stance == name else math.isnan(value), (name, value)


def test_a_stance_without_a_stated_amount_has_no_stance_months():
    features = ruling_features("执行机关提请对该犯减刑，本院认为，其减刑建议合法，予以采纳。")
    assert features["proposal_adopted"] == 1 and math.isnan(features["adopted_months"])


@pytest.mark.parametrize(
    ("snippet", "refused", "remaining"),
    [
        # The court refuses, or the procuratorate advises it to: segmented and raw.
        ("本院认为 上次 减刑 获得 表扬 奖励 但 认知 能力 认罪 悔罪 情况 本次 暂 不予 减刑", 1, 0),
        ("检察机关 出具 出庭 意见 建议 不予 减刑 本院认为 服刑 期间 悔改 表现", 1, 0),
        ("本院认为，该犯有能力履行财产性判项而拒不履行，不予减刑。", 1, 0),
        # The whole remaining term taken off, proposed or decided.
        ("建议 人民法院 犯 减去 有期徒刑 剩余 刑期 服刑 期间 认罪 悔罪", 0, 1),
        ("执行机关建议减去有期徒刑六个月，超过其服刑期限，依法减去余刑。", 0, 1),
        # Neither: a reduction granted, the remaining term weighed but not taken off, a term "减去" alone.
        ("本院认为 确有 悔改 表现 符合 法定 减刑 条件 可予 减刑", 0, 0),
        ("综合 该犯 犯罪 性质 财产性 判项 履行 情况 剩余 刑期 因素 减刑 幅度", 0, 0),
        ("建议 减去 有期徒刑 六个月 本院认为 予以 采纳", 0, 0),
    ],
)
def test_a_refused_reduction_and_the_remaining_term_taken_off(snippet, refused, remaining):
    features = ruling_features(snippet)
    assert (features["reduction_refused"], features["remaining_term"]) == (refused, remaining)


@pytest.mark.parametrize(
    ("snippet", "praise", "merit", "points"),
    [
        # The count before the award, 个 or 次 dropped by a segmented copy, after a verb of getting.
        ("考核 周期 12 12 累计 获得 6 表扬 建议 予以 减去 有期徒刑 七个", 6, 0, None),
        ("现 累计 4 表扬 加 考核 332.5 罚金 人民币 三万元 缴纳", 4, 0, 332.5),
        ("3 5 获 奖励 6 表扬 获 监狱 级 劳动 能手", 6, 0, None),  # a count of praise, not 6 points
        ("该犯服刑期间共获得4个表扬，记功1次。", 4, 1, None),
        # Must not read a list's count as the next award's, nor points as a count.
        ("监狱 考核 获得 表扬 3 记功 1 事实", 3, 1, None),
        ("获得 考核 积分 537 记功 5 次 省级 改造 积极分子 1 次", 0, 5, 537),
        # Points after 考核 with 分 dropped, but not a deduction of them.
        ("现 累计 4 表扬 加 考核 347 罚金 人民币 缴纳", 4, 0, 347),
        ("与 他人 斗殴 被扣 考核 9 本院认为 确有 悔改 表现", 0, 0, None),
    ],
)
def test_award_counts_written_before_the_award_and_points(snippet, praise, merit, points):
    features = ruling_features(snippet)
    assert (features["praise_count"], features["merit_count"]) == (praise, merit)
    value = features["reward_points"]
    assert math.isnan(value) if points is None else value == pytest.approx(points), value
