"""notebooks/exploration.ipynb: it runs on the embedded sample, and the committed copy shows its outputs."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

from tests.conftest import PROJECT_ROOT, written_outputs

NOTEBOOK = PROJECT_ROOT / "notebooks" / "exploration.ipynb"
KERNEL_NAME = "sentence-reduction-test"


def outputs(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def images(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [output for output in outputs(notebook) if "image/png" in output.get("data", {})]


def errors(notebook: nbformat.NotebookNode) -> list[str]:
    """Error outputs, and tracebacks shown as display data (Kedro's rich logging renders them so)."""
    found = [f"{output.ename}: {output.evalue}" for output in outputs(notebook) if output.output_type == "error"]
    found += [
        output.data["text/plain"][:2000]
        for output in outputs(notebook)
        if "Traceback" in output.get("data", {}).get("text/plain", "")
    ]
    return found


def printed(notebook: nbformat.NotebookNode) -> str:
    return "".join(output.text for output in outputs(notebook) if output.output_type == "stream")


def sample_row_counts() -> tuple[int, int]:
    sample = PROJECT_ROOT / "data" / "01_raw" / "sample"
    return len(pd.read_csv(sample / "train.csv")), len(pd.read_csv(sample / "testA.csv"))


@pytest.fixture
def this_interpreter_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernel spec running this interpreter (the venv with the project and ipykernel installed), found
    first whatever other "python3" kernels the machine has registered."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python (tests)",
                "language": "python",
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("KEDRO_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("KEDRO_ENV", raising=False)
    return KERNEL_NAME


@pytest.mark.slow
def test_notebook_runs_on_the_sample_and_shows_both_plots(project_copy: Path, this_interpreter_kernel: str) -> None:
    (project_copy / "notebooks").mkdir()
    shutil.copy(NOTEBOOK, project_copy / "notebooks" / NOTEBOOK.name)
    notebook = nbformat.read(project_copy / "notebooks" / NOTEBOOK.name, as_version=4)

    NotebookClient(
        notebook,
        kernel_name=this_interpreter_kernel,
        timeout=600,
        resources={"metadata": {"path": str(project_copy / "notebooks")}},
    ).execute()  # raises CellExecutionError on the first failing cell

    assert errors(notebook) == []
    assert len(images(notebook)) == 2  # the label histogram and the text lengths
    n_train, n_test = sample_row_counts()
    assert f"{n_train} training rulings, {n_test} test rulings" in printed(notebook)
    # It only reads: nothing under data/, no MLflow run.
    assert written_outputs(project_copy) == []
    if (project_copy / "mlflow.db").exists():
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{project_copy / 'mlflow.db'}")
        experiments = [experiment.experiment_id for experiment in client.search_experiments()]
        assert client.search_runs(experiments) == []


def test_committed_notebook_has_its_outputs_saved() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert errors(notebook) == []
    assert len(images(notebook)) >= 2
    n_train, n_test = sample_row_counts()
    assert f"{n_train} training rulings, {n_test} test rulings" in printed(notebook)
    assert NOTEBOOK.stat().st_size < 150_000  # small figures, no stray logs
