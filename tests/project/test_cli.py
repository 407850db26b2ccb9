"""The users' own command: `kedro run --pipeline=...` (Kedro's older spelling) runs without a warning line,
and `--pipelines` works alike."""

import pytest

from tests.conftest import run_kedro


@pytest.mark.slow
@pytest.mark.parametrize("option", ["--pipeline=data", "--pipelines=data"])
def test_kedro_run_pipeline_option_prints_no_warning(project_copy, option):
    completed = run_kedro(project_copy, "run", option)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-3000:]
    assert (project_copy / "data" / "05_model_input" / "fold_assignments.csv").is_file()
    assert "WARNING" not in output and "deprecated" not in output, output[-3000:]
