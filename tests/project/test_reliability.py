"""Reliability: a run killed mid-fold resumes to the uninterrupted result, the same seed gives the same
predictions, models are safetensors and outputs are replaced atomically, and a failing fold is visible
in the log and in MLflow.

The end-to-end runs share one module fixture (`resume_runs`): an uninterrupted reference run and a run
SIGKILLed in the middle of fold_1's second epoch then resumed with the same command, in two project
copies, side by side (one torch thread each, so that both fit the 2-core CPU and compute identically).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from kedro.io import DatasetError
from mlflow.tracking import MlflowClient
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import MegatronBertConfig, MegatronBertForSequenceClassification, TrainerCallback

from sentence_reduction.atomic import DiskFullError
from sentence_reduction.datasets import (
    AtomicCSVDataset,
    AtomicJSONDataset,
    AtomicMatplotlibDataset,
    AtomicParquetDataset,
    SequenceClassifierDataset,
    TokenizerDataset,
)
from sentence_reduction.file_checks import UnusableFileError
from sentence_reduction.finetune import engine, fold_cache
from sentence_reduction.finetune.engine import run_fold
from sentence_reduction.finetune.fold_cache import load_result
from sentence_reduction.finetune.job import FoldJob, SavedModel
from sentence_reduction.finetune.text import build_character_vocabulary, build_tokenizer
from sentence_reduction.input_errors import find_error
from sentence_reduction.pipelines.train.candidates import CLASSICAL_CANDIDATES
from tests.conftest import (
    FAST_PARAMETERS,
    PROJECT_ROOT,
    RULINGS,
    STEPPED_TRAINING,
    TINY_MODEL_PARAMETERS,
    copy_project,
    kedro_environment,
    written_outputs,
)

CANDIDATE = "megatron_bert"  # conf/base's one transformer candidate: its folds are <candidate>.fold_<n>
TIMING_KEYS = {"runtime", "samples_per_second", "steps_per_second"}
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}
SCIKIT_LEARN_MODELS = sorted(f"{name}_models.pkl" for name in CLASSICAL_CANDIDATES)

# Two folds of a tiny model, two epochs of 16 steps each (500 training cases, batches of 32), evaluated
# and checkpointed every 6 steps: fold_1 has a checkpoint in the middle of its second epoch (step 18)
# to be killed after, and the whole run takes about a minute on one CPU thread.
RESUME_PARAMETERS = (
    TINY_MODEL_PARAMETERS
    + """
training:
  arguments:
    num_train_epochs: 2
    per_device_train_batch_size: 32
    eval_steps: 6
    save_steps: 6
    logging_steps: 3
    disable_tqdm: true
