"""The whole train pipeline's submission, scored on rows held back from a labelled CSV (read as the pipeline reads one).

For each draw, holds back ``--held-back`` of the CSV's rows (``DataFrame.sample`` with the draw as its
seed), writes the rest as ``train.csv`` and the held-back rows without their labels as ``testA.csv``,
runs ``kedro run --pipelines=train`` on them in a throw-away copy of the project (its code and
``conf/base``; ``conf/local`` holds the changes given with ``--params`` and nothing else), and scores the
submission against the held-back labels: what a user's submission would score, which the out-of-fold
figures of ``real_rows.py`` only estimate. Prints FinalScore, Score and ExtAcc of each draw beside the
majority class's (the training rows' most frequent label), the ensemble's own nested estimate, the blend
it chose and the wall time.

    python -m benchmarks.held_back ../shared/reference/dc611_dev_segmented.csv --draw 7 11
    python -m benchmarks.held_back data/01_raw/sample/train.csv --params folds.n_splits=3

``--params KEY=VALUE ...`` (dotted keys) become the copy's ``conf/local/parameters.yml``, so that they may
change what shapes the pipeline too (``folds.n_splits``), which ``kedro run --params`` may not. Each draw is a
record (`benchmarks.records`) of the experiment `benchmarks.held_back`, named by ``--run-name`` (default: the
changed parameters).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from benchmarks.parameters import ROOT, changed_parameters, changed_run_parameters
from benchmarks.records import Recorder, command_line
from sentence_reduction.config_loading import load_parameters
from sentence_reduction.datasets import RulingsDataset
from sentence_reduction.metric import competition_scores

MODULE = EXPERIMENT = "benchmarks.held_back"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    arguments = _arguments(argv)
    changes = changed_parameters(arguments.params)
    # The columns as the copy will read them: conf/base and the changes (no conf/local).
    columns = load_parameters(ROOT / "conf", "base", changes)["columns"]
    recorder = Recorder(EXPERIMENT, command_line(MODULE, argv), arguments.out)
    rows = RulingsDataset(str(arguments.csv)).load()
    final_scores = []
    for draw in arguments.draw:
        held = rows.sample(frac=arguments.held_back, random_state=draw)
        with tempfile.TemporaryDirectory() as work:
            result = _run(Path(work), rows.drop(held.index), held, columns["label"], changes)
        final_scores.append(result["final_score"])
        print(
            f"draw {draw}: {len(held)} held-back rows, {len(rows) - len(held)} trained on: "
            f"FinalScore {result['final_score']:.4f}, Score {result['score']:.4f}, ExtAcc {result['ext_acc']:.4f}; "
            f"majority class {result['majority']:.4f}; nested estimate out of fold {result['nested']:.4f}; "
            f"{result['wall']:.0f} s"
        )
        print(f"  ensemble chosen: {result['ensemble']}")
        params = {
            "file": arguments.csv.name,
            "draw": draw,
            "held_back": arguments.held_back,
            "held_back_rows": len(held),
            "trained_rows": len(rows) - len(held),
            **changed_run_parameters(arguments.params),
        }
        metrics = {
            **{score: result[score] for score in ("final_score", "score", "ext_acc")},
            "majority_class.final_score": result["majority"],
            "nested_estimate.final_score": result["nested"],
            "wall_s": result["wall"],
        }
        run_name = arguments.run_name or " ".join(arguments.params) or "conf/base"
        recorder.log(run_name, params, metrics, {"ensemble.chosen": result["ensemble"]})
    if len(final_scores) > 1:
        print(f"mean FinalScore over the {len(final_scores)} draws: {sum(final_scores) / len(final_scores):.4f}")


def _run(work: Path, train: pd.DataFrame, held: pd.DataFrame, label: str, changes: dict[str, Any]) -> dict:
    """One draw: the pipeline trained on ``train`` and its submission scored against ``held``."""
    project = work / "project"
    for name in ("conf", "src"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__", "local"))
    shutil.copy(ROOT / "pyproject.toml", project)
    (project / "conf" / "local").mkdir()
    (project / "conf" / "local" / "parameters.yml").write_text(yaml.safe_dump(changes), encoding="utf-8")
    for layer in (ROOT / "data").iterdir():
        if layer.is_dir():
            (project / "data" / layer.name).mkdir(parents=True)
    data = work / "rows"
    data.mkdir()
    train.to_csv(data / "train.csv", index=False)
    held.drop(columns=label).to_csv(data / "testA.csv", index=False)

    kedro = str(Path(sys.executable).with_name("kedro"))
    command = [kedro, "run", "--pipelines=train", f"--params=raw_data_dir={data}"]
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=project, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if completed.returncode:
        raise SystemExit(f"kedro run failed (exit {completed.returncode}):\n{completed.stderr[-3000:]}")

    # The submission follows the test file's order, one month per row.
    submission = pd.read_csv(project / "data" / "07_model_output" / "submission.csv")
    if len(submission) != len(held):
        raise SystemExit(f"the submission has {len(submission)} rows for {len(held)} held-back rows")
    truth = held[label].astype(float).to_numpy()
    scores = competition_scores(submission["label"].to_numpy(), truth)
    majority = competition_scores(np.full(len(truth), train[label].astype(float).mode()[0]), truth)
    ensemble = json.loads((project / "data" / "06_models" / "ensemble.json").read_text(encoding="utf-8"))
    nested = json.loads((project / "data" / "08_reporting" / "ensemble_metrics.json").read_text(encoding="utf-8"))
    return {
        **scores,
        "majority": majority["final_score"],
        "nested": nested["final_score"],
        "ensemble": ensemble,
        "wall": wall,
    }


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", type=Path, help="a labelled CSV (the `columns:` map names its columns)")
    parser.add_argument("--draw", type=int, nargs="+", default=[7], help="the held-back rows' draws (seeds)")
    parser.add_argument("--held-back", type=float, default=0.25, help="the share of rows held back")
    parser.add_argument(
        "--params", nargs="+", default=[], metavar="KEY=VALUE", help="changed parameters (conf/local of the copy)"
    )
    parser.add_argument("--run-name", help="the records' run name (default: the changed parameters)")
    parser.add_argument("--out", help="records appended here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main()
