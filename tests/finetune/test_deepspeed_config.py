"""The run's one DeepSpeed config: resolved as each fold's Trainer resolves it, empty where the folds train
without DeepSpeed, handed to every fold in place of its json file, and logged once into the run's MLflow run."""

from __future__ import annotations

import dataclasses
import json

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from transformers import TrainingArguments
from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

from sentence_reduction.finetune.arguments import (
    LauncherSettings,
    TrainingSettings,
    effective_arguments,
    resolved_deepspeed_config,
)
from sentence_reduction.finetune.job import FoldResult, SavedModel
from sentence_reduction.finetune.launcher import launch_command
from sentence_reduction.finetune.text import SPECIAL_TOKENS, build_tokenizer
from sentence_reduction.pipelines.train import create_train_pipeline
from sentence_reduction.pipelines.train import transformer as fine_tuning
from sentence_reduction.tracking import FoldTrackingHooks
from tests.conftest import PROJECT_ROOT

DEEPSPEED = PROJECT_ROOT / "conf" / "base" / "deepspeed"
# A config with an optimizer section: its "auto" parameters come from the training arguments too.
ZERO2_WITH_OPTIMIZER = {
    **json.loads((DEEPSPEED / "zero2.json").read_text()),
    "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"}},
}


@pytest.fixture(autouse=True)
def in_the_project_root(monkeypatch):
    """`kedro run` runs in the project root, where the recipe's `conf/base/deepspeed/...` paths lead."""
    monkeypatch.chdir(PROJECT_ROOT)


def recipe(**changes) -> TrainingSettings:
    """The project's `training` settings (conf/base), with ``changes`` in place of whole fields."""
    parameters = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "parameters_train.yml").read_text(encoding="utf-8"))
    return TrainingSettings.from_params({**parameters["training"], **changes})


def folds_trainer_config(
    training: TrainingSettings, world_size: int, tmp_path, monkeypatch
) -> HfTrainerDeepSpeedConfig:
    """The DeepSpeed config as a fold's `TrainingArguments` resolve it from the recipe's GPU arguments,
    in a process of a ``world_size`` group (built here on the CPU, so without tf32, which needs an
    Ampere GPU to be set at all and plays no part in DeepSpeed's config)."""
    monkeypatch.setattr(TrainingArguments, "world_size", property(lambda self: world_size))
    values = {name: value for name, value in effective_arguments(training, on_gpu=True).items() if name != "tf32"}
    return TrainingArguments(output_dir=str(tmp_path / "fold"), use_cpu=True, **values).hf_deepspeed_config


def with_accumulation(steps: int) -> dict:
    return {**recipe().arguments, "gradient_accumulation_steps": steps}


@pytest.mark.parametrize(
    "training, world_size",
    [
        (recipe(deepspeed_single_process=True), 1),
        (recipe(launcher={"nproc_per_node": 2}), 2),
        (
            recipe(
                arguments=with_accumulation(4),
                gpu_arguments={**recipe().gpu_arguments, "deepspeed": ZERO2_WITH_OPTIMIZER},
                launcher={"nproc_per_node": 2, "nnodes": 2},
            ),
            4,
        ),
    ],
    ids=["one_process_single_process_deepspeed", "two_processes", "two_nodes_accumulation_optimizer"],
)
def test_the_runs_deepspeed_config_is_what_each_folds_trainer_resolves(training, world_size, tmp_path, monkeypatch):
    resolved = resolved_deepspeed_config(training, on_gpu=True)
    trainer_config = folds_trainer_config(training, world_size, tmp_path, monkeypatch).config
    # accelerate's DeepSpeedPlugin, made with the arguments, silences DeepSpeed's log (steps_per_print: inf).
    assert resolved == {**trainer_config, "steps_per_print": resolved["steps_per_print"]}
    accumulation = training.arguments.get("gradient_accumulation_steps", 1)
    assert resolved["train_batch_size"] == world_size * 16 * accumulation
    assert resolved["bf16"] == {"enabled": True} and resolved["gradient_clipping"] == 1.0
    assert "auto" not in json.dumps(resolved)

    # A fold handed the resolved config (as `train_fold` hands it) finds nothing to fill or contradict;
    # one started in another world size than the run resolved it for is caught by the Trainer.
    handed = dataclasses.replace(training, gpu_arguments={**training.gpu_arguments, "deepspeed": resolved})
    again = folds_trainer_config(handed, world_size, tmp_path, monkeypatch)
    assert again.mismatches == [] and {**again.config, "steps_per_print": resolved["steps_per_print"]} == resolved
    assert folds_trainer_config(handed, world_size + 1, tmp_path, monkeypatch).mismatches


def test_an_optimizer_section_gets_the_training_arguments():
    training = recipe(
        gpu_arguments={**recipe().gpu_arguments, "deepspeed": ZERO2_WITH_OPTIMIZER}, launcher={"nproc_per_node": 2}
    )
    assert resolved_deepspeed_config(training, on_gpu=True)["optimizer"]["params"] == {
        "lr": 1.0e-3,
        "betas": [0.9, 0.98],
        "eps": 1.0e-8,
        "weight_decay": 0.1,
    }