"""
)
RUN_TIMEOUT = 900


def _environment() -> dict[str, str]:
    # Wide log lines (rich wraps at 80 columns when not on a terminal) and one torch thread per run.
    return dict(kedro_environment(), COLUMNS="400", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def _start_kedro(
    project: Path, log: Path, *arguments: str, environment: dict[str, str] | None = None
) -> subprocess.Popen:
    """`kedro <arguments>` in ``project`` in its own session (so that its process group can be killed),
    stdout and stderr into ``log``."""
    kedro = Path(sys.executable).with_name("kedro")
    with log.open("wb") as output:
        return subprocess.Popen(
            [str(kedro), *arguments],
            cwd=project,
            env=environment or _environment(),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait(process: subprocess.Popen, log: Path, timeout: float = RUN_TIMEOUT) -> int:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        pytest.fail(f"kedro did not finish in {timeout} s:\n{_tail(log)}")


def _tail(log: Path, characters: int = 4000) -> str:
    return log.read_text(encoding="utf-8", errors="replace")[-characters:]


def _mid_epoch_checkpoint(checkpoints: Path) -> Path | None:
    """A complete checkpoint (trainer_state.json is written last) taken inside an epoch after the
    first, so that resuming must skip part of an epoch whose data order depends on the RNG."""
    for checkpoint in sorted(checkpoints.glob("checkpoint-*")):
        try:
            epoch = json.loads((checkpoint / "trainer_state.json").read_text())["epoch"]
        except (OSError, ValueError, KeyError):
            continue  # being written, or rotated away
        if epoch > 1 and epoch != int(epoch):
            return checkpoint
    return None


@dataclass
class ResumeRuns:
    reference: Path  # the uninterrupted run's project copy
    resumed: Path  # the killed-then-resumed run's project copy
    killed_returncode: int
    killed_checkpoint: Path  # fold_1's checkpoint the kill came after
    fold_1_finished_at_kill: bool
    checkpoint_files: list[str]  # the files of that checkpoint
    fold_0_snapshot: Path  # fold_0's outputs as the killed run wrote them (an independent training)
    fold_0_result_mtime: float
    resume_returncode: int
    resume_log: str
    reference_returncode: int
    reference_log: str


@pytest.fixture(scope="module")
def resume_runs(tmp_path_factory) -> ResumeRuns:
    root = tmp_path_factory.mktemp("reliability")
    reference = copy_project(root / "reference", RESUME_PARAMETERS)
    resumed = copy_project(root / "resumed", RESUME_PARAMETERS)
    reference_log, killed_log, resume_log = root / "reference.log", root / "killed.log", root / "resume.log"
    processes: list[subprocess.Popen] = []
    try:
        reference_run = _start_kedro(reference, reference_log, "run", "--pipeline=train")
        processes.append(reference_run)
        killed_run = _start_kedro(resumed, killed_log, "run", "--pipeline=train")
        processes.append(killed_run)

        work = resumed / "data" / "06_models" / "work" / CANDIDATE
        fold_0_done = work / "fold_0" / "result" / "fingerprint"
        checkpoint = None
        deadline = time.monotonic() + RUN_TIMEOUT
        while checkpoint is None:
            if killed_run.poll() is not None:
                pytest.fail(f"the run ended before it could be killed mid-fold:\n{_tail(killed_log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"no mid-epoch checkpoint of fold_1 in {RUN_TIMEOUT} s:\n{_tail(killed_log)}")
            if fold_0_done.is_file():
                checkpoint = _mid_epoch_checkpoint(work / "fold_1" / "checkpoints")
            if checkpoint is None:
                time.sleep(0.05)
        os.killpg(killed_run.pid, signal.SIGKILL)
        killed_returncode = killed_run.wait()

        fold_1_finished_at_kill = (work / "fold_1" / "result").exists()
        checkpoint_files = sorted(path.name for path in checkpoint.iterdir())
        snapshot = root / "fold_0_snapshot"
        for layer in ["06_models", "07_model_output", "08_reporting"]:
            relative = f"data/{layer}/{CANDIDATE}/fold_0"
            shutil.copytree(resumed / relative, snapshot / relative)
        fold_0_result_mtime = fold_0_done.stat().st_mtime

        resume_run = _start_kedro(resumed, resume_log, "run", "--pipeline=train")  # the same command
        processes.append(resume_run)
        resume_returncode = _wait(resume_run, resume_log)
        reference_returncode = _wait(reference_run, reference_log)
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    return ResumeRuns(
        reference=reference,
        resumed=resumed,
        killed_returncode=killed_returncode,
        killed_checkpoint=checkpoint,
        fold_1_finished_at_kill=fold_1_finished_at_kill,
        checkpoint_files=checkpoint_files,
        fold_0_snapshot=snapshot,
        fold_0_result_mtime=fold_0_result_mtime,
        resume_returncode=resume_returncode,
        resume_log=resume_log.read_text(encoding="utf-8", errors="replace"),
        reference_returncode=reference_returncode,
        reference_log=reference_log.read_text(encoding="utf-8", errors="replace"),
    )


def _without_timing(metrics: dict) -> dict:
    return {key: value for key, value in metrics.items() if key not in TIMING_KEYS}


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _mlflow_runs(project: Path):
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sentence-reduction")
    return client, client.search_runs([experiment.experiment_id])


def _children(runs, parent) -> dict:
    return {run.info.run_name: run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id}


# 1. Interruption and resume ------------------------------------------------------------------------


@pytest.mark.slow
def test_a_killed_run_resumes_without_retraining_the_finished_fold(resume_runs):
    runs = resume_runs
    assert runs.killed_returncode == -signal.SIGKILL
    assert not runs.fold_1_finished_at_kill, "the kill must land in the middle of fold_1"
    assert "model.safetensors" in runs.checkpoint_files and "trainer_state.json" in runs.checkpoint_files
    assert runs.resume_returncode == 0, runs.resume_log[-4000:]
    assert runs.reference_returncode == 0, runs.reference_log[-4000:]

    log = runs.resume_log
    reused = rf"{CANDIDATE}\.fold_0: finished result found in \S*{CANDIDATE}/fold_0, not retraining"
    assert re.search(reused, log), log[-4000:]
    assert "fold_0: resuming" not in log
    resumed_from = re.search(rf"{CANDIDATE}\.fold_1: resuming from (\S+)", log)
    assert resumed_from, log[-4000:]
    assert Path(resumed_from.group(1)).name == runs.killed_checkpoint.name
    assert "fold_1: finished result found" not in log

    work = runs.resumed / "data" / "06_models" / "work" / CANDIDATE
    assert (work / "fold_0" / "result" / "fingerprint").stat().st_mtime == runs.fold_0_result_mtime
    assert (work / "fold_1" / "result" / "fingerprint").is_file()
    assert not (work / "fold_1" / "checkpoints").exists()  # spent once the fold finished

    # MLflow agrees: the run that was killed is marked KILLED, with its fold run that was killed with it;
    # in the resumed run, fold_0 logged no training at all and fold_1 only the steps after the checkpoint.
    client, all_runs = _mlflow_runs(runs.resumed)
    parents = [run for run in all_runs if "mlflow.parentRunId" not in run.data.tags]
    finished = [run for run in parents if run.info.status == "FINISHED"]
    killed = [run for run in parents if run.info.status == "KILLED"]
    assert len(parents) == 2 and len(finished) == 1 and len(killed) == 1
    fold_0, fold_1 = f"{CANDIDATE}.fold_0", f"{CANDIDATE}.fold_1"
    assert {name: run.info.status for name, run in _children(all_runs, killed[0]).items()} == {
        fold_0: "FINISHED",
        fold_1: "KILLED",
    }
    assert "RUNNING" not in {run.info.status for run in all_runs}
    children = _children(all_runs, finished[0])
    assert set(children) == {fold_0, fold_1}
    assert client.get_metric_history(children[fold_0].info.run_id, "loss") == []
    checkpoint_step = int(runs.killed_checkpoint.name.rsplit("-", 1)[1])
    resumed_steps = [point.step for point in client.get_metric_history(children[fold_1].info.run_id, "loss")]
    assert resumed_steps and min(resumed_steps) > checkpoint_step


@pytest.mark.slow
def test_a_resumed_run_ends_with_the_uninterrupted_run_metrics_and_submission(resume_runs):
    """fold_1 resumed in the middle of its second epoch; on the CPU every output matches to the bit."""
    runs = resume_runs
    assert runs.resume_returncode == 0 and runs.reference_returncode == 0
    reference, resumed = runs.reference / "data", runs.resumed / "data"

    assert _read_json(resumed / "08_reporting" / f"{CANDIDATE}_metrics.json") == _read_json(
        reference / "08_reporting" / f"{CANDIDATE}_metrics.json"
    )
    assert _read_json(resumed / "08_reporting" / "baseline_metrics.json") == _read_json(
        reference / "08_reporting" / "baseline_metrics.json"
    )
    for fold in (f"{CANDIDATE}/fold_0", f"{CANDIDATE}/fold_1"):
        assert _without_timing(_read_json(resumed / "08_reporting" / fold / "metrics.json")) == _without_timing(
            _read_json(reference / "08_reporting" / fold / "metrics.json")
        ), fold
        for table in ("oof_probabilities.parquet", "test_probabilities.parquet"):
            pd.testing.assert_frame_equal(
                pd.read_parquet(resumed / "07_model_output" / fold / table),
                pd.read_parquet(reference / "07_model_output" / fold / table),
                check_exact=True,
            )
    assert (resumed / "07_model_output" / "submission.csv").read_bytes() == (
        reference / "07_model_output" / "submission.csv"
    ).read_bytes()


class _CrashAfterSave(TrainerCallback):
    """Stands for a kill: the process dies right after the checkpoint of ``step`` is complete."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise _Killed(f"killed after checkpoint-{self.step}")


class _Killed(Exception):
    pass


def _tiny_job() -> FoldJob:
    """16 training cases in batches of 4: 4 steps an epoch, 2 epochs, a checkpoint every 2 steps,
    dropout on, length-grouped batches: the production recipe in miniature."""
    texts = RULINGS * 3
    return FoldJob(
        name="fold_0",
        train_texts=texts[:16],
        train_labels=[index % 4 for index in range(16)],
        eval_texts=texts[16:],
        eval_labels=[index % 4 for index in range(8)],
        predict_texts=RULINGS[:5],
        tokenizer=build_tokenizer(build_character_vocabulary(texts)),
        class_months=[0, 1, 2, 3],
        model={
            "config": {
                "hidden_size": 32,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "intermediate_size": 64,
                "hidden_dropout_prob": 0.1,
            },
            "max_length": 48,
            "fused_attention": True,
        },
        training={**STEPPED_TRAINING, "arguments": {**STEPPED_TRAINING["arguments"], "save_total_limit": 1}},
    )


def _crash_after(monkeypatch, step: int) -> None:
    build_trainer = engine.build_trainer

    def crashing(job, output_dir):
        trainer = build_trainer(job, output_dir)
        trainer.add_callback(_CrashAfterSave(step))
        return trainer

    monkeypatch.setattr(engine, "build_trainer", crashing)


def _assert_same_result(first, second) -> None:
    assert np.array_equal(first.eval_probabilities, second.eval_probabilities)
    assert np.array_equal(first.predict_probabilities, second.predict_probabilities)
    assert _without_timing(first.metrics) == _without_timing(second.metrics)


@pytest.fixture(scope="module")
def uninterrupted_tiny_fold(tmp_path_factory):
    return run_fold(_tiny_job(), tmp_path_factory.mktemp("uninterrupted") / "fold_0")


