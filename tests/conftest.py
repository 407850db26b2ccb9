"""Shared fixtures: a throw-away copy of the project to run `kedro` in, and small CSV writers."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_MODEL = PROJECT_ROOT.parent / "shared" / "reference" / "erlangshen-megatronbert-1.3b"

# Two folds of a tiny model: what every end-to-end run here shares.
TINY_MODEL_PARAMETERS = """
folds:
  n_splits: 2
transformer_candidates:
  megatron_bert:
    model:
      config:
        hidden_size: 32
        num_hidden_layers: 1
        num_attention_heads: 2
        intermediate_size: 64
      max_length: 64
baseline:
  max_features: 5000
"""
# Fast settings for end-to-end runs: the tiny model, one epoch.
FAST_PARAMETERS = (
    TINY_MODEL_PARAMETERS
    + """
training:
  arguments:
    num_train_epochs: 1
    eval_steps: 10
    save_steps: 10
    logging_steps: 5
"""
)

# One epoch, no evaluation or checkpoints: the training settings of a test's quickest fold.
TINY_TRAINING = {
    "arguments": {
        "num_train_epochs": 1,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 8,
        "learning_rate": 1e-3,
        "eval_strategy": "no",
        "save_strategy": "no",
        "seed": 7,
        "report_to": "none",
        "disable_tqdm": True,
    },
}


# Two epochs that evaluate and checkpoint every 2 steps, length-grouped batches: the production recipe
# in miniature, for the engine's tests.
STEPPED_TRAINING = {
    "arguments": {
        "num_train_epochs": 2,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 8,
        "learning_rate": 1e-3,
        "eval_strategy": "steps",
        "eval_steps": 2,
        "save_strategy": "steps",
        "save_steps": 2,
        "logging_steps": 1,
        "seed": 7,
        "report_to": "none",
        "disable_tqdm": True,
        "train_sampling_strategy": "group_by_length",
    },
}


def kedro_environment() -> dict[str, str]:
    environment = dict(os.environ, KEDRO_DISABLE_TELEMETRY="true", PYTHONUNBUFFERED="1")
    environment.pop("KEDRO_ENV", None)
    return environment


def copy_project(destination: Path, local_parameters: str | None = None) -> Path:
    """The project's code, configuration and embedded sample in ``destination``, with
    ``local_parameters`` as conf/local/parameters.yml when given."""
    destination.mkdir(parents=True)
    for name in ["pyproject.toml", "conf", "src"]:
        source = PROJECT_ROOT / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=shutil.ignore_patterns("__pycache__", "local"))
        else:
            shutil.copy(source, destination / name)
    (destination / "conf" / "local").mkdir()
    if local_parameters is not None:
        (destination / "conf" / "local" / "parameters.yml").write_text(local_parameters, encoding="utf-8")
    for layer in sorted((PROJECT_ROOT / "data").iterdir()):
        if layer.is_dir():
            (destination / "data" / layer.name).mkdir(parents=True)
    shutil.copytree(PROJECT_ROOT / "data" / "01_raw" / "sample", destination / "data" / "01_raw" / "sample")
    return destination


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """The project's code, configuration and embedded sample in a temporary folder."""
    return copy_project(tmp_path / "project")


@pytest.fixture
def fast_project(tmp_path: Path) -> Path:
    """A project copy whose conf/local makes the train pipeline take seconds."""
    return copy_project(tmp_path / "project", FAST_PARAMETERS)


def run_kedro(project: Path, *arguments: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """`kedro <arguments>` in ``project``, output captured."""
    kedro = Path(sys.executable).with_name("kedro")
    return subprocess.run(
        [str(kedro), *arguments],
        cwd=project,
        env=kedro_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def written_outputs(project: Path) -> list[Path]:
    """Every file the pipeline wrote under data/ (not the raw inputs)."""
    return [path for path in (project / "data").rglob("*") if path.is_file() and "01_raw" not in path.parts]


def free_port() -> int:
    """A free TCP port below 49152 (kedro viz refuses the ephemeral range the OS hands out for port
    0), for a server or a torchrun rendezvous; random, so tests running one after another don't meet
    a port still held by the last one."""
    for port in random.Random().sample(range(30000, 49000), 200):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 30000-49000")


# Eight short rulings of different crimes, awards and points: the tiny fold jobs of the tests train on them.
RULINGS = [
    f"罪犯某，男，因{crime}罪判处有期徒刑{years}年。该犯获得表扬{praise}次，累计奖励分{points}分。本院认为可予减刑。"
    for crime, years, praise, points in [
        ("盗窃", "三", 2, 85.5),
        ("诈骗", "十", 6, 120),
        ("抢劫", "八", 1, 40),
        ("贩卖毒品", "十五", 4, 99),
        ("故意伤害", "五", 3, 70),
        ("受贿", "七", 5, 110),
        ("交通肇事", "二", 0, 12),
        ("盗窃", "六", 7, 150),
    ]
]


CAIL2018_MONTHS = [2, 6, 10, 24, 60, 180]


def write_cail2018_judgments(path: Path, count: int) -> None:
    """``count`` judgments in CAIL2018's format (JSON lines, the term nested under ``meta``): every 20th
    from the second a life sentence, from the third a death sentence (no term), the rest's months
    cycling through `CAIL2018_MONTHS`, each stated by the fact's wording of the amount stolen."""
    amounts = ["较小", "较大", "较大", "巨大", "巨大", "特别巨大"]
    lines = []
    for i in range(count):
        life, death = i % 20 == 1, i % 20 == 2
        term = {"death_penalty": death, "imprisonment": 0 if life or death else CAIL2018_MONTHS[i % 6]}
        meta = {"accusation": ["盗窃"], "term_of_imprisonment": {**term, "life_imprisonment": life}}
        fact = f"被告人李某盗窃财物价值{1000 * (i + 1)}元，数额{amounts[i % 6]}。"
        lines.append(json.dumps({"fact": fact, "meta": meta}, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
