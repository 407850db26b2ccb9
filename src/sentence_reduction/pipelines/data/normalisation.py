"""Text normalisation shared by training and prediction, so the two can never drift apart."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import pandas as pd

_WHITESPACE = re.compile(r"\s+")
# Rulings open with the criminal's name: "罪犯陈中盛，男，..." or "罪犯张仁奇，现在...".
_OPENING_NAME = re.compile(r"罪犯([\u4e00-\u9fff·]{1,12}?)[,，(（]")


def normalise_rulings(cases: pd.DataFrame, options: dict[str, Any]) -> pd.DataFrame:
    """Return ``cases`` with ``fact`` normalised: full-width forms folded (NFKC), whitespace collapsed,
    and the criminal's name masked everywhere it recurs (a pseudonym carries no signal but costs tokens
    and invites memorisation)."""
    facts = cases["fact"]
    if options["fold_full_width"]:
        facts = facts.map(lambda text: unicodedata.normalize("NFKC", text))
    if options["collapse_whitespace"]:
        facts = facts.map(lambda text: _WHITESPACE.sub(" ", text).strip())
    if options["mask_criminal_name"]:
        facts = facts.map(lambda text: mask_criminal_name(text, options["name_mask"]))
    return cases.assign(fact=facts)


def mask_criminal_name(text: str, mask: str) -> str:
    """Replace every occurrence of the name that follows the opening 罪犯 with ``mask``."""
    match = _OPENING_NAME.search(text[:200])
    if match is None:
        return text
    return text.replace(match.group(1), mask)