@pytest.mark.slow
@pytest.mark.parametrize("step", [2, 4, 6], ids=["first-epoch", "epoch-boundary", "second-epoch"])
def test_a_fold_interrupted_after_a_checkpoint_resumes_to_the_uninterrupted_result(
    uninterrupted_tiny_fold, tmp_path, monkeypatch, caplog, step
):
    """Killed after a checkpoint in the first epoch, at the end of it, or in the middle of the second
    (where the rest of the epoch must see the same batches, in the same order, with the same dropout)."""
    work_dir = tmp_path / "fold_0"
    with monkeypatch.context() as patch:
        _crash_after(patch, step)
        with pytest.raises(_Killed):
            run_fold(_tiny_job(), work_dir)
    assert [path.name for path in (work_dir / "checkpoints").iterdir()] == [f"checkpoint-{step}"]
    with caplog.at_level(logging.INFO, logger=engine.__name__):
        resumed = run_fold(_tiny_job(), work_dir)
    assert f"resuming from {work_dir / 'checkpoints' / f'checkpoint-{step}'}" in caplog.text
    _assert_same_result(resumed, uninterrupted_tiny_fold)


@pytest.mark.slow
def test_a_fold_checkpointed_by_wall_time_resumes_to_the_uninterrupted_result(
    uninterrupted_tiny_fold, tmp_path, monkeypatch, caplog
):
    """`checkpoint_every_minutes` instead of a step cadence (here: due at every logging step)."""
    job = _tiny_job()
    job.training = dataclasses.replace(
        job.training,
        checkpoint_every_minutes=1e-9,
        arguments={**job.training.arguments, "save_strategy": "no"},
    )
    work_dir = tmp_path / "fold_0"
    with monkeypatch.context() as patch:
        _crash_after(patch, 5)
        with pytest.raises(_Killed):
            run_fold(job, work_dir)
    assert [path.name for path in (work_dir / "checkpoints").iterdir()] == ["checkpoint-5"]
    with caplog.at_level(logging.INFO, logger=engine.__name__):
        resumed = run_fold(job, work_dir)
    assert "checkpoint-5" in caplog.text
    _assert_same_result(resumed, uninterrupted_tiny_fold)


@pytest.mark.slow
def test_a_checkpoint_cut_short_by_a_kill_is_not_resumed_from(uninterrupted_tiny_fold, tmp_path, monkeypatch, caplog):
    """A kill while the Trainer writes checkpoint-6 leaves a folder with the weights but no optimizer,
    RNG or trainer state: the fold resumes from checkpoint-4, the last complete one."""
    work_dir = tmp_path / "fold_0"
    with monkeypatch.context() as patch:
        _crash_after(patch, 4)
        with pytest.raises(_Killed):
            run_fold(_tiny_job(), work_dir)
    checkpoints = work_dir / "checkpoints"
    partial = checkpoints / "checkpoint-6"
    partial.mkdir()
    for name in ("config.json", "model.safetensors"):  # the Trainer writes the model first
        shutil.copy(checkpoints / "checkpoint-4" / name, partial / name)
    with caplog.at_level(logging.INFO, logger=engine.__name__):
        resumed = run_fold(_tiny_job(), work_dir)
    assert f"resuming from {checkpoints / 'checkpoint-4'}" in caplog.text
    _assert_same_result(resumed, uninterrupted_tiny_fold)


@pytest.mark.slow
def test_a_fold_with_bf16_master_weights_resumes_to_the_uninterrupted_result(
    uninterrupted_tiny_fold, tmp_path, monkeypatch, caplog
):
    """`training.bf16_master_weights`: bf16 weights, fp32 master weights and moments in the optimizer's
    state. Killed in the middle of the second epoch, the fold resumes from the checkpoint's fp32 state
    to the result of an uninterrupted run, and writes its model in bf16."""
    job = _tiny_job()
    job.training = dataclasses.replace(job.training, bf16_master_weights=True)
    uninterrupted = run_fold(job, tmp_path / "uninterrupted" / "fold_0")
    work_dir = tmp_path / "fold_0"
    with monkeypatch.context() as patch:
        _crash_after(patch, 6)
        with pytest.raises(_Killed):
            run_fold(job, work_dir)
    optimizer_state = torch.load(work_dir / "checkpoints" / "checkpoint-6" / "optimizer.pt")
    assert {value.dtype for state in optimizer_state["state"].values() for value in state.values()} == {torch.float32}
    with caplog.at_level(logging.INFO, logger=engine.__name__):
        resumed = run_fold(job, work_dir)
    assert "checkpoint-6" in caplog.text
    _assert_same_result(resumed, uninterrupted)
    assert {tensor.dtype for tensor in load_file(resumed.model.folder / "model.safetensors").values()} == {
        torch.bfloat16
    }
    assert not np.array_equal(resumed.eval_probabilities, uninterrupted_tiny_fold.eval_probabilities)


# 2. Reproducibility ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_runs_with_the_same_seed_give_identical_predictions_end_to_end(resume_runs):
    """fold_0 was trained from scratch by two `kedro run` processes (the reference run and the run killed
    later, in fold_1): the same data, tokenizer, weights, probabilities and metrics."""
    runs = resume_runs
    reference, snapshot = runs.reference / "data", runs.fold_0_snapshot / "data"
    assert (runs.resumed / "data" / "06_models" / CANDIDATE / "tokenizer" / "tokenizer.json").read_bytes() == (
        reference / "06_models" / CANDIDATE / "tokenizer" / "tokenizer.json"
    ).read_bytes()
    for table in ("model_input_table.parquet", "test_cases.parquet"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(runs.resumed / "data" / "05_model_input" / table),
            pd.read_parquet(reference / "05_model_input" / table),
        )
    fold_0 = f"{CANDIDATE}/fold_0"
    weights = load_file(snapshot / "06_models" / fold_0 / "model.safetensors")
    reference_weights = load_file(reference / "06_models" / fold_0 / "model.safetensors")
    assert weights.keys() == reference_weights.keys()
    for name, tensor in weights.items():
        assert torch.equal(tensor, reference_weights[name]), name
    for table in ("oof_probabilities.parquet", "test_probabilities.parquet"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(snapshot / "07_model_output" / fold_0 / table),
            pd.read_parquet(reference / "07_model_output" / fold_0 / table),
            check_exact=True,
        )
    assert _without_timing(_read_json(snapshot / "08_reporting" / fold_0 / "metrics.json")) == _without_timing(
        _read_json(reference / "08_reporting" / fold_0 / "metrics.json")
    )


# 3. Safe artifacts -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_models_are_written_as_safetensors_and_nothing_pickled(resume_runs):
    runs = resume_runs
    # a Trainer checkpoint holds the model as safetensors (its optimizer, scheduler and RNG states are
    # torch files, read back with weights_only=True, and are removed once the fold finishes)
    assert "model.safetensors" in runs.checkpoint_files and "pytorch_model.bin" not in runs.checkpoint_files
    for project in (runs.reference, runs.resumed):
        models = project / "data" / "06_models"
        for fold in ("fold_0", "fold_1"):
            kept = models / CANDIDATE / fold
            assert sorted(path.name for path in kept.iterdir()) == ["config.json", "model.safetensors"]
            result_model = models / "work" / CANDIDATE / fold / "result" / "model"
            assert {"config.json", "model.safetensors"} <= {path.name for path in result_model.iterdir()}
            for folder in (kept, result_model):
                with safe_open(folder / "model.safetensors", framework="pt") as weights:
                    assert any(key.startswith("classifier.") for key in weights.keys())
        # The only pickles are the catalog's fitted scikit-learn fold models (scikit-learn has no other
        # format); the transformers' weights and checkpoints never are.
        pickled = [str(path.relative_to(models)) for path in models.rglob("*") if path.suffix in PICKLE_SUFFIXES]
        assert sorted(pickled) == SCIKIT_LEARN_MODELS, f"pickle files written beside the models: {pickled}"


