"""The Kedro pipelines end to end: `data` in memory and on disk, bad input, `train` with its MLflow
runs, `predict`, the registry, and `kedro viz` serving the DAG."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import pandas as pd
import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Node
from kedro.runner import SequentialRunner
from mlflow.tracking import MlflowClient

from sentence_reduction.pipelines.data import create_pipeline
from sentence_reduction.pipelines.node_tags import FOLD_TRAINING
from sentence_reduction.pipelines.train import create_predict_pipeline, create_train_pipeline
from tests.conftest import (
    CAIL2018_MONTHS,
    PROJECT_ROOT,
    free_port,
    kedro_environment,
    run_kedro,
    write_cail2018_judgments,
    written_outputs,
)

CANDIDATES = ["megatron_bert"]  # conf/base's one transformer candidate

DATA_PARAMETERS = {
    "params:columns": {"id": "id", "text": "fact", "label": "label"},
    "params:validation": {"max_label_months": 600, "max_text_chars": 20000},
    "params:text_normalisation": {
        "fold_full_width": True,
        "collapse_whitespace": True,
        "mask_criminal_name": True,
        "name_mask": "某",
    },
    "params:label_encoding": {"scheme": "direct", "n_classes": 34, "bin_edges": None, "bin_months": None},
    "params:folds": {"strategy": "stratified_kfold", "n_splits": 2, "holdout_fraction": 0.01, "seed": 1},
}


def _memory_catalog() -> DataCatalog:
    facts = [f"罪犯王{name}，男，获得表扬{i}次。王{name}确有悔改表现。" for i, name in enumerate("一二三四五六")]
    return DataCatalog(
        {
            "train_raw": MemoryDataset(
                pd.DataFrame(
                    {"id": [f"id_{i}" for i in range(6)], "fact": facts, "label": ["3", "3", "3", "40", "40", "40"]}
                )
            ),
            "test_raw": MemoryDataset(pd.DataFrame({"id": ["id_9"], "fact": [facts[0]]})),
            **{name: MemoryDataset(value) for name, value in DATA_PARAMETERS.items()},
        }
    )


def test_data_pipeline_in_memory():
    encoding = create_pipeline().to_outputs("model_input_table", "normalised_test_cases")
    catalog = _memory_catalog()
    SequentialRunner().run(encoding, catalog)
    model_input = catalog.load("model_input_table")
    assert model_input["class_id"].tolist() == [3, 3, 3, 33, 33, 33]
    assert "王二" not in model_input["fact"][1] and model_input["fact"][1].count("某") == 2
    assert catalog.load("normalised_test_cases")["id"].tolist() == ["id_9"]

    catalog = _memory_catalog()
    SequentialRunner().run(create_pipeline(), catalog)
    folds = catalog.load("fold_assignments")
    assert sorted(folds["fold"].value_counts().tolist()) == [3, 3]


@pytest.mark.slow
def test_data_pipeline_writes_encoded_data_class_table_and_folds(project_copy):
    completed = run_kedro(project_copy, "run", "--pipeline=data")
    assert completed.returncode == 0, completed.stderr[-3000:]
    data = project_copy / "data"
    model_input = pd.read_parquet(data / "05_model_input" / "model_input_table.parquet")
    train = pd.read_csv(data / "01_raw" / "sample" / "train.csv")
    assert len(model_input) == len(train) and (model_input["class_id"] == train["label"].clip(upper=33)).all()
    assert len(pd.read_csv(data / "03_primary" / "class_table.csv")) == 34
    folds = pd.read_csv(data / "05_model_input" / "fold_assignments.csv")
    assert sorted(folds["fold"].unique()) == [0, 1, 2, 3, 4]
    assert len(pd.read_parquet(data / "05_model_input" / "test_cases.parquet")) == len(
        pd.read_csv(data / "01_raw" / "sample" / "testA.csv")
    )


@pytest.mark.slow
def test_cail2018_environment_trains_on_its_json_lines_as_they_ship(project_copy, tmp_path):
    """`--env cail2018` trains on a folder holding CAIL2018's files as they ship: JSON lines, the months
    nested, life and death sentences left out, terms of years binned (`label_encoding.scheme: auto`)."""
    folder = tmp_path / "exercise_contest"
    folder.mkdir()
    write_cail2018_judgments(folder / "data_train.json", 120)
    write_cail2018_judgments(folder / "data_test.json", 10)
    completed = run_kedro(
        project_copy, "run", "--env", "cail2018", "--pipelines=train", "--params", f"raw_data_dir={folder}"
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    data = project_copy / "data"
    model_input = pd.read_parquet(data / "05_model_input" / "model_input_table.parquet")
    assert len(model_input) == 108  # 120 less 6 life and 6 death sentences
    assert set(model_input["label"]) == set(CAIL2018_MONTHS)
    assert model_input["id"].iloc[:2].tolist() == ["train_0", "train_3"]
    classes = pd.read_csv(data / "03_primary" / "class_table.csv")
    assert classes["months"].max() == 180 and len(classes) < 180  # bins, not a class a month
    submission = pd.read_csv(data / "07_model_output" / "submission.csv")
    assert submission["id"].tolist() == [f"test_{i}" for i in range(10)]  # life and death sentences too
    assert set(submission["label"]) <= set(classes["months"])
    # The logged model's example request holds the columns it reads, not the file's others.
    assert "extra inputs" not in completed.stdout + completed.stderr


@pytest.mark.slow
@pytest.mark.parametrize("raw_data_dir_set_in", ["--params", "conf/local"])
def test_bad_input_stops_the_run_with_one_line_and_no_output(project_copy, tmp_path, raw_data_dir_set_in):
    """The folder named by `raw_data_dir` is the one read, set on the command line or in conf/local."""
    bad = tmp_path / "bad"
    bad.mkdir()
    sample = project_copy / "data" / "01_raw" / "sample"
    train = (sample / "train.csv").read_text(encoding="utf-8").splitlines()
    header, first, second = train[0], train[1], train[2]
    (bad / "train.csv").write_text(
        "\n".join([header, first, second.rsplit(",", 1)[0] + ",-3"]) + "\n", encoding="utf-8"
    )
    (bad / "testA.csv").write_bytes((sample / "testA.csv").read_bytes())
    if raw_data_dir_set_in == "--params":
        completed = run_kedro(project_copy, "run", "--pipelines=train", "--params", f"raw_data_dir={bad}")
    else:
        (project_copy / "conf" / "local" / "parameters.yml").write_text(f"raw_data_dir: {bad}\n", encoding="utf-8")
        completed = run_kedro(project_copy, "run", "--pipelines=train")
    assert completed.returncode == 1
    error_lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert error_lines[-1] == (
        f"Error: {bad / 'train.csv'}, row 2, field 'label': label -3 is outside 0..600 months "
        f"(id '{second.split(',', 1)[0]}')"
    )
    assert "Traceback" not in completed.stdout + completed.stderr
    assert written_outputs(project_copy) == []


@pytest.mark.slow
def test_deepspeed_cpu_detection_notice_is_dropped_and_its_other_warnings_shown():
    """On a machine without a GPU DeepSpeed warns at import that it falls back to the CPU: the project
    trains there on purpose, so the package drops that record, and that record alone."""
    script = (
        "import sentence_reduction, deepspeed\n"
        "from deepspeed.utils import logger\n"
        "logger.warning('ZeRO stage 3 needs a model wrapped in zero.Init')\n"
    )
    environment = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "DS_BUILD_OPS": "0"}
    environment.pop("DS_ACCELERATOR", None)
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environment, timeout=300, check=True
    )
    output = completed.stdout + completed.stderr
    assert "ZeRO stage 3 needs a model wrapped in zero.Init" in output
    assert "Setting accelerator to CPU" not in output


def test_fold_branches_are_wired_without_dotted_names_outside_their_namespace(monkeypatch):
    # Kedro warns once per process of a dotted dataset name outside its namespace: re-arm it.
    monkeypatch.setattr(Node, "__dotted_dataset_name_warned__", False, raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train, predict = create_train_pipeline(3, CANDIDATES), create_predict_pipeline(3, CANDIDATES)
    assert not [warning for warning in caught if "contain '.'" in str(warning.message)]
    assert {node.namespace for node in train.nodes if node.name.endswith("train_fold")} == {
        "megatron_bert.fold_0",
        "megatron_bert.fold_1",
        "megatron_bert.fold_2",
    }
    assert {"megatron_bert.fold_0.model", "megatron_bert.fold_2.model"} <= predict.inputs()


def test_one_deepspeed_config_per_run_feeds_every_fold():
    train = create_train_pipeline(3, CANDIDATES)
    folds = [node for node in train.nodes if FOLD_TRAINING in node.tags]
    config = "megatron_bert.deepspeed_config"
    assert len(folds) == 3 and all(config in node.inputs for node in folds)
    assert not [output for node in folds for output in node.outputs if "deepspeed" in output]
    assert sorted(name for name in train.datasets() if "deepspeed" in name) == [config]
    assert [node.name for node in train.nodes if config in node.outputs] == ["megatron_bert.resolve_deepspeed_config"]
    catalog = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "catalog.yml").read_text(encoding="utf-8"))
    assert "{candidate}.deepspeed_config" in catalog


@pytest.mark.slow
def test_registry_lists_data_train_and_predict(project_copy):
    completed = run_kedro(project_copy, "registry", "list")
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert {"- data", "- train", "- predict"} <= {line.strip() for line in completed.stdout.splitlines()}


@pytest.mark.slow
def test_train_pipeline_end_to_end_with_mlflow_runs_then_predict(fast_project, tmp_path):
    completed = run_kedro(fast_project, "run", "--pipeline=train", "--params", "tracking.log_model_weights=true")
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    data = fast_project / "data"
    test = pd.read_csv(data / "01_raw" / "sample" / "testA.csv")
    submission = pd.read_csv(data / "07_model_output" / "submission.csv")
    assert list(submission.columns) == ["id", "label"]
    assert submission["id"].tolist() == test["id"].tolist()
    assert pd.api.types.is_integer_dtype(submission["label"]) and submission["label"].between(0, 33).all()
    metrics = json.loads((data / "08_reporting" / "megatron_bert_metrics.json").read_text())
    assert metrics["cases"] == 1000 and metrics["decoding"] in {"argmax", "expected_score"}
    assert 0 <= metrics["final_score"] <= 1
    candidates = ["megatron_bert", "baseline", "trees", "regression", "ordinal"]
    for candidate in candidates:  # every candidate's probabilities, on the same cases
        oof = pd.read_parquet(data / "07_model_output" / f"{candidate}_oof_probabilities.parquet")
        assert len(oof) == 1000 and set(oof["id"]) == set(pd.read_csv(data / "01_raw" / "sample" / "train.csv")["id"])
        tested = pd.read_parquet(data / "07_model_output" / f"{candidate}_test_probabilities.parquet")
        assert tested["id"].tolist() == test["id"].tolist()
        assert 0 <= json.loads((data / "08_reporting" / f"{candidate}_metrics.json").read_text())["final_score"] <= 1
    features = pd.read_parquet(data / "04_feature" / "parsed_features.parquet")
    assert len(features) == 1000 and features["original_term_months"].notna().mean() > 0.5
    ensemble = json.loads((data / "06_models" / "ensemble.json").read_text())
    assert set(ensemble["weights"]) == set(candidates) and sum(ensemble["weights"].values()) == pytest.approx(1)
    ensemble_metrics = json.loads((data / "08_reporting" / "ensemble_metrics.json").read_text())
    assert ensemble_metrics["estimate"].startswith("nested") and ensemble_metrics["cases"] == 1000
    for fold in ("fold_0", "fold_1"):
        assert (data / "06_models" / "megatron_bert" / fold / "model.safetensors").is_file()
        metrics_file = data / "08_reporting" / "megatron_bert" / fold / "metrics.json"
        assert json.loads(metrics_file.read_text())["final_score"] >= 0
    assert (data / "08_reporting" / "confusion_matrix.png").stat().st_size > 10_000
    assert (data / "08_reporting" / "candidate_comparison.png").stat().st_size > 10_000
    assert "megatron_bert.fold_0: loss" in completed.stdout + completed.stderr  # one log line per fold

    client = MlflowClient(tracking_uri=f"sqlite:///{fast_project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sentence-reduction")
    runs = client.search_runs([experiment.experiment_id])
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    children = {run.info.run_name: run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) == {"megatron_bert.fold_0", "megatron_bert.fold_1"} and len(runs) == 3
    assert parent.data.metrics["megatron_bert_final_score"] == pytest.approx(metrics["final_score"])
    assert parent.data.metrics["ensemble_final_score"] == pytest.approx(ensemble_metrics["final_score"])
    assert {
        "baseline_final_score",
        "trees_final_score",
        "regression_final_score",
        "ordinal_final_score",
        "ensemble_score",
        "ensemble_ext_acc",
        "ensemble_majority_class_final_score",
    } <= set(parent.data.metrics)
    assert parent.data.params["folds.n_splits"] == "2"
    artifacts = {
        item.path
        for folder in ("reports", "submission", "model_input", "ensemble")
        for item in client.list_artifacts(parent.info.run_id, folder)
    }
    assert {
        "reports/confusion_matrix.png",
        "reports/class_report.csv",
        "reports/megatron_bert_metrics.json",
        "reports/candidate_comparison.png",
        "reports/ensemble_metrics.json",
        "reports/trees_metrics.json",
        "submission/submission.csv",
        "model_input/class_table.csv",
        "ensemble/ensemble.json",
    } <= artifacts
    # the folds trained without DeepSpeed (the CPU): the run's DeepSpeed config is empty, and not logged
    assert not [item.path for item in client.list_artifacts(parent.info.run_id) if "deepspeed" in item.path]
    for name, run in children.items():
        assert run.info.status == "FINISHED"
        assert run.data.params["fold"] == name[-1] and run.data.params["candidate"] == "megatron_bert"
        assert run.data.params["seed"] == "42"
        assert len(run.data.params["data_sha256"]) == 16 and run.data.params["code_version"]
        assert run.data.params["learning_rate"] == "0.001"  # the Trainer's resolved arguments
        assert run.data.metrics["oof_final_score"] >= 0
        eval_history = client.get_metric_history(run.info.run_id, "eval_loss")
        assert len(eval_history) >= 2 and len({point.step for point in eval_history}) >= 2
        assert len(client.get_metric_history(run.info.run_id, "loss")) >= 2
        assert "model/model.safetensors" in {item.path for item in client.list_artifacts(run.info.run_id, "model")}

    # predict applies the saved models and ensemble: on the same test file it reproduces the submission,
    # on other rulings it writes their predictions; neither overwrites anything train wrote.
    train_outputs = {path: path.read_bytes() for path in written_outputs(fast_project)}
    completed = run_kedro(fast_project, "run", "--pipeline=predict")
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "train_fold" not in completed.stdout and "fit_baseline" not in completed.stdout
    predictions_path = data / "07_model_output" / "predictions.csv"
    assert pd.read_csv(predictions_path).equals(submission)

    other = tmp_path / "other_rulings"
    other.mkdir()
    new_rulings = pd.read_csv(data / "01_raw" / "sample" / "train.csv").head(25).drop(columns="label")
    new_rulings.assign(id=[f"new_{i}" for i in range(25)]).to_csv(other / "testA.csv", index=False)
    completed = run_kedro(fast_project, "run", "--pipeline=predict", "--params", f"raw_data_dir={other}")
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    predictions = pd.read_csv(predictions_path)
    assert predictions["id"].tolist() == [f"new_{i}" for i in range(25)] and predictions["label"].between(0, 33).all()
    written = set(written_outputs(fast_project)) - {predictions_path}
    assert written == set(train_outputs) and all(path.read_bytes() == train_outputs[path] for path in written)

    # The run's logged and registered model answers as the predict pipeline does, from the CLI and served.
    versions = client.search_model_versions("name = 'sentence-reduction'")
    assert [(version.version, version.run_id) for version in versions] == [(1, parent.info.run_id)]
    version = versions[0]
    rulings = test.head(2)
    expected = submission.head(2).to_dict("records")
    _check_mlflow_models_predict(fast_project, f"runs:/{parent.info.run_id}/model", rulings, expected)
    _check_served_model(fast_project, f"models:/sentence-reduction/{version.version}", rulings, expected)


def _mlflow_environment(project: Path) -> dict[str, str]:
    # The venv's bin first on PATH: `mlflow models serve` starts `uvicorn` by name.
    return dict(
        kedro_environment(),
        MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )


def _check_mlflow_models_predict(project: Path, model_uri: str, rulings: pd.DataFrame, expected: list[dict]) -> None:
    rulings.to_csv(project / "rulings.csv", index=False)
    completed = subprocess.run(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "models",
            "predict",
            "-m",
            model_uri,
            "-i",
            "rulings.csv",
            "--content-type",
            "csv",
            "--env-manager",
            "local",
        ],
        cwd=project,
        env=_mlflow_environment(project),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert json.loads(completed.stdout.strip().splitlines()[-1]) == {"predictions": expected}


def _post(port: int, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def _check_served_model(project: Path, model_uri: str, rulings: pd.DataFrame, expected: list[dict]) -> None:
    port, log = free_port(), project / "serve.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("mlflow")),
                "models",
                "serve",
                "-m",
                model_uri,
                "--env-manager",
                "local",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=project,
            env=_mlflow_environment(project),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the server runs uvicorn in a child
        )
    try:
        deadline = time.time() + 180
        while True:
            assert server.poll() is None and time.time() < deadline, (
                f"the server did not start: {log.read_text()[-3000:]}"
            )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5):
                    break
            except OSError:
                time.sleep(1)
        status, answer = _post(port, {"dataframe_split": {"columns": ["id", "fact"], "data": rulings.values.tolist()}})
        assert status == 200 and answer == {"predictions": expected}
        assert all(isinstance(row["label"], int) for row in answer["predictions"])
        status, answer = _post(
            port, {"dataframe_records": [{"id": "a", "fact": rulings["fact"][0]}, {"id": "b", "fact": " "}]}
        )
        assert status == 400
        assert answer["message"].splitlines()[-1].endswith("<input>, row 2, field 'fact': empty text (id 'b')")
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


def _start_viz(project: Path, log: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    kedro = Path(sys.executable).with_name("kedro")
    with log.open("a") as output:
        server = subprocess.Popen(
            [str(kedro), "viz", "run", "--host", "127.0.0.1", "--port", str(port), "--no-browser"],
            cwd=project,
            env=kedro_environment(),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: viz spawns children
        )
    return server, port


def _fetch_graph(server: subprocess.Popen, port: int, deadline: float) -> dict | None:
    while time.time() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/main", timeout=5) as response:
                return json.load(response)
        except OSError:
            time.sleep(2)
    return None


@pytest.mark.slow
def test_kedro_viz_serves_the_dag_with_every_fold(project_copy, tmp_path):
    log = tmp_path / "viz.log"
    deadline = time.time() + 300
    server, port = _start_viz(project_copy, log)
    try:
        graph = _fetch_graph(server, port, deadline)
        if graph is None and server.poll() is not None:  # it could not start (say, the port was taken): once more
            server, port = _start_viz(project_copy, log)
            graph = _fetch_graph(server, port, deadline)
        assert graph is not None, f"kedro viz did not answer: {log.read_text()[-2000:]}"
        names = {node["name"] for node in graph["nodes"]}
        node_ids = {node.get("id") for node in graph["nodes"]}
        full_names = {node.get("full_name", node["name"]) for node in graph["nodes"]} | names | node_ids
        for fold in range(5):
            assert any(f"fold_{fold}" in name and "train_fold" in name for name in full_names), fold
        assert any("submission" in name for name in names)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


@pytest.mark.slow
def test_two_process_folds_log_once_into_their_fold_runs(fast_project):
    completed = run_kedro(
        fast_project,
        "run",
        "--pipeline=train",
        "--params",
        f"training.launcher.nproc_per_node=2,training.launcher.master_port={free_port()},serving.log_model=false",
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    work = fast_project / "data" / "06_models" / "work" / "megatron_bert"
    assert (work / "fold_1" / "job.json").is_file()  # the launcher ran
    client = MlflowClient(tracking_uri=f"sqlite:///{fast_project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("sentence-reduction").experiment_id])
    # no duplicate or orphan
    assert sorted(run.info.run_name for run in runs) == ["megatron_bert.fold_0", "megatron_bert.fold_1", "train"]
    for run in runs:
        if run.info.run_name.startswith("megatron_bert.fold_"):
            history = client.get_metric_history(run.info.run_id, "eval_loss")
            steps = [point.step for point in history]
            assert len(steps) == len(set(steps)) >= 2  # one rank logged each evaluation, once
            assert run.data.params["learning_rate"] == "0.001"
            assert client.list_artifacts(run.info.run_id, "model") == []  # weights only when asked
    assert client.search_registered_models() == []  # no model logged when serving.log_model is off