@pytest.mark.parametrize(
    "training, on_gpu",
    [
        (recipe(), False),  # the default: the CPU
        (recipe(launcher={"nproc_per_node": 2}), False),  # several processes on the CPU: still no DeepSpeed
        (recipe(), True),  # one process on one GPU, without deepspeed_single_process
        (recipe(gpu_arguments={**recipe().gpu_arguments, "deepspeed": None}, launcher={"nproc_per_node": 2}), True),
    ],
    ids=["cpu", "cpu_two_processes", "one_gpu_process", "gpu_without_a_config"],
)
def test_no_deepspeed_config_where_the_folds_train_without_deepspeed(training, on_gpu):
    assert resolved_deepspeed_config(training, on_gpu) == {}


def test_a_deepspeed_value_that_contradicts_the_arguments_stops_the_run_before_any_fold():
    config = {**json.loads((DEEPSPEED / "zero1.json").read_text()), "train_micro_batch_size_per_gpu": 8}
    training = recipe(gpu_arguments={**recipe().gpu_arguments, "deepspeed": config}, launcher={"nproc_per_node": 2})
    with pytest.raises(ValueError, match="train_micro_batch_size_per_gpu=8 vs hf per_device_train_batch_size=16"):
        resolved_deepspeed_config(training, on_gpu=True)


def test_the_deepspeed_launchers_hostfile_gives_the_world_size(tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("# two nodes\nnode1 slots=8\nnode2 slots=4\n")
    launcher = {"program": "deepspeed", "hostfile": str(hostfile)}
    assert LauncherSettings.from_params(launcher).world_size == 12
    assert resolved_deepspeed_config(recipe(launcher=launcher), on_gpu=True)["train_batch_size"] == 12 * 16
    with pytest.raises(FileNotFoundError, match="training.launcher.hostfile"):
        _ = LauncherSettings(program="deepspeed", hostfile=str(tmp_path / "missing")).world_size
    # the deepspeed launcher is handed the same hostfile, and the fold's work folder for its workers
    command = launch_command(LauncherSettings.from_params(launcher), tmp_path / "fold_0")
    assert command[1:4] == ["-m", "deepspeed.launcher.runner", "--module"]
    assert command[command.index("--hostfile") + 1] == str(hostfile)
    assert command[-2:] == ["sentence_reduction.finetune.worker", str(tmp_path / "fold_0")]


def test_an_unknown_launcher_stops_with_one_line_naming_it():
    with pytest.raises(
        ValueError, match="^training.launcher.program must be one of torchrun, deepspeed, not 'mpirun'$"
    ):
        TrainingSettings.from_params({"launcher": {"program": "mpirun"}})


def test_each_fold_trains_with_the_runs_deepspeed_config(tmp_path, monkeypatch):
    jobs, work_dirs = [], []

    def run_fold(job, work_dir):
        jobs.append(job)
        work_dirs.append(work_dir)
        return FoldResult(SavedModel(tmp_path), np.full((1, 2), 0.5), np.full((1, 2), 0.5), {})

    monkeypatch.setattr(fine_tuning, "run_fold", run_fold)
    model_input = pd.DataFrame({"id": ["a", "b"], "fact": ["罪犯甲", "罪犯乙"], "class_id": [0, 1], "label": [0, 1]})
    fold_assignments = pd.DataFrame({"id": ["a", "b"], "fold": [0, 1]})
    test_cases = pd.DataFrame({"id": ["t"], "fact": ["罪犯丙"]})
    class_table = pd.DataFrame({"months": [0, 1]})
    training = recipe(work_dir=str(tmp_path), launcher={"nproc_per_node": 2})
    resolved = resolved_deepspeed_config(training, on_gpu=True)
    for deepspeed_config in (resolved, {}):
        fine_tuning.train_fold(
            model_input,
            fold_assignments,
            test_cases,
            build_tokenizer(SPECIAL_TOKENS),
            class_table,
            deepspeed_config,
            {},
            dataclasses.asdict(training),  # as the node is handed the candidate's `training`
            candidate="megatron_bert",
            fold=0,
        )
    with_deepspeed, without = jobs
    assert with_deepspeed.name == "megatron_bert.fold_0"
    assert work_dirs == [tmp_path / "megatron_bert" / "fold_0"] * 2  # work_dir/<candidate>/fold_<n>
    assert with_deepspeed.training.gpu_arguments == {**training.gpu_arguments, "deepspeed": resolved}
    assert dataclasses.replace(with_deepspeed.training, gpu_arguments=training.gpu_arguments) == training
    # Without DeepSpeed the fold's parameters, so its fingerprint, are the previous version's: its result is reused.
    assert without.training == training


def test_the_runs_deepspeed_config_is_logged_once_into_its_mlflow_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    train = create_train_pipeline(2, ["megatron_bert"])
    node = next(node for node in train.nodes if node.name == "megatron_bert.resolve_deepspeed_config")
    config = resolved_deepspeed_config(recipe(launcher={"nproc_per_node": 2}), on_gpu=True)
    hooks = FoldTrackingHooks()
    experiment = mlflow.create_experiment("sentence-reduction", artifact_location=str(tmp_path / "artifacts"))
    for logged in (config, {}):
        with mlflow.start_run(experiment_id=experiment) as run:
            hooks.after_node_run(node, {"megatron_bert.deepspeed_config": logged})
        artifacts = [item.path for item in mlflow.MlflowClient().list_artifacts(run.info.run_id)]
        if logged:
            assert artifacts == ["megatron_bert_deepspeed_config.json"]
            assert mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/megatron_bert_deepspeed_config.json") == config
        else:
            assert artifacts == []  # no DeepSpeed, nothing to log
