"""Seeded generator of synthetic sentence-reduction (减刑) rulings in the DC611 format.

The real competition files (``train.csv``: ``id,fact,label``; ``testA.csv``: ``id,fact``) cannot
ship with the project, so pipelines and tests run on rulings made here instead. Each ruling is
rendered from latent case factors (original sentence, awards, recidivism, unpaid property
judgments, crime type, ...) that are all expressed in its text; the label (months of reduction)
is a noisy score of those factors, rank-mapped onto the real label histogram.

Run as ``python -m sentence_reduction.sample_data --output data/01_raw/sample``.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd

from sentence_reduction.atomic import written_atomically

T = TypeVar("T")

# Label histogram of the 50,001 real training rows (counts read off a public plot, +-20).
# Labels 25..30 and 33 are present but too rare to read; 31 and 32 never occur.
# fmt: off
REFERENCE_LABEL_COUNTS: dict[int, int] = {
    0: 989, 1: 704, 2: 1027, 3: 1541, 4: 2435, 5: 3785, 6: 6696, 7: 6201, 8: 5821,
    9: 4128, 10: 2549, 11: 2834, 12: 4375, 13: 723, 14: 837, 15: 761, 16: 723, 17: 742,
    18: 704, 19: 495, 20: 514, 21: 476, 22: 457, 23: 342, 24: 285,
    25: 10, 26: 10, 27: 10, 28: 10, 29: 10, 30: 10, 33: 10,
}
# fmt: on
_TOTAL = sum(REFERENCE_LABEL_COUNTS.values())
LABEL_PROPORTIONS: dict[int, float] = {k: v / _TOTAL for k, v in REFERENCE_LABEL_COUNTS.items()}

# The latest year a proposal can be filed: the real rulings date from before the 2019 contest.
_LAST_YEAR = 2018
_DIGITS = "零一二三四五六七八九"


# ---------------------------------------------------------------- randomness


class _Dice:
    """Buffered draws from one ``numpy.random.Generator``.

    Scalar Generator calls cost microseconds each and a ruling needs ~100 of them, so the
    uniforms and normals are drawn in blocks; the order of draws stays fixed, hence seeded.
    """

    _BLOCK = 8192

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._uniforms: list[float] = []
        self._normals: list[float] = []

    def uniform(self) -> float:
        if not self._uniforms:
            self._uniforms = self._rng.random(self._BLOCK).tolist()[::-1]
        return self._uniforms.pop()

    def normal(self) -> float:
        if not self._normals:
            self._normals = self._rng.standard_normal(self._BLOCK).tolist()[::-1]
        return self._normals.pop()

    def chance(self, p: float) -> bool:
        return self.uniform() < p

    def integer(self, low: int, high: int) -> int:
        """Uniform integer in ``[low, high]`` (both ends included)."""
        return low + min(int(self.uniform() * (high - low + 1)), high - low)

    def pick(self, options: Sequence[T]) -> T:
        return options[min(int(self.uniform() * len(options)), len(options) - 1)]

    def weighted(self, options: Sequence[T], weights: Sequence[float]) -> T:
        cumulative = list(itertools.accumulate(weights))
        return options[min(bisect.bisect_right(cumulative, self.uniform() * cumulative[-1]), len(options) - 1)]

    def sample(self, options: Sequence[T], k: int) -> list[T]:
        """``k`` distinct options, in random order."""
        pool = list(options)
        return [pool.pop(self.integer(0, len(pool) - 1)) for _ in range(min(k, len(pool)))]


# ---------------------------------------------------------------- vocabulary


@dataclass(frozen=True)
class _Province:
    name: str
    short: str  # as locals write it in "原住广西..."
    abbr: str  # the one-character court abbreviation in case numbers
    counties: tuple[str, ...]
    prisons: tuple[str, ...]
    cities: tuple[str, ...]
    # How the province's prisons report good conduct: 表扬/记功 counts, 奖励分 points, or both.
    award_system: str


_PROVINCES = (
    _Province(
        "河南省",
        "河南",
        "豫",
        ("郑州市中牟县", "洛阳市嵩县", "南阳市唐河县", "周口市鹿邑县", "信阳市固始县", "商丘市睢县"),
        ("新郑监狱", "郑州监狱", "豫北监狱", "周口监狱", "南阳监狱"),
        ("郑州市", "洛阳市", "南阳市", "新乡市"),
        "praise",
    ),
    _Province(
        "湖南省",
        "湖南",
        "湘",
        ("邵阳市隆回县", "衡阳市衡南县", "常德市桃源县", "永州市祁阳县", "怀化市溆浦县", "郴州市桂阳县"),
        ("星城监狱", "长沙监狱", "岳阳监狱", "网岭监狱", "赤山监狱"),
        ("长沙市", "岳阳市", "益阳市", "常德市"),
        "praise",
    ),
    _Province(
        "广西壮族自治区",
        "广西",
        "桂",
        ("玉林市博白县", "贵港市平南县", "南宁市宾阳县", "北海市合浦县", "河池市都安县", "梧州市藤县"),
        ("贵港监狱", "柳州监狱", "梧州监狱", "北海监狱", "西江监狱"),
        ("南宁市", "贵港市", "柳州市", "玉林市"),
        "points",
    ),
    _Province(
        "四川省",
        "四川",
        "川",
        ("南充市营山县", "达州市渠县", "凉山州会理县", "宜宾市兴文县", "绵阳市三台县"),
        ("川西监狱", "嘉州监狱", "攀西监狱", "锦江监狱", "川北监狱"),
        ("成都市", "绵阳市", "乐山市", "攀枝花市"),
        "mixed",
    ),
    _Province(
        "广东省",
        "广东",
        "粤",
        ("湛江市雷州市", "茂名市化州市", "梅州市五华县", "揭阳市普宁市", "清远市英德市"),
        ("韶关监狱", "番禺监狱", "惠州监狱", "阳江监狱", "北江监狱"),
        ("广州市", "韶关市", "惠州市", "阳江市"),
        "points",
    ),
    _Province(
        "辽宁省",
        "辽宁",
        "辽",
        ("沈阳市康平县", "大连市庄河市", "鞍山市海城市", "锦州市凌海市", "铁岭市昌图县"),
        ("沈阳第一监狱", "大连市监狱", "锦州监狱", "鞍山监狱", "凌源第二监狱"),
        ("沈阳市", "大连市", "锦州市", "朝阳市"),
        "praise",
    ),
    _Province(
        "福建省",
        "福建",
        "闽",
        ("泉州市南安市", "三明市尤溪县", "漳州市漳浦县", "莆田市仙游县", "宁德市霞浦县"),
        ("清流监狱", "福清监狱", "泉州监狱", "闽西监狱", "建阳监狱"),
        ("福州市", "三明市", "泉州市", "龙岩市"),
        "mixed",
    ),
    _Province(
        "黑龙江省",
        "黑龙江",
        "黑",
        ("绥化市青冈县", "齐齐哈尔市讷河市", "哈尔滨市巴彦县", "佳木斯市桦南县"),
        ("呼兰监狱", "泰来监狱", "牡丹江监狱", "北安监狱"),
        ("哈尔滨市", "齐齐哈尔市", "牡丹江市"),
        "praise",
    ),
    _Province(
        "山东省",
        "山东",
        "鲁",
        ("临沂市沂水县", "菏泽市曹县", "潍坊市寿光市", "聊城市莘县", "济宁市嘉祥县"),
        ("济南监狱", "潍北监狱", "鲁中监狱", "临沂监狱", "鲁南监狱"),
        ("济南市", "潍坊市", "临沂市", "淄博市"),
        "mixed",
    ),
    _Province(
        "吉林省",
        "吉林",
        "吉",
        ("长春市榆树市", "吉林市舒兰市", "四平市梨树县", "松原市扶余市"),
        ("吉林监狱", "四平监狱", "公主岭监狱", "长春铁北监狱"),
        ("长春市", "吉林市", "四平市"),
        "praise",
    ),
    _Province(
        "浙江省",
        "浙江",
        "浙",
        ("温州市瑞安市", "台州市温岭市", "金华市东阳市", "衢州市江山市"),
        ("十里丰监狱", "乔司监狱", "南湖监狱", "金华监狱"),
        ("杭州市", "金华市", "衢州市", "湖州市"),
        "mixed",
    ),
    _Province(
        "山西省",
        "山西",
        "晋",
        ("大同市浑源县", "运城市临猗县", "吕梁市兴县", "长治市沁县"),
        ("太原第三监狱", "晋中监狱", "祁县监狱", "大同监狱"),
        ("太原市", "晋中市", "大同市"),
        "mixed",
    ),
    _Province(
        "宁夏回族自治区",
        "宁夏",
        "宁",
        ("固原市西吉县", "吴忠市同心县", "中卫市海原县"),
        ("银川监狱", "石嘴山监狱", "吴忠监狱"),
        ("银川市", "石嘴山市", "吴忠市"),
        "praise",
    ),
)
_PROVINCE_WEIGHTS = (9, 9, 10, 9, 9, 7, 7, 6, 8, 5, 6, 5, 3)

# Pseudonyms are drawn like the contest's own masking: a common surname plus arbitrary characters.
_SURNAMES = tuple(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾韦覃蒙欧"
)
_GIVEN = tuple(
    "建国志明伟强军华平勇杰涛斌超波辉刚健文海东亮飞宏成俊峰磊鹏龙云春生新德永福林庆贵祥学义荣晓红丽芳英玉兰秀桂凤霞燕敏静彬顺利发兴安中山先笑被孝冠策以卡九固都树凯仁奇晨"
)
_ETHNICITIES = ("汉族", "壮族", "回族", "苗族", "土家族", "瑶族", "满族", "彝族", "蒙古族", "侗族")
_ETHNICITY_WEIGHTS = (86, 3, 2, 2, 2, 1, 1, 1, 1, 1)
_EDUCATIONS = ("文盲", "小学文化", "小学肄业", "初中文化", "初中毕业", "高中文化", "中专文化", "大专文化", "大学文化")
_EDUCATION_WEIGHTS = (4, 16, 3, 38, 8, 13, 7, 6, 5)
_OCCUPATIONS = ("农民", "无业", "务工", "个体经营", "无固定职业", "捕前系某公司职员")
_TOWNS = ("城关镇", "新华街道", "东风乡", "红星村", "石桥镇", "大坪乡", "河西街道", "白沙镇", "长岭村")


@dataclass(frozen=True)
class _Crime:
    name: str
    weight: float
    years: tuple[int, int]  # usual fixed-term range
    strictness: float  # months by which courts shift this crime's reductions
    grave: bool  # can carry 无期 / 死缓
    fine_scale: int  # typical fine in yuan; 0 = no fine
    acts: tuple[str, ...]  # incident templates for the 原判认定 narrative


_CRIMES = (
    _Crime(
        "盗窃罪",
        20,
        (1, 12),
        0.0,
        False,
        20000,
        (
            "{who}在{place}撬锁入室，窃取{goods}，价值{amount}元",
            "{who}窜至{place}，趁无人之机盗走{goods}，经鉴定价值{amount}元",
            "{who}预谋盗窃{place}，剪断窗户钢筋后窃取{goods}（价值{amount}元）",
        ),
    ),
    _Crime(
        "诈骗罪",
        8,
        (2, 12),
        0.0,
        False,
        50000,
        (
            "{who}以介绍工作为名，骗取被害人现金{amount}元",
            "{who}冒充公司工作人员，虚构投资项目，骗取他人钱款共计{amount}元",
        ),
    ),
    _Crime(
        "故意伤害罪",
        10,
        (2, 14),
        0.0,
        True,
        0,
        (
            "{who}在{place}因琐事与被害人发生争执，持刀将被害人捅伤，经鉴定为重伤二级",
            "{who}在{place}与他人斗殴，致被害人轻伤一级，并赔偿被害人经济损失{amount}元",
        ),
    ),
    _Crime(
        "贩卖毒品罪",
        10,
        (3, 15),
        -1.5,
        True,
        30000,
        (
            "{who}在{place}向吸毒人员贩卖甲基苯丙胺{grams}克，得款{amount}元",
            "{who}在{place}被公安人员抓获，当场查获海洛因{grams}克",
        ),
    ),
    _Crime(
        "运输毒品罪", 3, (7, 15), -1.5, True, 50000, ("{who}受他人雇佣，携带海洛因{grams}克乘车途经{place}时被查获",)
    ),
    _Crime(
        "抢劫罪",
        10,
        (3, 16),
        -0.8,
        True,
        10000,
        (
            "{who}在{place}持刀拦截被害人，抢走手机一部及现金{amount}元",
            "{who}伙同他人在{place}采用殴打手段劫取被害人财物，价值{amount}元",
        ),
    ),
    _Crime(
        "信用卡诈骗罪",
        3,
        (2, 10),
        0.0,
        False,
        50000,
        (
            "{who}使用伪造的信用卡在{place}多次取现，共计{amount}元",
            "{who}恶意透支信用卡，经银行多次催收后仍不归还，透支本金{amount}元",
        ),
    ),
    _Crime(
        "交通肇事罪",
        3,
        (1, 6),
        1.5,
        False,
        0,
        ("{who}驾驶货车行至{place}时，因操作不当与行人相撞，致一人死亡，负事故全部责任",),
    ),
    _Crime(
        "受贿罪",
        3,
        (3, 15),
        -2.0,
        True,
        200000,
        ("{who}利用担任{post}的职务便利，为他人谋取利益，非法收受财物共计{amount}元",),
    ),
    _Crime("贪污罪", 2, (3, 13), -2.0, False, 200000, ("{who}利用担任{post}的职务便利，侵吞公款{amount}元",)),
    _Crime(
        "故意杀人罪",
        6,
        (8, 15),
        -0.5,
        True,
        0,
        ("{who}在{place}因感情纠纷持刀刺死被害人", "{who}在{place}与被害人发生口角，用铁锤击打被害人头部致其死亡"),
    ),
    _Crime("强奸罪", 5, (3, 12), -1.0, False, 0, ("{who}在{place}采用暴力手段强行与被害人发生性关系",)),
    _Crime("合同诈骗罪", 3, (3, 12), 0.0, False, 100000, ("{who}以签订购销合同为名，骗取被害单位货款{amount}元",)),
    _Crime(
        "寻衅滋事罪", 3, (1, 8), 0.0, False, 0, ("{who}在{place}酒后无故殴打他人，并砸毁店内物品，损失价值{amount}元",)
    ),
    _Crime("聚众斗殴罪", 2, (2, 8), 0.0, False, 0, ("{who}纠集多人持械在{place}与对方人员斗殴，致二人受伤",)),
    _Crime(
        "非法吸收公众存款罪",
        2,
        (2, 10),
        0.0,
        False,
        100000,
        ("{who}以高息为诱饵向社会公众吸收存款{amount}元，至案发未能归还",),
    ),
    _Crime(
        "组织、领导、参加黑社会性质组织罪",
        2,
        (5, 18),
        -2.5,
        False,
        100000,
        ("{who}参加以他人为首的黑社会性质组织，在{place}多次实施寻衅滋事、敲诈勒索等违法犯罪活动",),
    ),
)
_CRIME_WEIGHTS = tuple(c.weight for c in _CRIMES)
_PLACES = ("某小区", "某公司厂房", "某网吧", "某农贸市场", "某宾馆", "某工地", "国道旁", "某KTV", "某加油站", "某村")
_GOODS = ("电缆线", "摩托车一辆", "手机若干部", "现金及金项链", "银焊条", "电动车两辆", "钢材", "笔记本电脑")
_POSTS = ("某镇党委书记", "某局局长", "某国有公司经理", "某村委会主任", "某医院院长")

_BEHAVIOUR_CLAUSES = (
    ("能认罪悔罪", "能够认罪服法", "认罪服法", "能认罪服判"),
    ("认真遵守法律法规及监规", "认真遵守监规，接受教育改造", "能遵守监规纪律", "遵守监规纪律，服从管理"),
    ("积极参加思想、文化、职业技术教育", "积极参加政治、文化、技术学习", "积极参加三课学习", "参加文化、技术学习"),
    (
        "积极参加劳动，努力完成劳动任务",
        "积极参加劳动，完成劳动任务",
        "劳动积极，能完成生产任务",
        "服从劳动分配，完成劳动任务",
    ),
)
_EVIDENCE = (
    "生效裁判文书",
    "执行通知书",
    "罪犯减刑审核表",
    "罪犯改造评审鉴定表",
    "罪犯奖惩审批表",
    "计分考核手册",
    "罪犯评审鉴定表",
    "检察机关监督评审材料",
    "监区集体评议记录",
)
_GRADES = ("积极", "良好", "合格", "一般")


# ---------------------------------------------------------------- Chinese numerals and amounts


def chinese_numeral(n: int) -> str:
    """1..99 in the Chinese numerals of rulings (十三, 二十, 二十五)."""
    tens, ones = divmod(n, 10)
    if tens == 0:
        return _DIGITS[ones]
    head = "十" if tens == 1 else _DIGITS[tens] + "十"
    return head + (_DIGITS[ones] if ones else "")


def chinese_duration(months: int) -> str:
    """A number of months as a ruling writes it: 八个月, 一年, 八年六个月."""
    years, rest = divmod(months, 12)
    text = f"{chinese_numeral(years)}年" if years else ""
    return text + (f"{chinese_numeral(rest)}个月" if rest else "")


def _money(dice: _Dice, yuan: int) -> str:
    if yuan % 10000 == 0 and dice.chance(0.6):
        return f"{yuan // 10000}万元"
    return f"人民币{yuan}元" if dice.chance(0.7) else f"{yuan}元"


# ---------------------------------------------------------------- latent case


@dataclass
class _Case:
    """The facts of one ruling; every field that moves the score is also written into the text."""

    name: str
    female: bool
    birth_year: int
    home: _Province
    county: str
    prison_province: _Province
    prison: str
    crimes: list[_Crime]
    kind: str  # "fixed", "life" (无期徒刑) or "suspended" (死刑缓期二年执行)
    term_months: int  # fixed terms only
    political_years: int  # 剥夺政治权利 of a fixed term (无期/死缓 always lose them for life)
    fine: int
    confiscation: bool
    start_year: int
    end_year: int  # fixed terms only
    judgement_year: int
    delivery_year: int
    proposal_year: int
    prior_reductions: list[int]  # months, earlier rulings of this court
    praise: int  # 表扬 count, or its equivalent in 奖励分 points
    merits: int  # 记功
    points: float
    activist: bool  # 改造积极分子
    violation: bool  # a disciplinary sanction while serving
    grades: list[str]  # half-year evaluation results
    recidivist: bool
    property_status: str  # "none", "paid", "partial", "unpaid"


def _draw_case(dice: _Dice) -> _Case:
    home = dice.weighted(_PROVINCES, _PROVINCE_WEIGHTS)
    prison_province = home if dice.chance(0.8) else dice.weighted(_PROVINCES, _PROVINCE_WEIGHTS)
    female = dice.chance(0.08)
    prison = "女子监狱" if female else dice.pick(prison_province.prisons)
    crimes = [dice.weighted(_CRIMES, _CRIME_WEIGHTS)]
    if dice.chance(0.08):
        second = dice.weighted(_CRIMES, _CRIME_WEIGHTS)
        if second is not crimes[0]:
            crimes.append(second)
    lead = crimes[0]

    kind = "fixed"
    if lead.grave:
        kind = dice.weighted(("fixed", "life", "suspended"), (80, 13, 7))
    # Timeline: custody, judgement, delivery to prison, then this proposal, all before the term
    # ends and before the contest's data was collected.
    if kind == "fixed":
        low, high = lead.years
        years = low + int((high - low + 1) * dice.uniform() ** 1.3) + (len(crimes) - 1) * dice.integer(1, 3)
        extra = dice.weighted((0, 6, dice.integer(1, 11)), (70, 20, 10))
        term_months = years * 12 + extra
        start_year = dice.integer(max(2003, _LAST_YEAR - 2 - years), 2016)
        end_year = start_year + years + (1 if extra >= 6 else 0)
        judgement_year = min(start_year + dice.weighted((0, 1, 2), (50, 40, 10)), end_year - 1)
        delivery_year = min(judgement_year + (1 if dice.chance(0.3) else 0), end_year - 1)
        latest = min(_LAST_YEAR, end_year - 1)
        earliest = delivery_year + 1 if delivery_year < latest else delivery_year
    else:
        term_months = end_year = 0
        start_year = dice.integer(2003, 2011)
        judgement_year = start_year + dice.weighted((0, 1, 2), (50, 40, 10))
        delivery_year = judgement_year + (1 if dice.chance(0.3) else 0)
        latest = _LAST_YEAR
        # 死缓 is first commuted to 无期 two years after delivery; this proposal comes later.
        earliest = delivery_year + (3 if kind == "suspended" else 2)
    proposal_year = dice.integer(earliest, latest)
    served = max(1, proposal_year - delivery_year)

    prior_reductions = [dice.pick((6, 8, 9, 10, 12)) for _ in range(min(served // 2, 3)) if dice.chance(0.55)]

    quality = dice.normal()  # the prisoner's attitude: moves 表扬, grades and 积极分子 together
    praise = max(0, round(served * (1.1 + 0.45 * quality) + 0.8 * dice.normal()))
    merits = sum(1 for _ in range(min(praise // 3, 4)) if dice.chance(0.25 + 0.1 * quality))
    points = round(praise * (14 + 4 * dice.uniform()) + dice.uniform() * 10, 2)
    # One grade per half year served, from the second half of the delivery year.
    grades = [
        dice.weighted(_GRADES, (max(0.2, 1 + quality), 3, 2, max(0.2, 1 - quality)))
        for _ in range(min(2 * (proposal_year - delivery_year), 10))
    ]

    grave_sentence = kind != "fixed" or term_months >= 120
    fine = 0
    if lead.fine_scale and dice.chance(0.75):
        fine = max(1000, int(lead.fine_scale * math.exp(dice.normal() * 0.7) // 1000 * 1000))
    confiscation = lead.fine_scale > 0 and grave_sentence and dice.chance(0.35)
    if fine or confiscation:
        property_status = dice.weighted(("paid", "partial", "unpaid"), (35, 20, 45))
    else:
        property_status = "none"

    return _Case(
        name=dice.pick(_SURNAMES) + "".join(dice.pick(_GIVEN) for _ in range(1 if dice.chance(0.3) else 2)),
        female=female,
        birth_year=start_year - dice.integer(18, 58),
        home=home,
        county=dice.pick(home.counties),
        prison_province=prison_province,
        prison=prison,
        crimes=crimes,
        kind=kind,
        term_months=term_months,
        political_years=dice.integer(1, 5) if kind == "fixed" and (grave_sentence or dice.chance(0.15)) else 0,
        fine=fine,
        confiscation=confiscation,
        start_year=start_year,
        end_year=end_year,
        judgement_year=judgement_year,
        delivery_year=delivery_year,
        proposal_year=proposal_year,
        prior_reductions=prior_reductions,
        praise=praise,
        merits=merits,
        points=points,
        activist=quality > 1.3 and praise >= 3 and dice.chance(0.6),
        violation=dice.chance(0.08),
        grades=grades,
        recidivist=dice.chance(0.13),
        property_status=property_status,
    )


def _score(case: _Case, dice: _Dice) -> float:
    """Latent reduction in months-like units: what a court weighs, plus its discretion (noise).

    Only the order of scores matters (they are rank-mapped to labels). The discretion noise is kept
    small so that exact months stay learnable from the text, yet far from determined by it.
    """
    # 无期/死缓 commutations are the largest reductions: they sit above any fixed term.
    if case.kind == "life":
        base = 15.0
    elif case.kind == "suspended":
        base = 14.0
    else:
        base = 1.0 + 2.0 * math.log1p(case.term_months / 12)
    conduct = 1.0 * min(case.praise, 14) + 1.0 * case.merits + 1.5 * case.activist - 2.5 * case.violation
    property_effect = {"none": 0.0, "paid": 0.4, "partial": -0.8, "unpaid": -1.8}[case.property_status]
    strictness = min(c.strictness for c in case.crimes)
    return base + conduct + property_effect + strictness - 2.2 * case.recidivist + 0.3 * dice.normal()


def _labels_from_scores(scores: np.ndarray) -> np.ndarray:
    """Rank-map scores onto the reference label histogram, keeping their order."""
    labels = np.array(sorted(LABEL_PROPORTIONS), dtype=np.int64)
    cumulative = np.cumsum([LABEL_PROPORTIONS[k] for k in labels])
    quantiles = (np.arange(len(scores)) + 0.5) / len(scores)
    ranked = labels[np.minimum(np.searchsorted(cumulative, quantiles, side="right"), len(labels) - 1)]
    out = np.empty(len(scores), dtype=np.int64)
    out[np.argsort(scores, kind="stable")] = ranked
    return out


# ---------------------------------------------------------------- rendering


def _header(case: _Case, dice: _Dice) -> str:
    sex = "女" if case.female else "男"
    born = f"{case.birth_year}年xx月xx日{dice.pick(('出生', '出生', '生'))}"
    ethnicity = dice.weighted(_ETHNICITIES, _ETHNICITY_WEIGHTS)
    education = dice.weighted(_EDUCATIONS, _EDUCATION_WEIGHTS)
    origin = f"{case.home.name}{case.county}"
    alias = f"又名{case.name[0]}{dice.pick(_GIVEN)}{dice.pick(_GIVEN)}，" if dice.chance(0.04) else ""
    recidivism = ("累犯，" if case.recidivist else "非累犯，") if dice.chance(0.3) else ""
    serving = f"现在{case.prison_province.name}{case.prison}服刑"
    residence = ""
    if dice.chance(0.45):
        house = f"{dice.integer(1, 30)}组{dice.integer(1, 99)}号" if dice.chance(0.4) else ""
        residence = (
            f"{dice.pick(('原住', '捕前住', '原户籍所在地'))}{case.home.short}{case.county}{dice.pick(_TOWNS)}{house}，"
        )
    occupation = f"{dice.pick(_OCCUPATIONS)}，" if dice.chance(0.3) else ""
    layout = dice.weighted(("plain", "born_in", "minimal", "birthplace"), (55, 20, 7, 18))
    if layout == "minimal":
        return f"罪犯{case.name}，{serving}，"
    if layout == "born_in":
        return (
            f"罪犯{case.name}，{alias}{sex}，{case.birth_year}年xx月xx日出生于{origin}，{ethnicity}，"
            f"{education}，{occupation}{residence}{recidivism}{serving}。"
        )
    if layout == "birthplace":
        return (
            f"罪犯{case.name}，{alias}{sex}，{born}，{ethnicity}，出生地{origin}，{education}，"
            f"{residence}{recidivism}{serving}。"
        )
    return (
        f"罪犯{case.name}，{alias}{sex}，{born}，{ethnicity}，{origin}人，{education}，"
        f"{occupation}{residence}{recidivism}{serving}。"
    )


def _penalty(case: _Case, dice: _Dice) -> str:
    if case.kind == "life":
        parts = ["无期徒刑", "剥夺政治权利终身"]
    elif case.kind == "suspended":
        parts = ["死刑，缓期二年执行", "剥夺政治权利终身"]
    else:
        parts = [f"有期徒刑{'刑期' if dice.chance(0.03) else ''}{chinese_duration(case.term_months)}"]
        if case.political_years:
            parts.append(f"剥夺政治权利{chinese_numeral(case.political_years)}年")
    if case.fine:
        parts.append(f"并处罚金{_money(dice, case.fine)}")
    if case.confiscation:
        parts.append(
            dice.pick(("并处没收个人财产", "没收个人全部财产", f"没收个人财产{_money(dice, case.fine or 50000)}"))
        )
    return "，".join(parts)


def _judgement(case: _Case, dice: _Dice) -> str:
    province = case.prison_province
    city = dice.pick(province.cities)
    serious = case.kind != "fixed" or case.term_months >= 180
    if serious or dice.chance(0.2):
        court, code = f"{city}中级人民法院", f"{city[0]}中"
    else:
        county = dice.pick(province.counties)
        court, code = f"{county}人民法院", county[0]
    number = f"（{case.judgement_year}）{code}刑初字第{dice.integer(1, 999)}号"
    crimes = "、".join(c.name for c in case.crimes)
    penalty = _penalty(case, dice)
    opening = dice.weighted(
        (
            f"{court}于{case.judgement_year}年xx月xx日作出{number}刑事判决，以被告人{case.name}犯{crimes}，判处{penalty}。",
            f"以被告人{case.name}犯{crimes}，判处{penalty}。",
            f"认定{case.name}犯{crimes}，判处{penalty}。",
            f"{court}以{case.name}犯{crimes}，于{case.judgement_year}年xx月xx日判处{penalty}。",
        ),
        (45, 25, 15, 15),
    )
    sentences = [opening]
    if case.kind == "fixed":
        sentences.append(f"刑期自{case.start_year}年xx月xx日起至{case.end_year}年xx月xx日止。")
    if dice.chance(0.3):
        appeal_court = f"{province.name}高级人民法院" if serious else f"{city}中级人民法院"
        appeal_code = f"{province.abbr}法刑{dice.pick('一二三')}终字" if serious else f"{city[0]}中刑终字"
        year = case.judgement_year + (1 if dice.chance(0.4) else 0)
        sentences.append(
            f"宣判后，{case.name}{dice.pick(('不服，', '', '等'))}提出上诉。{appeal_court}于{year}年xx月xx日作出"
            f"（{year}）{appeal_code}第{dice.integer(1, 300)}号刑事裁定，驳回上诉，维持原判。"
        )
    sentences.append(
        dice.pick(
            (
                f"判决生效后，于{case.delivery_year}年xx月xx日交付{case.prison_province.name}{case.prison}执行刑罚。",
                f"{case.delivery_year}年xx月xx日送{case.prison_province.short}{case.prison}服刑。",
                f"于{case.delivery_year}年xx月xx日交付执行。",
            )
        )
    )
    if case.kind == "suspended":
        sentences.append(
            f"{case.delivery_year + 2}年xx月xx日经{province.name}高级人民法院裁定减为无期徒刑，剥夺政治权利终身。"
        )
    year = case.delivery_year + 2
    for months in case.prior_reductions:
        year += dice.integer(1, 2)
        if year >= case.proposal_year:
            break
        sentences.append(f"{year}年xx月xx日经本院裁定减去有期徒刑{chinese_duration(months)}。")
    if not case.prior_reductions and case.kind == "fixed" and dice.chance(0.4):
        sentences.append("服刑期间刑期无变动。")
    return "".join(sentences)


def _recommendation(case: _Case, label: int, dice: _Dice) -> str:
    """The prison's proposed amount: often the court's own, sometimes more, rarely less."""
    if case.kind != "fixed" and dice.chance(0.5):
        sentence = "无期徒刑" if case.kind == "life" else "刑罚"
        return f"建议将其{sentence}减为有期徒刑{chinese_numeral(dice.integer(20, 25))}年"
    proposed = label
    if label == 0 or dice.chance(0.2):
        proposed = max(1, label + dice.weighted((1, 2, 3, 4, 6, -1, -2), (20, 20, 15, 10, 10, 15, 10)))
    amount = chinese_duration(proposed)
    return dice.weighted(
        (f"建议对该犯减刑{amount}", f"建议减去有期徒刑{amount}", f"提请对其减刑{amount}"), (45, 15, 40)
    )


def _proposal(case: _Case, label: int, dice: _Dice) -> str:
    prison = f"{case.prison_province.name}{case.prison}"
    filed = f"{case.proposal_year}年xx月xx日"
    trial = dice.pick(
        (
            "本院依法组成合议庭进行了审理，现已审理终结。",
            "本院立案后依法组成合议庭审理了本案，现已审理终结。",
            "本院受理后，依法组成合议庭进行审理，现已审理终结。",
        )
    )
    if dice.chance(0.42):
        recommendation = _recommendation(case, label, dice)
        return dice.pick(
            (
                f"执行机关于{filed}提出减刑建议书报送本院审理。{trial} "
                f"执行机关认为，罪犯{case.name}在服刑期间，能遵守监规纪律，"
                f"确有悔改表现，{recommendation}，并提供了罪犯减刑审核表、计分考核手册、奖励审批表等证据证实。",
                f"{prison}以罪犯{case.name}确有悔改表现为由，{recommendation}，于{filed}报送本院审理。{trial}",
            )
        )
    return dice.pick(
        (
            f"该狱以罪犯{case.name}入狱以来确有悔改表现，经过监狱集体评议、公示，检察机关监督等程序提出减刑建议，报送本院。{trial}",
            f"执行机关{prison}于{filed}提出减刑建议，报送本院审理。{trial}",
            f"{prison}于{filed}向本院提请对罪犯{case.name}予以减刑。{trial}",
        )
    )


def _narrative(case: _Case, dice: _Dice) -> str:
    """The 原判认定 story; a few long ones give the length distribution its tail."""
    incidents = 1 + int(dice.uniform() ** 4 * 22)
    year = case.start_year - incidents // 4
    severity = case.term_months // 12 or 15  # amounts grow with the sentence they earned
    stories = []
    for i in range(incidents):
        crime = dice.pick(case.crimes)
        act = dice.pick(crime.acts).format(
            who=case.name if i == 0 or dice.chance(0.5) else f"{case.name}伙同他人",
            place=dice.pick(_PLACES),
            goods=dice.pick(_GOODS),
            post=dice.pick(_POSTS),
            amount=dice.integer(10, 300) * 10 * severity,
            grams=round(dice.uniform() * 500 + 1, 1),
        )
        stories.append(f"{year + i // 4}年xx月xx日，{act}。")
    role = f"{case.name}系{'主犯' if dice.chance(0.6) else '从犯'}。" if dice.chance(0.2) else ""
    return "经审理查明，原判认定，" + "".join(stories) + role


def _conduct(case: _Case, dice: _Dice) -> str:
    clauses = [dice.pick(options) for options in _BEHAVIOUR_CLAUSES if dice.chance(0.9)]
    subject = dice.pick(
        (f"罪犯{case.name}服刑期间", f"罪犯{case.name}在服刑期间", "该犯在服刑改造期间", f"罪犯{case.name}自入监以来")
    )
    text = subject + "，" + "；".join(clauses) + "。"

    system = case.prison_province.award_system
    if system == "mixed":
        system = dice.pick(("praise", "points", "both"))
    awards = []
    if system in ("praise", "both"):
        if case.praise == 0 and not case.merits:
            awards.append("未获得行政奖励")
        else:
            praise = f"获得表扬{case.praise}次" if case.praise else ""
            merit = f"获得记功{case.merits}次" if case.merits else ""
            order = (merit, praise) if dice.chance(0.5) else (praise, merit)
            awards.append("，".join(p for p in order if p))
        if case.praise >= 4 and dice.chance(0.25):
            awards.append(f"物质奖励{dice.integer(1, 3)}次")
    if system in ("points", "both"):
        month = dice.integer(1, 12)
        awards.append(
            dice.pick(
                (
                    f"截至{case.proposal_year}年{month}月止，累计奖励分{case.points}分",
                    f"累计获得考核积分{case.points}分",
                    f"累计奖励分{case.points}分",
                )
            )
        )
    if case.activist:
        awards.append(f"{max(case.delivery_year, case.proposal_year - 1)}年度被评为监狱改造积极分子")
    text += "，".join(awards) + "。"
    if case.grades and dice.chance(0.4):
        first = case.delivery_year
        last = first + len(case.grades) // 2
        half = "上" if len(case.grades) % 2 == 0 else "下"
        text += f"{first}年下半年至{last}年{half}半年，半年改造评审鉴定结果依次为{'、'.join(case.grades)}。"
    if dice.chance(0.3):
        text += (
            f"{case.prison_province.name}{case.prison}经过分监区集体评议、监区长办公会审核后公示、刑罚执行科审查、"
            "监狱提请减刑假释评审委员会评审后公示、监狱长办公会决定，并经过驻狱检察室监督等程序对该犯提出减刑建议。"
        )
    if case.violation:
        text += dice.pick(
            ("服刑期间因违反监规受到警告处分一次。", f"{case.proposal_year - 1}年xx月xx日因违反监规纪律被扣分处理。")
        )
    if case.recidivist and dice.chance(0.6):
        text += dice.pick(
            ("该犯系累犯。", f"罪犯{case.name}曾因犯盗窃罪被判处有期徒刑，刑满释放后五年内再犯罪，系累犯。")
        )
    return text


def _property(case: _Case, dice: _Dice) -> str:
    fine = f"罚金{case.fine}元" if case.fine else "财产性判项"
    if case.property_status == "paid":
        return dice.pick((f"另查明，该犯已履行{fine}。", "罪犯原判财产性判项已履行完毕。", f"该犯已缴纳原判{fine}。"))
    if case.property_status == "partial":
        paid = max(500, case.fine // dice.integer(2, 6) // 100 * 100) if case.fine else dice.integer(5, 50) * 100
        return dice.pick((f"另查明，该犯已履行罚金{paid}元，其余财产性判项未履行。", f"该犯缴纳部分罚金{paid}元。"))
    if case.property_status == "unpaid":
        return dice.pick(
            (
                f"另查明，该犯至今未缴纳原判{fine}。",
                "该犯财产性判项未履行。",
                "另查明，罪犯财产性判项未履行，本人无履行能力。",
            )
        )
    return ""


def _evidence(dice: _Dice) -> str:
    items = "、".join(dice.sample(_EVIDENCE, dice.integer(3, 6)))
    return dice.pick(
        (
            f"上述事实，有执行机关提供的{items}等证据证实，足以认定。",
            f"上述事实有{items}等证据在案佐证。",
            f"上述事实有{items}等证据证实。",
        )
    )


def _conclusion(case: _Case, dice: _Dice) -> str:
    during = dice.pick(("在服刑期间", "入狱服刑期间", "在刑罚执行期间", "服刑改造期间"))
    caveats = []
    if case.recidivist and dice.chance(0.5):
        caveats.append("鉴于其系累犯，应从严掌握减刑幅度")
    if case.property_status == "unpaid" and dice.chance(0.5):
        caveats.append("结合其未履行财产性判项的情况")
    caveat = "，".join(caveats) + "，" if caveats else ""
    return dice.weighted(
        (
            f"本院认为，罪犯{case.name}{during}确有悔改表现，符合减刑条件，{caveat}可予减刑。",
            f"本院认为，罪犯{case.name}{during}确有悔改表现，符合减刑的条件，{caveat}可予减刑。",
            f"本院认为，罪犯{case.name}{during}，能认罪服法，具备了法定的确有悔改表现的事实，符合减刑的法定条件。"
            f"执行机关所提请减刑的建议，符合法律规定，{caveat}本院根据其改造表现酌情予以减刑。",
            f"本院认为，罪犯{case.name}{during}，认罪悔罪，遵守监规，接受教育改造，确有悔改表现，{caveat}依法可予减刑。",
        ),
        (35, 30, 20, 15),
    )


def _render(case: _Case, label: int, dice: _Dice) -> str:
    """One ruling's text: paragraphs joined by single spaces, ending before the ruling's own amount."""
    procurator = (
        f"{dice.pick(case.prison_province.cities)}人民检察院对罪犯{case.name}本次减刑无异议。"
        if dice.chance(0.3)
        else ""
    )
    findings = _narrative(case, dice) + " " if dice.chance(0.4) else ""
    conduct = _conduct(case, dice)
    findings += conduct if findings else "经审理查明，" + conduct
    property_note = _property(case, dice)
    paragraphs = [_header(case, dice) + _judgement(case, dice) + _proposal(case, label, dice), procurator, findings]
    if dice.chance(0.5):  # courts put the property finding before or after the evidence list
        paragraphs += [property_note, _evidence(dice)]
    else:
        paragraphs += [_evidence(dice), property_note]
    paragraphs.append(_conclusion(case, dice))
    return " ".join(p for p in paragraphs if p)


# ---------------------------------------------------------------- public API


def generate_rulings(n_train: int, n_test: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Synthetic train (``id,fact,label``) and test (``id,fact``) frames; test ids follow train's."""
    dice = _Dice(np.random.default_rng(seed))
    total = n_train + n_test
    cases = [_draw_case(dice) for _ in range(total)]
    # Labels are ranked over train and test together so both splits share one distribution.
    labels = _labels_from_scores(np.array([_score(case, dice) for case in cases]))
    facts = [_render(case, int(label), dice) for case, label in zip(cases, labels)]
    ids = [f"id_{i}" for i in range(total)]
    train = pd.DataFrame({"id": ids[:n_train], "fact": facts[:n_train], "label": labels[:n_train]})
    test = pd.DataFrame({"id": ids[n_train:], "fact": facts[n_train:]})
    return train, test


def _write_csv_atomically(frame: pd.DataFrame, path: Path) -> None:
    # A crash mid-write must not leave a truncated CSV where the pipeline expects a complete one.
    with written_atomically(path) as staging:
        frame.to_csv(staging, index=False, lineterminator="\n", encoding="utf-8")


def write_sample(output_dir: str | Path, n_train: int = 1000, n_test: int = 300, seed: int = 611) -> None:
    """Write ``train.csv`` and ``testA.csv`` (UTF-8, no BOM, pandas quoting) into ``output_dir``."""
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    train, test = generate_rulings(n_train, n_test, seed)
    _write_csv_atomically(train, output / "train.csv")
    _write_csv_atomically(test, output / "testA.csv")


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry: write a synthetic sample in the competition's file layout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="data/01_raw/sample", help="folder for train.csv and testA.csv")
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=300)
    parser.add_argument("--seed", type=int, default=611)
    args = parser.parse_args(argv)
    write_sample(args.output, n_train=args.n_train, n_test=args.n_test, seed=args.seed)


if __name__ == "__main__":
    main()