def _tiny_model(seed: int = 0) -> MegatronBertForSequenceClassification:
    torch.manual_seed(seed)
    config = MegatronBertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=3,
    )
    return MegatronBertForSequenceClassification(config).eval()


def _same_weights(first, second) -> bool:
    second_state = second.state_dict()
    return all(torch.equal(tensor, second_state[name]) for name, tensor in first.state_dict().items())


def _saved(model: MegatronBertForSequenceClassification, folder: Path) -> SavedModel:
    model.save_pretrained(folder)
    return SavedModel(folder)


def test_models_are_written_once_and_load_from_safetensors_without_unpickling(tmp_path, monkeypatch):
    model = _tiny_model()
    result_dir = tmp_path / "work" / fold_cache.RESULT_FOLDER
    written = _saved(model, result_dir / fold_cache.MODEL_FOLDER)
    dataset = SequenceClassifierDataset(str(tmp_path / "06_models" / "fold_0"))
    dataset.save(written)
    kept = tmp_path / "06_models" / "fold_0"
    assert sorted(path.name for path in kept.iterdir()) == ["config.json", "model.safetensors"]
    # the catalog's copy is the engine's file, not a second serialisation of the weights
    assert (kept / "model.safetensors").stat().st_ino == (written.folder / "model.safetensors").stat().st_ino
    np.save(result_dir / "eval_probabilities.npy", np.full((2, 3), 1 / 3))
    np.save(result_dir / "predict_probabilities.npy", np.full((1, 3), 1 / 3))
    (result_dir / "metrics.json").write_text("{}")

    def no_unpickling(*args, **kwargs):
        raise AssertionError("a model must not be read with torch.load (pickle)")

    with monkeypatch.context() as patch:
        patch.setattr(torch, "load", no_unpickling)
        assert _same_weights(dataset.load().load(), model)
        assert _same_weights(load_result(tmp_path / "work", _job_of_shape(2, 1, 3)).model.load(), model)


def _job_of_shape(eval_rows: int, predict_rows: int, classes: int) -> FoldJob:
    """A job with that many held-out and test texts and classes: what a result is checked against."""
    return FoldJob(
        name="fold_0",
        train_texts=[],
        train_labels=[],
        eval_texts=["x"] * eval_rows,
        eval_labels=[0] * eval_rows,
        predict_texts=["x"] * predict_rows,
        tokenizer=build_tokenizer(build_character_vocabulary(["x"])),
        class_months=list(range(classes)),
        model={},
        training={},
    )


def test_a_pickled_model_is_refused(tmp_path):
    """A folder holding only a pickled `pytorch_model.bin` is not loaded (unpickling runs code)."""
    model = _tiny_model()
    pickled = tmp_path / "06_models" / "fold_0"
    model.config.save_pretrained(pickled)
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(DatasetError, match="model.safetensors: missing; rebuild it with `kedro run --pipelines=train`"):
        SequenceClassifierDataset(str(pickled)).load()
    shutil.copytree(pickled, tmp_path / "work" / fold_cache.RESULT_FOLDER / fold_cache.MODEL_FOLDER)
    with pytest.raises(UnusableFileError, match="model.safetensors: missing"):
        load_result(tmp_path / "work", _job_of_shape(2, 1, 3))


