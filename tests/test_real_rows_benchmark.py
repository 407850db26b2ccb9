"""`benchmarks/real_rows.py`: several splits of the folds and changed parameters in one command."""

import subprocess
import sys

import pandas as pd

from tests.conftest import PROJECT_ROOT, kedro_environment

BENCHMARK = PROJECT_ROOT / "benchmarks" / "real_rows.py"
SAMPLE = PROJECT_ROOT / "data" / "01_raw" / "sample" / "train.csv"


def _benchmark(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCHMARK), *arguments],
        cwd=PROJECT_ROOT,
        env=kedro_environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_each_split_and_their_mean_under_changed_parameters(tmp_path):
    rows = tmp_path / "rows.csv"
    pd.read_csv(SAMPLE, dtype=str).head(240).to_csv(rows, index=False)
    completed = _benchmark(str(rows), "--fold-seed", "0", "1", "--params", "folds.n_splits=3", "ordinal.C=0.5")
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = completed.stdout.splitlines()
    headers = [line for line in lines if line.startswith(f"{rows}:")]
    # The changed fold count reached the split; each seed is measured on its own.
    assert len(headers) == 2
    for header, seed in zip(headers, (0, 1), strict=True):
        assert header.startswith(f"{rows}: 240 rows,") and header.endswith(f", 3 folds (seed {seed})")
    mean_block = lines[lines.index("mean FinalScore over the 2 splits:") + 1 :]
    means = {line.split()[0]: float(line.split()[-1]) for line in mean_block if not line.startswith("wall time")}
    assert {"baseline", "regression", "ordinal", "features"} <= set(means)
    for name in ("baseline", "ordinal"):
        per_split = [float(line.split()[1]) for line in lines if line.startswith(f"{name} ")][:2]
        assert abs(means[name] - sum(per_split) / 2) < 1e-4  # as printed, to four places


def test_a_parameter_not_given_as_key_and_value_is_refused():
    completed = _benchmark(str(SAMPLE), "--params", "ordinal.C")
    assert completed.returncode != 0
    assert "--params: 'ordinal.C' is not KEY=VALUE" in completed.stderr
