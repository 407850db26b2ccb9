"""The benchmarks on the CPU: `real_rows` (out of fold, several splits) and `held_back` (the whole pipeline's
submission on held-back rows) with changed parameters; the GPU benchmarks' smoke runs with tiny models; each
script's records, and their import into an MLflow store."""

import json
import re
import subprocess
import sys

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from transformers import AutoModelForMaskedLM

from benchmarks import real_rows, records
from benchmarks.parameters import changed_parameters
from sentence_reduction.config_loading import load_parameters
from sentence_reduction.finetune.arguments import TrainingSettings
from sentence_reduction.pipelines.data.folds import assign_folds
from sentence_reduction.pipelines.data.labels import build_class_table, encode_labels
from sentence_reduction.pipelines.data.normalisation import normalise_rulings
from tests.conftest import PROJECT_ROOT, kedro_environment, write_cail2018_judgments

SAMPLE = PROJECT_ROOT / "data" / "01_raw" / "sample" / "train.csv"


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A throw-away MLflow store, for this process and the benchmarks it starts."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return MlflowClient(tracking_uri=uri)


def _benchmark(script: str, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"benchmarks.{script}", *arguments],
        cwd=PROJECT_ROOT,
        env=kedro_environment(),
        capture_output=True,
        text=True,
        timeout=900,
    )


def _runs(store: MlflowClient, experiment: str) -> dict[str, object]:
    """The experiment's runs by name."""
    found = store.get_experiment_by_name(experiment)
    return {run.info.run_name: run for run in store.search_runs([found.experiment_id])} if found else {}


