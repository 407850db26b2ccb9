"""Continued masked-LM pretraining: texts read whole in pieces, whole-word masking, the checkpoint's own
masked-LM head, a model folder a candidate fine-tunes from, resume and reuse, the `pretrain` pipeline
with its MLflow run, and the benchmark script."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM, AutoTokenizer, BertConfig, BertForMaskedLM, BertModel, TrainerCallback

from sentence_reduction.finetune.model import ModelSettings, build_masked_lm, build_model
from sentence_reduction.finetune.pretraining import (
    PretrainingJob,
    PretrainingSettings,
    build_pretraining_trainer,
    run_pretraining,
)
from sentence_reduction.finetune.text import (
    MaskedLanguageTexts,
    build_character_vocabulary,
    build_tokenizer,
    masking_collator,
)
from sentence_reduction.input_errors import InputDataError
from sentence_reduction.pipelines.pretrain.nodes import pretrain_encoder
from sentence_reduction.pipelines.train.transformer import prepare_tokenizer
from tests.conftest import RULINGS, TINY_MODEL_PARAMETERS, copy_project, free_port, run_kedro

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
SEGMENTED = ["运输 毒品 罪 有期徒刑 十五年 罪犯 确有 悔改 表现 可予 减刑", "盗窃 罪 有期徒刑 三年 获得 表扬 两次"]


def tiny_job(**changes) -> PretrainingJob:
    values = {
        "name": "bert.pretraining",
        "texts": RULINGS * 4,
        "eval_texts": RULINGS[:2],
        "tokenizer": build_tokenizer(build_character_vocabulary(RULINGS)),
        "model": {"architecture": "bert", "config": TINY, "max_length": 32},
        "training": {
            "arguments": {
                "num_train_epochs": 2,
                "per_device_train_batch_size": 8,
                "per_device_eval_batch_size": 8,
                "learning_rate": 2e-3,
                "eval_strategy": "steps",
                "eval_steps": 4,
                "save_strategy": "steps",
                "save_steps": 4,
                "logging_steps": 1,
                "seed": 3,
                "report_to": "none",
                "disable_tqdm": True,
            }
        },
        "mask_probability": 0.3,
    }
    return PretrainingJob(**{**values, **changes})


# Texts and masking -------------------------------------------------------------------------------------


def test_a_long_text_is_read_whole_in_pieces_each_between_the_special_tokens():
    tokenizer = build_tokenizer(build_character_vocabulary(RULINGS))
    pieces = MaskedLanguageTexts(tokenizer, RULINGS[:2], max_length=16)
    content = [ids for ids in tokenizer(RULINGS[:2], add_special_tokens=False)["input_ids"]]
    assert len(pieces) == sum(-(-len(ids) // 14) for ids in content)
    spelled = []
    for piece in pieces.pieces:
        ids = piece["input_ids"].tolist()
        assert len(ids) <= 16 and ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
        assert piece["special_tokens_mask"].tolist() == [1] + [0] * (len(ids) - 2) + [1]
        spelled += ids[1:-1]
    assert spelled == content[0] + content[1]  # every token once, in order


def test_whole_word_masking_masks_every_character_of_a_segmented_word_together():
    tokenizer = build_tokenizer(build_character_vocabulary(SEGMENTED))
    pieces = MaskedLanguageTexts(tokenizer, SEGMENTED * 8, max_length=64, word_offsets=True)
    batch = masking_collator(tokenizer, on_gpu=False, mask_probability=0.3, whole_word_mask=True, seed=0)(
        [pieces[index] for index in range(len(pieces))]
    )
    masked = batch["labels"] != -100
    assert 0.1 < masked.float().sum() / batch["attention_mask"].sum() < 0.6
    assert (batch["input_ids"][masked] == tokenizer.mask_token_id).all()
    for row in range(len(pieces)):
        offsets = pieces[row]["offset_mapping"].tolist()
        text = (SEGMENTED * 8)[row]
        words = {}  # word index in the text -> whether each of its characters is masked
        for position, (start, end) in enumerate(offsets):
            if end > start:
                words.setdefault(text[:start].count(" "), set()).add(bool(masked[row, position]))
        assert all(len(flags) == 1 for flags in words.values()), words  # all of a word, or none of it


@pytest.mark.parametrize("whole_words", [True, False])
def test_the_trainers_batches_carry_the_special_tokens_and_word_offsets_to_the_masking(tmp_path, whole_words):
    job = tiny_job(
        texts=SEGMENTED * 16,
        tokenizer=build_tokenizer(build_character_vocabulary(SEGMENTED)),
        whole_word_masking=whole_words,
        model={"architecture": "bert", "config": TINY, "max_length": 64},
    )
    trainer = build_pretraining_trainer(job, tmp_path / "checkpoints")
    batch = next(iter(trainer.get_train_dataloader()))
    tokenizer = job.load_tokenizer()
    masked = batch["labels"] != -100
    special = torch.isin(batch["labels"], torch.tensor([tokenizer.cls_token_id, tokenizer.sep_token_id]))
    assert masked.any() and not special.any()  # the special tokens are never masked
    as_mask_token = (batch["input_ids"][masked] == tokenizer.mask_token_id).float().mean()
    assert (as_mask_token == 1.0) if whole_words else (as_mask_token < 0.95)  # whole words: always [MASK]


def test_without_padding_the_masked_batch_can_go_without_an_attention_mask():
    tokenizer = build_tokenizer(build_character_vocabulary(RULINGS))
    pieces = MaskedLanguageTexts(tokenizer, [RULINGS[0][:14], RULINGS[1][:14]], max_length=16)
    features = [pieces[0], pieces[1]]
    assert "attention_mask" not in masking_collator(tokenizer, False, 0.15, False, 0, omit_full_mask=True)(features)
    assert "attention_mask" in masking_collator(tokenizer, False, 0.15, False, 0)([pieces[0], pieces[1]])


# The model and its head --------------------------------------------------------------------------------


def test_a_checkpoints_own_masked_lm_head_is_kept_and_a_missing_one_is_new(tmp_path, caplog):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=60, max_position_embeddings=64, **TINY)
    BertForMaskedLM(config).save_pretrained(tmp_path / "with_head")
    BertModel(config, add_pooling_layer=False).save_pretrained(tmp_path / "without_head")
    with caplog.at_level(logging.INFO):
        with_head = build_masked_lm(ModelSettings(pretrained_path=str(tmp_path / "with_head")), vocab_size=60)
        without_head = build_masked_lm(ModelSettings(pretrained_path=str(tmp_path / "without_head")), vocab_size=60)
    saved = load_file(tmp_path / "with_head" / "model.safetensors")
    head = "cls.predictions.transform.dense.weight"
    assert torch.equal(with_head.state_dict()[head], saved[head])
    assert not torch.equal(without_head.state_dict()[head], saved[head])
    reports = [message for message in caplog.messages if "BertForMaskedLM from" in message]
    assert "new: none" in reports[0] and "new: cls.predictions" in reports[1], reports


LOAD_SCRIPT = """
import logging, sys
from sentence_reduction.finetune.model import ModelSettings, build_masked_lm
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
print("loading", file=sys.stderr, flush=True)
build_masked_lm(ModelSettings(pretrained_path=sys.argv[1]), vocab_size=60)
"""


def test_a_checkpoint_without_a_masked_lm_head_loads_with_one_line_and_no_warning(tmp_path):
    """transformers warns that such a checkpoint "seem corrupted" (its tied head's bias is absent): the
    one log line names the head as new instead."""
    BertModel(BertConfig(vocab_size=60, max_position_embeddings=64, **TINY)).save_pretrained(tmp_path / "encoder")
    completed = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, str(tmp_path / "encoder")],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    lines = [line for line in completed.stderr.split("loading\n", 1)[1].splitlines() if line.strip()]
    assert len(lines) == 1 and "new: cls.predictions.bias" in lines[0], lines


# A job: the folder it writes, resume and reuse ----------------------------------------------------------


def test_pretraining_writes_a_model_folder_that_a_candidate_fine_tunes_from(tmp_path):
    job = tiny_job()
    folder = run_pretraining(job, tmp_path / "work")
    assert sorted(path.name for path in folder.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    metrics = json.loads((folder.parent / "metrics.json").read_text())
    assert metrics["eval_loss"] > 0 and metrics["eval_perplexity"] > 1
    assert isinstance(AutoModelForMaskedLM.from_pretrained(folder), BertForMaskedLM)
    tokenizer = prepare_tokenizer(pd.DataFrame({"fact": RULINGS}), {"pretrained_path": str(folder)})
    assert tokenizer(RULINGS)["input_ids"] == job.load_tokenizer()(RULINGS)["input_ids"]
    classifier = build_model(ModelSettings(pretrained_path=str(folder)), num_labels=3, vocab_size=len(tokenizer))
    pretrained = load_file(folder / "model.safetensors")
    encoder = {name: value for name, value in classifier.state_dict().items() if name.startswith("bert.encoder.")}
    assert encoder and all(torch.equal(value, pretrained[name]) for name, value in encoder.items())


def test_the_masked_lm_loss_falls_on_the_texts_trained_on(tmp_path):
    job = tiny_job(eval_texts=RULINGS)
    before = build_pretraining_trainer(job, tmp_path / "before").evaluate()["eval_loss"]
    folder = run_pretraining(job, tmp_path / "work")
    assert json.loads((folder.parent / "metrics.json").read_text())["eval_loss"] < before - 0.3


class _Killed(Exception):
    pass


@pytest.mark.slow
def test_a_killed_pretraining_resumes_from_its_checkpoint_and_a_finished_one_is_reused(tmp_path, caplog, monkeypatch):
    job = tiny_job()
    work = tmp_path / "work"

    class KillAfterSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise _Killed(f"killed after checkpoint-{state.global_step}")

    import sentence_reduction.finetune.pretraining as pretraining

    original = pretraining.build_pretraining_trainer

    def killed_once(*arguments, **keywords):
        trainer = original(*arguments, **keywords)
        trainer.add_callback(KillAfterSave())
        return trainer

    monkeypatch.setattr(pretraining, "build_pretraining_trainer", killed_once)
    with pytest.raises(_Killed):
        run_pretraining(job, work)
    assert (work / "checkpoints" / "checkpoint-4" / "trainer_state.json").is_file()
    assert not (work / "result").exists()
    monkeypatch.setattr(pretraining, "build_pretraining_trainer", original)
    with caplog.at_level(logging.INFO):
        folder = run_pretraining(job, work)
        written = (folder / "model.safetensors").stat().st_mtime_ns
        again = run_pretraining(job, work)
    assert f"bert.pretraining: resuming from {work / 'checkpoints' / 'checkpoint-4'}" in caplog.messages
    assert any("finished result found" in message for message in caplog.messages)
    assert again == folder and (folder / "model.safetensors").stat().st_mtime_ns == written
    assert not (work / "checkpoints").exists()
    changed = tiny_job(mask_probability=0.2)  # another job: trained afresh in the same folder
    assert changed.fingerprint() != job.fingerprint()
    run_pretraining(changed, work)
    assert (work / "result" / "fingerprint").read_text() == changed.fingerprint()


@pytest.mark.slow
def test_two_processes_on_the_cpu_pretrain_through_the_launcher(tmp_path):
    training = tiny_job().training
    launched = tiny_job(
        training={
            "arguments": {**training.arguments, "save_strategy": "no"},
            "launcher": {"nproc_per_node": 2, "master_port": free_port()},
        }
    )
    folder = run_pretraining(launched, tmp_path / "work")
    assert json.loads((tmp_path / "work" / "job.json").read_text())["name"] == "bert.pretraining"
    assert isinstance(AutoModelForMaskedLM.from_pretrained(folder), BertForMaskedLM)
    assert json.loads((folder.parent / "metrics.json").read_text())["eval_loss"] > 0


# The Kedro node and pipeline ----------------------------------------------------------------------------


def test_a_bad_model_folder_stops_the_pretraining_node_before_anything_is_written(tmp_path):
    folder = tmp_path / "no_weights"
    BertConfig(vocab_size=60, **TINY).save_pretrained(folder)
    build_tokenizer(build_character_vocabulary(RULINGS)).save_pretrained(folder)
    cases = pd.DataFrame({"id": ["a"], "fact": [RULINGS[0]]})
    with pytest.raises(InputDataError, match="no weights"):
        pretrain_encoder(
            cases, cases, {"pretrained_path": str(folder)}, {"work_dir": str(tmp_path / "work")}, {}, {}, "bert"
        )
    assert not (tmp_path / "work").exists()


def test_the_pretraining_parameters_refuse_an_unknown_one_and_hold_out_a_share_of_the_texts():
    with pytest.raises(ValueError, match="pretraining: unknown parameter"):
        PretrainingSettings.from_params({"mask_rate": 0.2})
    kept, held_out = PretrainingSettings(held_out_fraction=0.25).split([str(index) for index in range(8)], seed=1)
    assert len(held_out) == 2 and sorted(kept + held_out, key=int) == [str(index) for index in range(8)]
    assert PretrainingSettings(held_out_fraction=0.0).split(["a", "b"], seed=1) == (["a", "b"], [])


def test_with_no_text_held_out_the_pretraining_trains_without_evaluating(tmp_path):
    folder = run_pretraining(tiny_job(eval_texts=[]), tmp_path / "work")
    assert (folder / "model.safetensors").is_file()
    assert json.loads((folder.parent / "metrics.json").read_text()) == {}


PRETRAIN_PARAMETERS = (
    TINY_MODEL_PARAMETERS
    + """
pretraining:
  training:
    arguments: {max_steps: 6, eval_steps: 3, save_steps: 3, logging_steps: 1, disable_tqdm: true}
"""
)


@pytest.mark.slow
def test_the_pretrain_pipeline_writes_the_candidates_folder_and_its_own_mlflow_run(tmp_path):
    project = copy_project(tmp_path / "project", PRETRAIN_PARAMETERS)
    completed = run_kedro(project, "run", "--pipelines=pretrain")
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    folder = project / "data" / "06_models" / "pretrained" / "megatron_bert"
    assert AutoModelForMaskedLM.from_pretrained(folder).config.model_type == "megatron-bert"
    assert len(AutoTokenizer.from_pretrained(folder)) > 100
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("sentence-reduction").experiment_id])
    nested = {run.info.run_name: run for run in runs if "mlflow.parentRunId" in run.data.tags}
    assert set(nested) == {"megatron_bert.pretraining"}
    run = nested["megatron_bert.pretraining"]
    assert run.info.status == "FINISHED" and run.data.params["candidate"] == "megatron_bert"
    assert len(client.get_metric_history(run.info.run_id, "loss")) >= 3 and "eval_loss" in run.data.metrics
