"""`benchmarks/held_back.py`: the whole pipeline's submission scored on rows held back from a labelled CSV."""

import re
import subprocess
import sys

import pandas as pd

from tests.conftest import PROJECT_ROOT, kedro_environment

SAMPLE = PROJECT_ROOT / "data" / "01_raw" / "sample" / "train.csv"
BENCHMARK = PROJECT_ROOT / "benchmarks" / "held_back.py"


def _benchmark(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCHMARK), *arguments],
        cwd=PROJECT_ROOT,
        env=kedro_environment(),
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_the_submission_on_held_back_rows_beats_the_majority_class(tmp_path):
    rows = tmp_path / "rows.csv"
    pd.read_csv(SAMPLE, dtype=str).head(240).to_csv(rows, index=False)
    # folds.n_splits shapes the pipeline, which `kedro run --params` may not change.
    completed = _benchmark(
        str(rows), "--draw", "1", "--params", "folds.n_splits=2", "training.arguments.num_train_epochs=1"
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = completed.stdout.splitlines()[0]
    assert line.startswith("draw 1: 60 held-back rows, 180 trained on: FinalScore "), line
    scores = dict(re.findall(r"(FinalScore|majority class) (\d\.\d{4})", line))
    # The generated sample is learnable from its parsed sentence and awards: a submission misaligned with
    # the held-back rows, or a pipeline that learnt nothing, scores about as the majority class does.
    assert float(scores["FinalScore"]) > float(scores["majority class"]) + 0.1, line
    assert "ensemble chosen: {" in completed.stdout


def test_a_parameter_without_a_value_is_refused_before_any_run():
    completed = _benchmark(str(SAMPLE), "--params", "folds.n_splits")
    assert completed.returncode != 0 and not completed.stdout
    assert "--params: 'folds.n_splits' is not KEY=VALUE" in completed.stderr