@pytest.fixture
def rows(tmp_path):
    """240 rows of the generated sample, as a labelled CSV."""
    path = tmp_path / "rows.csv"
    pd.read_csv(SAMPLE, dtype=str).head(240).to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_each_split_and_their_mean_under_changed_parameters(rows, tmp_path, store):
    out = tmp_path / "records.jsonl"
    completed = _benchmark(
        "real_rows",
        str(rows),
        "--fold-seed",
        "0",
        "1",
        "--params",
        "folds.n_splits=3",
        "ordinal.C=0.5",
        "--out",
        str(out),
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = completed.stdout.splitlines()
    headers = [line for line in lines if line.startswith(f"{rows}:")]
    # The changed fold count reached the split; each seed is measured on its own.
    assert len(headers) == 2
    for header, seed in zip(headers, (0, 1), strict=True):
        assert header.startswith(f"{rows}: 240 rows,") and header.endswith(f", 3 folds (seed {seed})")
    mean_block = lines[lines.index("mean FinalScore over the 2 splits:") + 1 :]
    means = {line.split()[0]: float(line.split()[-1]) for line in mean_block if not line.startswith("wall time")}
    candidates = ("baseline", "regression", "ordinal", "trees")
    assert set(candidates) <= set(means)
    per_split = {
        name: [float(line.split()[1]) for line in lines if line.startswith(f"{name} ")][:2] for name in candidates
    }
    for name in ("baseline", "ordinal"):
        assert abs(means[name] - sum(per_split[name]) / 2) < 1e-4  # as printed, to four places
    # One record a split, with the printed scores, the changed parameters, and an MLflow run of each.
    written = records.read_records(out)
    assert [record["params"]["fold_seed"] for record in written] == [0, 1]
    for record, seed in zip(written, (0, 1), strict=True):
        assert record["experiment"] == "benchmarks.real_rows" and record["run_name"] == "folds.n_splits=3 ordinal.C=0.5"
        assert record["params"]["changed.ordinal.C"] == 0.5 and record["params"]["changed.folds.n_splits"] == 3
        assert round(record["metrics"]["ordinal.final_score"], 4) == per_split["ordinal"][seed]
        assert {"ensemble.final_score", "majority_class.final_score"} <= set(record["metrics"])
    runs = store.search_runs([store.get_experiment_by_name("benchmarks.real_rows").experiment_id])
    assert sorted(run.data.params["fold_seed"] for run in runs) == ["0", "1"]


@pytest.mark.slow
def test_the_submission_on_held_back_rows_beats_the_majority_class(rows, store):
    # folds.n_splits shapes the pipeline, which `kedro run --params` may not change.
    completed = _benchmark(
        "held_back", str(rows), "--draw", "1", "--params", "folds.n_splits=2", "training.arguments.num_train_epochs=1"
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = completed.stdout.splitlines()[0]
    assert line.startswith("draw 1: 60 held-back rows, 180 trained on: FinalScore "), line
    scores = dict(re.findall(r"(FinalScore|majority class) (\d\.\d{4})", line))
    # The generated sample is learnable from its parsed sentence and awards: a submission misaligned with
    # the held-back rows, or a pipeline that learnt nothing, scores about as the majority class does.
    assert float(scores["FinalScore"]) > float(scores["majority class"]) + 0.1, line
    assert "ensemble chosen: {" in completed.stdout
    (run,) = _runs(store, "benchmarks.held_back").values()
    assert f"{run.data.metrics['final_score']:.4f}" == scores["FinalScore"]
    assert run.data.params["changed.folds.n_splits"] == "2" and run.data.tags["card"].startswith("cpu: ")


@pytest.mark.slow
@pytest.mark.parametrize("script", ["real_rows", "held_back"])
def test_a_parameter_without_a_value_is_refused_before_any_run(script):
    completed = _benchmark(script, str(SAMPLE), "--params", "ordinal.C")
    assert completed.returncode != 0 and not completed.stdout
    assert "--params: 'ordinal.C' is not KEY=VALUE" in completed.stderr


@pytest.mark.slow
def test_cail2018_judgments_as_they_ship_under_their_environment(tmp_path, store):
    judgments = tmp_path / "data_train.json"
    write_cail2018_judgments(judgments, 150)
    completed = _benchmark("real_rows", str(judgments), "--env", "cail2018", "--params", "folds.n_splits=3")
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = completed.stdout.splitlines()
    # 150 judgments less the 8 life and 8 death sentences (every 20th from the second and the third).
    assert any(line.startswith(f"{judgments}: 134 rows,") for line in lines), completed.stdout
    scores = dict(re.findall(r"^(ordinal|majority class) +(\d\.\d{4})", completed.stdout, re.MULTILINE))
    # The fact states the amount's wording that sets the months: a candidate learns it.
    assert float(scores["ordinal"]) > float(scores["majority class"]) + 0.2, completed.stdout


class Trained(Exception):
    """Stops the benchmark's transformer where a fold would start training."""


def test_a_transformer_candidate_trains_with_its_own_settings(monkeypatch):
    own = "transformer_candidates.megatron_bert.training.arguments"
    changes = changed_parameters([f"{own}.learning_rate=0.0002", f"{own}.num_train_epochs=12"])
    parameters = load_parameters(PROJECT_ROOT / "conf", "local", changes)
    cases = pd.read_csv(SAMPLE, dtype=str).head(60).assign(label=lambda frame: frame["label"].astype(int))
    class_table = build_class_table(cases, parameters["label_encoding"])
    model_input = encode_labels(normalise_rulings(cases, parameters["text_normalisation"]), class_table)
    folds = assign_folds(model_input, {**parameters["folds"], "n_splits": 2})
    received = []

    def first_fold(*arguments):
        received.append(TrainingSettings.from_params(arguments[7]))  # train_fold's `training`
        raise Trained

    monkeypatch.setattr(real_rows, "train_fold", first_fold)
    with pytest.raises(Trained):
        real_rows._transformer(model_input, folds, class_table, parameters, "megatron_bert", "head", None)
    arguments = received[0].arguments
    assert arguments["learning_rate"] == 0.0002 and arguments["num_train_epochs"] == 12  # the candidate's own
    shared = parameters["training"]["arguments"]
    assert arguments["per_device_train_batch_size"] == shared["per_device_train_batch_size"]  # the shared ones
    assert arguments["report_to"] == "none" and arguments["disable_tqdm"] is True  # the benchmark's


def _record(run_name: str, samples_per_s: float) -> dict:
    return records.record(
        "benchmarks.train_throughput",
        run_name,
        {"config": run_name, "batch_per_device": 32, "bf16": True, "deepspeed": None},
        {"samples_per_s": samples_per_s},
        {
            "commit": "5f9d559",
            "card": "NVIDIA H200",
            "date": "2026-12-04",
            "command": "python -m ...",
            "outcome": "kept",
        },
    )


def test_a_record_file_is_logged_once_however_often_imported(tmp_path, store, capsys):
    path = tmp_path / "records.jsonl"
    lines = [_record("winning_recipe", 69.01), _record("default", 130.47), _record("default", 130.92)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    records.main([str(path)])
    assert "3 runs logged, 0 already there" in capsys.readouterr().out
    records.main([str(path)])
    assert "0 runs logged, 3 already there" in capsys.readouterr().out
    experiment = store.get_experiment_by_name("benchmarks.train_throughput")
    runs = store.search_runs([experiment.experiment_id])
    assert sorted((run.info.run_name, run.data.metrics["samples_per_s"]) for run in runs) == [
        ("default", 130.47),
        ("default", 130.92),
        ("winning_recipe", 69.01),
    ]
    run = next(run for run in runs if run.info.run_name == "winning_recipe")
    assert run.data.params == {
        "config": "winning_recipe",
        "batch_per_device": "32",
        "bf16": "True",
        "deepspeed": "none",
    }
    assert {key: run.data.tags[key] for key in ("commit", "card", "date", "outcome")} == {
        "commit": "5f9d559",
        "card": "NVIDIA H200",
        "date": "2026-12-04",
        "outcome": "kept",
    }


def test_a_record_that_is_not_one_is_refused_with_its_line_and_field(tmp_path, store):
    path = tmp_path / "records.jsonl"
    broken = _record("default", 130.47)
    broken["tags"].pop("card")
    path.write_text(json.dumps(_record("winning_recipe", 69.01)) + "\n" + json.dumps(broken) + "\n", encoding="utf-8")
    with pytest.raises(SystemExit, match=rf"^{re.escape(str(path))}:2: tags.card: missing$"):
        records.main([str(path)])
    assert store.get_experiment_by_name("benchmarks.train_throughput") is None  # nothing logged


@pytest.mark.slow
def test_the_training_paths_train_and_predict_on_the_cpu(tmp_path, store):
    out = tmp_path / "records.jsonl"
    completed = _benchmark(
        "train_throughput",
        *("--tiny", "--configs", "matmul,default,bert_large_hf_default", "--warmup", "1", "--steps", "2"),
        *("--batch", "4", "--max-length", "32", "--profile-steps", "1", "--infer", "8", "--out", str(out)),
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    written = {record["run_name"]: record for record in records.read_records(out)}
    # no GPU, no matmul; each path trained, was profiled, and predicted
    assert set(written) == {
        f"{path}{part}" for path in ("default", "bert_large_hf_default") for part in ("", "+profile", "+predict")
    }
    assert written["default"]["params"]["architecture"] == "megatron-bert"
    assert written["bert_large_hf_default"]["params"]["architecture"] == "bert"
    assert written["bert_large_hf_default+predict"]["params"]["with_trainer"] is True
    assert all(written[path]["metrics"]["samples_per_s"] > 0 for path in ("default", "bert_large_hf_default+predict"))
    assert set(_runs(store, "benchmarks.train_throughput")) == set(written)
    assert "| default | cpu: " in completed.stdout  # the table


@pytest.mark.slow
def test_a_fold_job_is_timed_phase_by_phase_on_the_cpu(tmp_path, store):
    out = tmp_path / "records.jsonl"
    rows = ("--train-rows", "48", "--eval-rows", "16", "--test-rows", "8")
    completed = _benchmark("fold_job", "--tiny", "--folds", "1", *rows, "--eval-steps", "2", "--out", str(out))
    assert completed.returncode == 0, completed.stderr[-3000:]
    fold, projection = records.read_records(out)
    assert (fold["run_name"], projection["run_name"]) == ("default.fold_0", "default.competition_job")
    # 48 rows in batches of 8, one epoch: 6 steps, evaluated every 2, one checkpoint at the end (the
    # engine's callbacks saw them), and the final predictions of the 16 held-out and 8 test rows.
    metrics = fold["metrics"]
    assert (metrics["steps"], metrics["evaluations"], metrics["checkpoints"]) == (6, 3, 1)
    assert 0 < metrics["evaluation_s_each"] and 0 < metrics["checkpoint_s_each"]
    assert metrics["steps_only_s"] < metrics["train_wall_s"] < metrics["fold_wall_s"]
    assert metrics["prediction_samples_per_s"] == pytest.approx(24 / metrics["final_predictions_s"])
    assert projection["metrics"]["job_hours"] > 0
    assert set(_runs(store, "benchmarks.fold_job")) == {"default.fold_0", "default.competition_job"}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "arguments", "run_names"),
    [
        (
            "prediction_throughput",
            ["--tiny", "--texts", "16", "--modes", "default"],
            {"default.model_0", "default.model_1"},
        ),
        ("learning_check", ["--tiny", "--configs", "bert_mid", "--seeds", "42"], {"bert_mid.seed_42"}),
        ("gpu_smoke", ["--tiny", "--cases", "single"], {"single"}),
    ],
)
def test_each_gpu_benchmark_runs_on_the_cpu(script, arguments, run_names, tmp_path, store):
    if script == "gpu_smoke":
        arguments = [*arguments, "--work", str(tmp_path / "work")]
    completed = _benchmark(script, *arguments, "--out", str(tmp_path / "records.jsonl"))
    assert completed.returncode == 0, completed.stderr[-3000:]
    written = records.read_records(tmp_path / "records.jsonl")
    assert {record["run_name"] for record in written} == run_names
    assert all(record["experiment"] == f"benchmarks.{script}" and record["metrics"] for record in written)
    assert set(_runs(store, f"benchmarks.{script}")) == run_names


@pytest.mark.slow
def test_continued_pretraining_pretrains_from_a_files_texts_and_times_the_masked_lm_step(tmp_path, store):
    out = tmp_path / "records.jsonl"
    completed = _benchmark(
        "continued_pretraining",
        str(PROJECT_ROOT / "data" / "01_raw" / "sample" / "testA.csv"),
        "--out",
        str(tmp_path / "pretrained"),
        "--out-records",
        str(out),
        "--params",
        "transformer_candidates.megatron_bert.model.config.num_hidden_layers=1",
        "pretraining.training.arguments.max_steps=3",
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert AutoModelForMaskedLM.from_pretrained(tmp_path / "pretrained").config.num_hidden_layers == 1
    completed = _benchmark(
        "continued_pretraining",
        "--throughput",
        "--tiny",
        "--warmup",
        "1",
        "--steps",
        "2",
        "--batch",
        "2",
        "--out-records",
        str(out),
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    pretrained, step = records.read_records(out)
    assert pretrained["params"]["texts"] == 300 and pretrained["metrics"]["wall_s"] > 0
    assert step["run_name"] == "mlm_step" and step["metrics"]["samples_per_s"] > 0
    assert set(_runs(store, "benchmarks.continued_pretraining")) == {"megatron_bert", "mlm_step"}
