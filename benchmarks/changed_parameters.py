"""``KEY=VALUE`` items of a benchmark's ``--params``, read as ``kedro run --params`` reads them."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf


def changed_parameters(items: list[str]) -> DictConfig:
    """Dotted keys into nested ones; an item that is not ``KEY=VALUE`` stops the run with one line."""
    for item in items:
        if "=" not in item or not item.partition("=")[0].strip():
            raise SystemExit(f"--params: {item!r} is not KEY=VALUE (e.g. ordinal.C=5)")
    return OmegaConf.from_dotlist(items)