class _FullDisk:
    """A file that takes the first half of what is written, then fails as a full disk would."""

    def __init__(self, real_file, written: list[Path], path: str):
        self._real_file = real_file
        self._written = written
        self._path = Path(path)

    def write(self, data):
        self._real_file.write(data[: max(1, len(data) // 2)])
        self._real_file.flush()
        self._written.append(self._path)
        raise OSError(28, "No space left on device")

    def __getattr__(self, name):
        return getattr(self._real_file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        self._real_file.close()
        return False


def _figure(value: float):
    figure, axes = plt.subplots(figsize=(2, 2))
    axes.plot([0, 1], [0, value])
    return figure


ATOMIC_DATASETS = {
    "csv": (
        AtomicCSVDataset,
        "table.csv",
        lambda: pd.DataFrame({"id": ["a", "b"], "label": [1, 2]}),
        lambda: pd.DataFrame({"id": ["c" * 5000, "d"], "label": [3, 4]}),
    ),
    "parquet": (
        AtomicParquetDataset,
        "table.parquet",
        lambda: pd.DataFrame({"x": [1.0, 2.0]}),
        lambda: pd.DataFrame({"x": np.arange(50_000, dtype=float)}),
    ),
    "json": (
        AtomicJSONDataset,
        "metrics.json",
        lambda: {"final_score": 0.5},
        lambda: {"final_score": 0.75, "notes": "x" * 5000},
    ),
    "matplotlib": (AtomicMatplotlibDataset, "figure.png", lambda: _figure(1.0), lambda: _figure(2.0)),
}


@pytest.mark.parametrize("kind", list(ATOMIC_DATASETS))
def test_a_save_that_fails_midway_keeps_the_previous_file_and_leaves_no_temporary_file(kind, tmp_path, monkeypatch):
    dataset_class, name, old_data, new_data = ATOMIC_DATASETS[kind]
    folder = tmp_path / "outputs"
    dataset = dataset_class(filepath=str(folder / name))
    dataset.save(old_data())
    previous = (folder / name).read_bytes()

    written: list[Path] = []
    real_open = dataset._fs.open

    def failing_open(path, mode="rb", *args, **kwargs):
        real_file = real_open(path, mode, *args, **kwargs)
        return _FullDisk(real_file, written, path) if "w" in mode else real_file

    with monkeypatch.context() as patch:
        patch.setattr(dataset._fs, "open", failing_open)
        with pytest.raises(DatasetError, match="No space left on device") as raised:
            dataset.save(new_data())
    disk_full = find_error(raised.value, DiskFullError)
    assert disk_full is not None and str(disk_full).startswith(f"saving {folder / name}: No space left on device (")
    assert "\n" not in str(disk_full)
    assert written and written[0] != folder / name, "the failing write went to the target itself"
    assert (folder / name).read_bytes() == previous
    assert sorted(path.name for path in folder.iterdir()) == [name]  # no temporary file left behind

    dataset.save(new_data())
    assert (folder / name).read_bytes() != previous
    assert sorted(path.name for path in folder.iterdir()) == [name]
    if kind in {"csv", "parquet"}:
        pd.testing.assert_frame_equal(dataset.load(), new_data())
    elif kind in {"json", "text"}:
        assert dataset.load() == new_data()


_TO_CSV = pd.DataFrame.to_csv


def _partial_to_csv(self, path_or_buf=None, **kwargs):
    """`DataFrame.to_csv` that writes the first half of the table, then fails."""
    text = _TO_CSV(self, None, **kwargs)
    path_or_buf.write(text[: len(text) // 2])
    path_or_buf.flush()
    raise OSError(28, "No space left on device")


def test_a_failed_first_save_leaves_no_file(tmp_path, monkeypatch):
    dataset = AtomicCSVDataset(filepath=str(tmp_path / "outputs" / "submission.csv"))
    with monkeypatch.context() as patch:
        patch.setattr(pd.DataFrame, "to_csv", _partial_to_csv)
        with pytest.raises(DatasetError, match="No space left on device"):
            dataset.save(pd.DataFrame({"id": ["a"] * 1000, "label": [1] * 1000}))
    outputs = tmp_path / "outputs"
    assert not outputs.exists() or list(outputs.iterdir()) == []


def test_a_csv_whose_to_csv_fails_midway_keeps_the_previous_file(tmp_path, monkeypatch):
    folder = tmp_path / "outputs"
    dataset = AtomicCSVDataset(filepath=str(folder / "submission.csv"))
    dataset.save(pd.DataFrame({"id": ["a", "b"], "label": [6, 9]}))
    previous = (folder / "submission.csv").read_bytes()
    with monkeypatch.context() as patch:
        patch.setattr(pd.DataFrame, "to_csv", _partial_to_csv)
        with pytest.raises(DatasetError, match="No space left on device"):
            dataset.save(pd.DataFrame({"id": ["c"] * 1000, "label": [3] * 1000}))
    assert (folder / "submission.csv").read_bytes() == previous
    assert [path.name for path in folder.iterdir()] == ["submission.csv"]


def test_a_model_save_that_fails_midway_keeps_the_previous_model_and_leaves_nothing_behind(tmp_path, monkeypatch):
    """Across file systems the model's files are copied: a copy cut short by a full disk."""
    models = tmp_path / "06_models"
    dataset = SequenceClassifierDataset(str(models / "fold_0"))
    old_model, new_model = _tiny_model(seed=0), _tiny_model(seed=1)
    dataset.save(_saved(old_model, tmp_path / "work" / "old"))
    new = _saved(new_model, tmp_path / "work" / "new")
    partial_files: list[Path] = []

    def no_link(source, destination):
        raise OSError(18, "Invalid cross-device link")

    def copy_half_then_fail(source, destination):
        Path(destination).write_bytes(Path(source).read_bytes()[: Path(source).stat().st_size // 2])
        partial_files.append(Path(destination))
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "link", no_link)
        patch.setattr(shutil, "copy2", copy_half_then_fail)
        with pytest.raises(DatasetError, match="No space left on device"):
            dataset.save(new)
    assert partial_files and models / "fold_0" not in partial_files[0].parents
    assert _same_weights(dataset.load().load(), old_model)
    assert sorted(path.name for path in models.iterdir()) == ["fold_0"], "a staging folder was left behind"

    dataset.save(new)
    assert _same_weights(dataset.load().load(), new_model)
    assert sorted(path.name for path in models.iterdir()) == ["fold_0"]
    assert sorted(path.name for path in (models / "fold_0").iterdir()) == ["config.json", "model.safetensors"]


# 4. Failure is visible -------------------------------------------------------------------------------


# Position embeddings for 64 tokens, texts cut at 128: the first batch (the longest) fails in the
# model's forward pass, inside the Trainer, after its MLflow callback has logged into the fold's run.
@pytest.mark.slow
def test_a_failing_fold_fails_the_run_names_the_fold_and_the_cause_and_marks_mlflow_failed(tmp_path):
    project = copy_project(
        tmp_path / "project",
        RESUME_PARAMETERS.replace(
            "        intermediate_size: 64\n", "        intermediate_size: 64\n        max_position_embeddings: 64\n"
        ),
    )
    log = tmp_path / "failing.log"
    max_length = f"transformer_candidates.{CANDIDATE}.model.max_length=128"
    run = _start_kedro(project, log, "run", "--pipeline=train", "--params", max_length)
    assert _wait(run, log) != 0
    output = log.read_text(encoding="utf-8", errors="replace")

    lines = output.splitlines()
    failed = [index for index, line in enumerate(lines) if "failed with error" in line]
    assert failed, output[-4000:]
    assert f"{CANDIDATE}.fold_0" in lines[failed[0]], lines[failed[0]]  # the failed node's outputs name the fold
    cause = next(line for line in lines[failed[0] + 1 :] if line.strip()).strip()
    assert "(128)" in cause and "(64)" in cause, cause  # 128 positions asked, 64 embedded
    assert f"RuntimeError: {cause}" in output  # the traceback ends with the same cause
    assert f"{CANDIDATE}.fold_1.train_fold" not in output.split("failed with error", 1)[0]  # fold_0 failed first

    client, runs = _mlflow_runs(project)
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FAILED"
    children = _children(runs, parents[0])
    assert set(children) == {f"{CANDIDATE}.fold_0"}
    fold_run = children[f"{CANDIDATE}.fold_0"]
    assert fold_run.info.status == "FAILED"
    assert fold_run.data.tags["error"].startswith("RuntimeError: ") and cause in fold_run.data.tags["error"]
    assert fold_run.data.params["learning_rate"] == "0.001"  # the Trainer had logged into the fold's run


# 5. Nothing on disk is trusted unchecked: checkpoints and fold results -----------------------------------


def _truncated(path: Path) -> None:
    with path.open("r+b") as file:  # in place: a hard link to the file is cut too
        file.truncate(path.stat().st_size // 2)


def _emptied(path: Path) -> None:
    with path.open("r+b") as file:
        file.truncate(0)


def _garbage(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, path.stat().st_size, dtype=np.uint8).tobytes())


DAMAGES = {"truncated": _truncated, "zero-length": _emptied, "garbage": _garbage}
CHECKPOINT_FILES = ["model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"]


def _keeping_two_checkpoints(job: FoldJob) -> FoldJob:
    job.training = dataclasses.replace(job.training, arguments={**job.training.arguments, "save_total_limit": 2})
    return job


@pytest.fixture(scope="module")
def crashed_after_step_6(tmp_path_factory) -> Path:
    """A tiny fold's work folder as a kill after checkpoint-6 left it: checkpoint-4 and checkpoint-6."""
    work_dir = tmp_path_factory.mktemp("crashed") / "fold_0"
    with pytest.MonkeyPatch.context() as patch:
        _crash_after(patch, 6)
        with pytest.raises(_Killed):
            run_fold(_keeping_two_checkpoints(_tiny_job()), work_dir)
    return work_dir


def _copy_of(work_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(work_dir, tmp_path / "fold_0"))


@pytest.mark.parametrize("damage", list(DAMAGES))
@pytest.mark.parametrize("name", CHECKPOINT_FILES)
def test_a_damaged_checkpoint_is_set_aside_and_the_one_before_it_is_resumed_from(
    crashed_after_step_6, tmp_path, caplog, name, damage
):
    work_dir = _copy_of(crashed_after_step_6, tmp_path)
    checkpoints = work_dir / fold_cache.CHECKPOINT_FOLDER
    DAMAGES[damage](checkpoints / "checkpoint-6" / name)
    with caplog.at_level(logging.INFO, logger=fold_cache.__name__):
        fold_cache.prepare_to_train("fold_0", work_dir)
    assert fold_cache.last_complete_checkpoint(checkpoints) == str(checkpoints / "checkpoint-4")
    assert sorted(path.name for path in checkpoints.iterdir()) == ["checkpoint-4", fold_cache.SET_ASIDE_FOLDER]
    assert (checkpoints / fold_cache.SET_ASIDE_FOLDER / "checkpoint-6" / name).is_file()
    (line,) = caplog.messages
    assert line.startswith(f"fold_0: {checkpoints / 'checkpoint-6'} is damaged ({name}: ") and "set aside" in line


@pytest.mark.parametrize("case", ["newest-weights-truncated", "only-optimizer-garbage", "only-scheduler-zero-length"])
def test_a_fold_resumes_past_a_damaged_checkpoint_to_the_uninterrupted_result(
    uninterrupted_tiny_fold, crashed_after_step_6, tmp_path, caplog, case
):
    """The newest checkpoint damaged: resumed from the one before it, or, when it was the only one, the
    fold trains from the start; either way to the uninterrupted run's result, with no traceback."""
    work_dir = _copy_of(crashed_after_step_6, tmp_path)
    checkpoints = work_dir / fold_cache.CHECKPOINT_FOLDER
    if case == "newest-weights-truncated":
        _truncated(checkpoints / "checkpoint-6" / "model.safetensors")
    else:
        shutil.rmtree(checkpoints / "checkpoint-4")
        damage, name = (_garbage, "optimizer.pt") if case == "only-optimizer-garbage" else (_emptied, "scheduler.pt")
        damage(checkpoints / "checkpoint-6" / name)
    with caplog.at_level(logging.INFO):
        resumed = run_fold(_keeping_two_checkpoints(_tiny_job()), work_dir)
    assert f"{checkpoints / 'checkpoint-6'} is damaged" in caplog.text
    if case == "newest-weights-truncated":
        assert f"resuming from {checkpoints / 'checkpoint-4'}" in caplog.text
    else:
        assert "resuming from" not in caplog.text
    _assert_same_result(resumed, uninterrupted_tiny_fold)


@pytest.mark.slow
def test_a_kill_before_the_completion_mark_resumes_from_the_checkpoint_before(
    uninterrupted_tiny_fold, tmp_path, monkeypatch, caplog
):
    """Killed once the Trainer wrote checkpoint-6's files but before they were marked complete: the
    older checkpoint is still there (rotated only after the mark), checkpoint-6 is removed as cut short."""
    from sentence_reduction.finetune import trainer as trainer_module

    mark_complete = trainer_module.mark_complete

    def killed_before_marking(checkpoint: Path) -> None:
        if checkpoint.name == "checkpoint-6":
            raise _Killed("killed before the mark")
        mark_complete(checkpoint)

    work_dir = tmp_path / "fold_0"
    with monkeypatch.context() as patch:
        patch.setattr(trainer_module, "mark_complete", killed_before_marking)
        with pytest.raises(_Killed):
            run_fold(_tiny_job(), work_dir)
    checkpoints = work_dir / fold_cache.CHECKPOINT_FOLDER
    assert sorted(path.name for path in checkpoints.iterdir()) == ["checkpoint-4", "checkpoint-6"]
    written = json.loads((checkpoints / "checkpoint-4" / fold_cache.COMPLETION_MARK).read_text())["files"]
    assert written == {
        str(path.relative_to(checkpoints / "checkpoint-4")): path.stat().st_size
        for path in (checkpoints / "checkpoint-4").rglob("*")
        if path.is_file() and path.name != fold_cache.COMPLETION_MARK
    }
    assert {"model.safetensors", "optimizer.pt", "trainer_state.json"} <= set(written)
    with caplog.at_level(logging.INFO):
        resumed = run_fold(_tiny_job(), work_dir)
    assert f"{checkpoints / 'checkpoint-6'} was cut short (no completion mark); removed" in caplog.text
    assert f"resuming from {checkpoints / 'checkpoint-4'}" in caplog.text
    _assert_same_result(resumed, uninterrupted_tiny_fold)


@pytest.mark.slow
def test_a_disk_full_during_a_checkpoint_fails_with_one_line_and_the_next_run_resumes_before_it(
    uninterrupted_tiny_fold, tmp_path, monkeypatch, caplog
):
    """The disk fills while checkpoint-6's optimizer state is written (half of it on disk): one line
    naming the checkpoint and the room it needed; the half-written checkpoint is never resumed from."""
    real_save = torch.save

    def disk_fills(obj, f, *args, **kwargs):
        if str(f).endswith(os.path.join("checkpoint-6", "optimizer.pt")):
            real_save(obj, f, *args, **kwargs)
            _truncated(Path(f))
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    work_dir = tmp_path / "fold_0"
    with monkeypatch.context() as patch:
        patch.setattr(torch, "save", disk_fills)
        with pytest.raises(DiskFullError) as raised:
            run_fold(_tiny_job(), work_dir)
    checkpoints = work_dir / fold_cache.CHECKPOINT_FOLDER
    message = str(raised.value)
    assert "\n" not in message
    assert re.fullmatch(
        rf"saving checkpoint {re.escape(str(checkpoints / 'checkpoint-6'))}: No space left on device "
        rf"\(needs about [\d.]+ [kM]B; [\d.]+ [kMGT]?B free in {re.escape(str(checkpoints))}\)",
        message,
    ), message
    assert not (checkpoints / "checkpoint-6" / fold_cache.COMPLETION_MARK).exists()
    with caplog.at_level(logging.INFO):
        resumed = run_fold(_tiny_job(), work_dir)
    assert "checkpoint-6 was cut short (no completion mark); removed" in caplog.text
    assert f"resuming from {checkpoints / 'checkpoint-4'}" in caplog.text
    _assert_same_result(resumed, uninterrupted_tiny_fold)


RESULT_DAMAGES = [
    ("eval_probabilities.npy", "truncated"),
    ("predict_probabilities.npy", "zero-length"),
    ("metrics.json", "garbage"),
    ("model/model.safetensors", "truncated"),
    ("model/config.json", "garbage"),
]


@pytest.mark.parametrize(("name", "damage"), RESULT_DAMAGES, ids=[f"{name}-{kind}" for name, kind in RESULT_DAMAGES])
def test_a_finished_result_that_does_not_load_is_not_trusted(uninterrupted_tiny_fold, tmp_path, caplog, name, damage):
    """One warning naming the file; the result is removed and the folder left ready to train the fold."""
    work_dir = _copy_of(uninterrupted_tiny_fold.model.folder.parents[1], tmp_path)
    damaged = work_dir / fold_cache.RESULT_FOLDER / name
    DAMAGES[damage](damaged)
    with caplog.at_level(logging.INFO, logger=fold_cache.__name__):
        assert fold_cache.finished_result(_tiny_job(), work_dir) is None
    (line,) = caplog.messages
    assert line.startswith(f"fold_0: finished result not used, {damaged}: ") and line.endswith("; retraining the fold")
    assert not (work_dir / fold_cache.RESULT_FOLDER).exists()
    assert (work_dir / "fingerprint").read_text() == _tiny_job().fingerprint()


@pytest.mark.slow
def test_a_fold_whose_saved_model_does_not_load_is_retrained_to_the_same_result(
    uninterrupted_tiny_fold, tmp_path, caplog
):
    work_dir = _copy_of(uninterrupted_tiny_fold.model.folder.parents[1], tmp_path)
    _truncated(work_dir / fold_cache.RESULT_FOLDER / "model" / "model.safetensors")
    with caplog.at_level(logging.INFO):
        retrained = run_fold(_tiny_job(), work_dir)
    assert "model.safetensors: does not load (SafetensorError" in caplog.text and "retraining the fold" in caplog.text
    assert "not retraining" not in caplog.text
    _assert_same_result(retrained, uninterrupted_tiny_fold)
    assert _same_weights(retrained.model.load(), uninterrupted_tiny_fold.model.load())


def test_a_result_that_fills_the_disk_fails_with_one_line_and_is_never_taken_as_finished(tmp_path, monkeypatch):
    work_dir = tmp_path / "fold_0"
    job = _job_of_shape(2, 1, 3)
    assert fold_cache.finished_result(job, work_dir) is None
    staging = fold_cache.staging_folder(work_dir)
    _saved(_tiny_model(), staging / fold_cache.MODEL_FOLDER)
    real_save = np.save

    def disk_fills(file, array, *args, **kwargs):
        if Path(file).name == "predict_probabilities.npy":
            Path(file).write_bytes(b"\x93NUMPY")
            raise OSError(28, "No space left on device")
        return real_save(file, array, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(np, "save", disk_fills)
        with pytest.raises(DiskFullError, match=rf"^writing the fold's result in {re.escape(str(staging))}: No space"):
            fold_cache.save_result(work_dir, staging, np.full((2, 3), 1 / 3), np.full((1, 3), 1 / 3), {})
    assert fold_cache.finished_result(job, work_dir) is None  # the staged half is no result
    fold_cache.prepare_to_train(job.name, work_dir)
    assert not staging.exists()


def test_datasets_the_pipeline_reads_back_name_the_file_that_does_not_load_and_what_rebuilds_it(tmp_path):
    models = tmp_path / "06_models"
    AtomicJSONDataset(filepath=str(models / "ensemble.json")).save({"weights": {"baseline": 1.0}})
    dataset = SequenceClassifierDataset(str(models / "fold_0"))
    dataset.save(_saved(_tiny_model(), tmp_path / "work" / "model"))
    tokenizer = TokenizerDataset(str(models / "tokenizer"))
    tokenizer.save(build_tokenizer(build_character_vocabulary(RULINGS)))
    _garbage(models / "ensemble.json")
    _truncated(models / "fold_0" / "model.safetensors")
    _truncated(models / "tokenizer" / "tokenizer.json")
    for load, damaged in [
        (AtomicJSONDataset(filepath=str(models / "ensemble.json")).load, models / "ensemble.json"),
        (dataset.load, models / "fold_0" / "model.safetensors"),
        (tokenizer.load, models / "tokenizer"),
    ]:
        with pytest.raises(DatasetError) as raised:
            load()
        error = find_error(raised.value, UnusableFileError)
        assert error is not None and error.path == damaged, raised.value
        assert str(error).startswith(f"{damaged}: ") and "\n" not in str(error)
        assert str(error).endswith("; rebuild it with `kedro run --pipelines=train`")


# 6. One run at a time, a saved model that does not load, a full disk, the served model: end to end -------

QUIET_FAST_PARAMETERS = FAST_PARAMETERS + "    disable_tqdm: true\n"
SAVED_FOLD_0 = Path("data") / "06_models" / CANDIDATE / "fold_0"


@dataclass
class RacingRuns:
    project: Path  # where two `kedro run --pipelines=train` started at once, in a fresh project
    lone: Path  # a lone run's project
    pids: list[int]
    returncodes: list[int]
    logs: list[str]
    lone_returncode: int
    lone_log: str


@pytest.fixture(scope="module")
def racing_runs(tmp_path_factory) -> RacingRuns:
    """Two train runs started at once in a fresh project (no MLflow store yet), beside a lone run in
    another copy; one torch thread each, so that all three fit the 2-core CPU and compute identically."""
    root = tmp_path_factory.mktemp("racing")
    project = copy_project(root / "project", QUIET_FAST_PARAMETERS)
    lone = copy_project(root / "lone", QUIET_FAST_PARAMETERS)
    logs = [root / "first.log", root / "second.log", root / "lone.log"]
    processes: list[subprocess.Popen] = []
    try:
        for folder, log in zip([project, project, lone], logs, strict=True):
            processes.append(_start_kedro(folder, log, "run", "--pipelines=train"))
        returncodes = [_wait(process, log) for process, log in zip(processes, logs, strict=True)]
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    texts = [log.read_text(encoding="utf-8", errors="replace") for log in logs]
    return RacingRuns(
        project, lone, [process.pid for process in processes[:2]], returncodes[:2], texts[:2], returncodes[2], texts[2]
    )


def _last_line(log: str) -> str:
    return [line for line in log.splitlines() if line.strip()][-1]


def _assert_same_outputs(project: Path, lone: Path) -> None:
    """The files under data/ of a lone run: the same names, the same predictions, weights and metrics."""
    assert {path.relative_to(project) for path in written_outputs(project)} == {
        path.relative_to(lone) for path in written_outputs(lone)
    }
    data, lone_data = project / "data", lone / "data"
    assert (data / "07_model_output" / "submission.csv").read_bytes() == (
        lone_data / "07_model_output" / "submission.csv"
    ).read_bytes()
    assert _read_json(data / "06_models" / "ensemble.json") == _read_json(lone_data / "06_models" / "ensemble.json")
    for table in (data / "07_model_output").rglob("*.parquet"):
        relative = table.relative_to(data)
        pd.testing.assert_frame_equal(pd.read_parquet(table), pd.read_parquet(lone_data / relative), check_exact=True)
    for metrics in (data / "08_reporting").rglob("*metrics.json"):
        relative = metrics.relative_to(data)
        assert _without_timing(_read_json(metrics)) == _without_timing(_read_json(lone_data / relative)), relative
    for fold in ("fold_0", "fold_1"):
        weights = load_file(data / "06_models" / CANDIDATE / fold / "model.safetensors")
        lone_weights = load_file(lone_data / "06_models" / CANDIDATE / fold / "model.safetensors")
        assert weights.keys() == lone_weights.keys()
        assert all(torch.equal(tensor, lone_weights[name]) for name, tensor in weights.items()), fold


@pytest.mark.slow
def test_two_runs_started_at_once_one_refuses_in_one_line_and_the_other_writes_what_a_lone_run_writes(racing_runs):
    runs = racing_runs
    assert sorted(runs.returncodes) == [0, 1], [_last_line(log) for log in runs.logs]
    assert runs.lone_returncode == 0, runs.lone_log[-3000:]
    winner = runs.returncodes.index(0)
    refused = runs.logs[1 - winner]
    assert re.fullmatch(
        rf"Error: another kedro run is using this project \(pid {runs.pids[winner]} on "
        rf"{re.escape(socket.gethostname())}, started \S+: kedro run --pipelines=train\); "
        r"this run did not start: wait for it to end, or stop it",
        _last_line(refused),
    ), _last_line(refused)
    assert "Running node" not in refused and "Mlflow run" not in refused  # it wrote nothing, opened no run
    for log in (*runs.logs, runs.lone_log):
        assert "Traceback" not in log and "already exists" not in log  # the store was created once
    _assert_same_outputs(runs.project, runs.lone)
    client, all_runs = _mlflow_runs(runs.project)
    parents = [run for run in all_runs if "mlflow.parentRunId" not in run.data.tags]
    assert [run.info.status for run in parents] == ["FINISHED"]
    assert [version.version for version in client.search_model_versions("name = 'sentence-reduction'")] == [1]


@dataclass
class DamagedModelRuns:
    killed_pid: int
    predict_returncode: int
    predict_log: str
    train_returncode: int
    train_log: str


@pytest.fixture(scope="module")
def damaged_model_runs(racing_runs, tmp_path_factory) -> DamagedModelRuns:
    """In the trained project: a train run SIGKILLed once it holds the project and runs its first node;
    then fold_0's saved model cut in half (the work folder's result is the same file: a hard link); then
    predict, and train again."""
    project, root = racing_runs.project, tmp_path_factory.mktemp("damaged")
    killed_log = root / "killed.log"
    killed = _start_kedro(project, killed_log, "run", "--pipelines=train")
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        while _lock_holder(project) != killed.pid or "Running node" not in _tail(killed_log, 100_000):
            assert killed.poll() is None and time.monotonic() < deadline, _tail(killed_log)
            time.sleep(0.05)
    finally:
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
    _truncated(project / SAVED_FOLD_0 / "model.safetensors")
    results = []
    for pipeline in ("predict", "train"):
        log = root / f"{pipeline}.log"
        results.append(_wait(_start_kedro(project, log, "run", f"--pipelines={pipeline}"), log))
        results.append(log.read_text(encoding="utf-8", errors="replace"))
    return DamagedModelRuns(killed.pid, *results)


def _lock_holder(project: Path) -> int | None:
    try:
        return json.loads((project / ".kedro_run.lock").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


@pytest.mark.slow
def test_a_run_killed_outright_leaves_no_lock_and_predict_with_a_model_that_does_not_load_stops_with_one_line(
    racing_runs, damaged_model_runs
):
    runs = damaged_model_runs
    assert "another kedro run" not in runs.predict_log  # the killed run's lock went with it
    assert runs.predict_returncode == 1
    saved = racing_runs.project / SAVED_FOLD_0 / "model.safetensors"
    assert re.fullmatch(
        rf"Error: {re.escape(str(saved))}: does not load \(SafetensorError: [^\n]+\); "
        r"rebuild it with `kedro run --pipelines=train`",
        _last_line(runs.predict_log),
    ), _last_line(runs.predict_log)
    assert "Traceback" not in runs.predict_log
    assert not (racing_runs.project / "data" / "07_model_output" / "predictions.csv").exists()
    client, all_runs = _mlflow_runs(racing_runs.project)
    killed = [run for run in all_runs if run.data.tags.get("process.pid") == str(runs.killed_pid)]
    assert [run.info.status for run in killed] == ["KILLED"]


@pytest.mark.slow
def test_train_retrains_only_the_fold_whose_saved_model_does_not_load_and_registers_a_model_that_answers(
    racing_runs, damaged_model_runs
):
    runs = damaged_model_runs
    assert runs.train_returncode == 0, runs.train_log[-3000:]
    result_model = Path("data") / "06_models" / "work" / CANDIDATE / "fold_0" / "result" / "model" / "model.safetensors"
    (warning,) = [line for line in runs.train_log.splitlines() if "finished result not used" in line]
    assert f"{CANDIDATE}.fold_0: finished result not used, {result_model}: does not load (SafetensorError" in warning
    assert "retraining the fold" in warning
    assert f"{CANDIDATE}.fold_1: finished result found" in runs.train_log
    assert f"{CANDIDATE}.fold_0: finished result found" not in runs.train_log
    assert "Traceback" not in runs.train_log
    _assert_same_outputs(racing_runs.project, racing_runs.lone)  # fold_0 retrained to the same weights
    assert "registered as 'sentence-reduction' version 2" in runs.train_log
    client, _ = _mlflow_runs(racing_runs.project)
    versions = client.search_model_versions("name = 'sentence-reduction'")
    assert sorted((version.version, version.status) for version in versions) == [(1, "READY"), (2, "READY")]


# The disk fills while the model's files are copied into the MLflow store: the first large file is half
# written, then ENOSPC (the room was there when the run checked it, and then it was not).
FULL_DISK_WHILE_LOGGING = """
import errno, os, shutil

_copy2 = shutil.copy2


def copy2(source, destination, *args, **kwargs):
    if f"{os.sep}models{os.sep}m-" in str(destination) and os.path.getsize(source) > 1_000_000:
        with open(source, "rb") as read, open(destination, "wb") as written:
            written.write(read.read()[: os.path.getsize(source) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(destination))
    return _copy2(source, destination, *args, **kwargs)


shutil.copy2 = copy2
"""


@pytest.mark.slow
def test_a_disk_that_fills_while_the_model_is_logged_stops_with_one_line_and_leaves_no_model_and_no_running_run(
    racing_runs, damaged_model_runs, tmp_path
):
    project = racing_runs.project
    (tmp_path / "sitecustomize.py").write_text(FULL_DISK_WHILE_LOGGING)
    environment = _environment()
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), environment.get("PYTHONPATH")]))
    log = tmp_path / "full_disk.log"
    assert _wait(_start_kedro(project, log, "run", "--pipelines=train", environment=environment), log) == 1
    output = log.read_text(encoding="utf-8", errors="replace")
    assert re.fullmatch(
        r"Error: logging the MLflow model 'model': No space left on device "
        r"\(needs about [\d.]+ MB; [\d.]+ [kMGT]?B free in \S+\)",
        _last_line(output),
    ), _last_line(output)
    assert "Traceback" not in output
    client, all_runs = _mlflow_runs(project)
    assert "RUNNING" not in {run.info.status for run in all_runs}
    newest = max(
        (run for run in all_runs if "mlflow.parentRunId" not in run.data.tags), key=lambda run: run.info.start_time
    )
    assert newest.info.status == "FAILED"
    experiment = client.get_experiment_by_name("sentence-reduction")
    models = list(client.search_logged_models(experiment_ids=[experiment.experiment_id]))
    assert {model.status.value for model in models} == {"READY"}, "a partial model was left behind"
    kept = {Path(model.artifact_location).parent.name for model in models}
    assert {folder.name for folder in project.glob("mlruns/*/models/*")} == kept
    assert len(client.search_model_versions("name = 'sentence-reduction'")) == 2  # none registered


@pytest.mark.slow
def test_the_served_model_refuses_bad_requests_in_4xx_keeps_serving_and_logs_one_line_a_request(racing_runs):
    """`benchmarks/serving_load.py` against `mlflow models serve` of the registered model: a few good
    requests, then each bad one, each followed by a good one."""
    completed = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "benchmarks" / "serving_load.py"),
            "--model-uri",
            "models:/sentence-reduction/1",
            "--requests",
            "5",
            "--batch",
            "10",
            "--batch-requests",
            "2",
        ],
        cwd=racing_runs.project,
        env={**_environment(), "MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout)
    refused = {name: (bad["status"], bad["message"], bad["then_good"]) for name, bad in result["bad_requests"].items()}
    assert refused == {
        "fact_number": (400, "Error: <input>, row 1, field 'fact': not text: int 12345", 200),
        "fact_list": (400, "Error: <input>, row 1, field 'fact': not text: list ['罪犯', '某']", 200),
        "fact_empty": (400, "Error: <input>, row 1, field 'fact': empty text (id 'bad')", 200),
        "fact_missing": (
            400,
            "Error: <input>, row 0, field 'fact': missing column(s) ['fact']; the header has ['id']",
            200,
        ),
        "ruling_of_a_million_characters": (
            400,
            refused["ruling_of_a_million_characters"][1],
            200,
        ),
        "malformed_json": (400, refused["malformed_json"][1], 200),
        "five_thousand_rows": (
            400,
            "Error: <input>: 5000 rulings in one request, more than 1000 (serving.max_rows): send fewer",
            200,
        ),
    }
    assert re.fullmatch(
        r"Error: <input>, row 1, field 'fact': \d+ characters, more than a ruling may have here "
        r"\(20000, serving\.max_text_chars\)",
        refused["ruling_of_a_million_characters"][1],
    )
    assert result["all_bad_requests_4xx"] is True
    assert result["server_log_lines_per_request"] == 1.0
