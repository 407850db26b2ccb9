"""The fine-tuning engine: the real model's formats, the character vocabulary, a fold's training,
resume and reuse of a finished fold, determinism on the CPU, and several processes."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from transformers import TrainerCallback

from sentence_reduction.finetune.arguments import TrainingSettings
from sentence_reduction.finetune.engine import run_fold
from sentence_reduction.finetune.fold_cache import finished_fingerprint
from sentence_reduction.finetune.job import FoldJob
from sentence_reduction.finetune.launcher import FoldTrainingError
from sentence_reduction.finetune.model import ModelSettings, build_model, compile_layers
from sentence_reduction.finetune.predictor import Predictor, predict_probabilities
from sentence_reduction.finetune.text import build_character_vocabulary, build_tokenizer, read_vocabulary
from sentence_reduction.finetune.trainer import (
    CheckpointEveryMinutes,
    FoldTrainer,
    build_trainer,
    in_training_evaluation_rows,
)
from tests.conftest import REFERENCE_MODEL, RULINGS, STEPPED_TRAINING, free_port

TINY_MODEL = {
    "config": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
    "max_length": 48,
    "fused_attention": True,
}


def tiny_job(**changes) -> FoldJob:
    texts = RULINGS * 3
    values = {
        "name": "fold_0",
        "train_texts": texts[:16],
        "train_labels": [index % 4 for index in range(16)],
        "eval_texts": texts[16:],
        "eval_labels": [index % 4 for index in range(8)],
        "predict_texts": RULINGS[:5],
        "tokenizer": build_tokenizer(build_character_vocabulary(texts)),
        "class_months": [0, 1, 2, 3],
        "model": TINY_MODEL,
        "training": STEPPED_TRAINING,
    }
    return FoldJob(**{**values, **changes})


@pytest.mark.skipif(not REFERENCE_MODEL.is_dir(), reason="needs ../shared/reference beside the checkout")
def test_real_erlangshen_config_and_vocabulary(tmp_path):
    """The real-weights path reads the real formats: config.json, vocab.txt, safetensors round trip."""
    vocabulary = read_vocabulary(REFERENCE_MODEL / "vocab.txt")
    assert len(vocabulary) == 21128 and vocabulary[101] == "[CLS]"
    tokenizer = build_tokenizer(vocabulary)
    encoded = tokenizer(RULINGS[:2], truncation=True, max_length=32, padding=True, return_tensors="pt")
    assert encoded["input_ids"][0, 0].item() == 101 and (encoded["input_ids"] != 100).all()

    settings = ModelSettings(
        config_path=str(REFERENCE_MODEL / "config.json"), config_overrides={"num_hidden_layers": 1}
    )
    model = build_model(settings, num_labels=34, vocab_size=len(vocabulary))
    assert model.config.hidden_size == 2048 and model.config.vocab_size == 21248
    assert model.config.num_attention_heads == 8 and model.config.intermediate_size == 8192
    labels = torch.tensor([3, 12])
    output = model(**encoded, labels=labels)
    assert output.logits.shape == (2, 34)
    output.loss.backward()
    assert (
        model.classifier.weight.grad is not None and model.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    )

    model.eval()
    with torch.no_grad():
        before = model(**encoded).logits
    model.save_pretrained(tmp_path / "model")
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert not list((tmp_path / "model").glob("*.bin"))
    reloaded = build_model(ModelSettings(pretrained_path=str(tmp_path / "model")), num_labels=34, vocab_size=0)
    reloaded.eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(**encoded).logits, before, atol=1e-5)


def test_character_vocabulary_spells_every_text():
    vocabulary = build_character_vocabulary(RULINGS)
    assert vocabulary[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = build_tokenizer(vocabulary)
    for text in RULINGS:
        tokens = tokenizer.tokenize(text)
        assert "[UNK]" not in tokens
        assert "".join(token.removeprefix("##") for token in tokens) == text.lower()
    frequent_only = build_character_vocabulary(RULINGS, min_frequency=2)
    assert "受" in vocabulary and "受" not in frequent_only  # 受贿 occurs once
    assert "罪" in frequent_only


def test_a_fold_trains_and_its_finished_result_is_reused(tmp_path, caplog):
    job = tiny_job()
    result = run_fold(job, tmp_path / "fold_0")
    assert result.eval_probabilities.shape == (8, 4)
    assert result.predict_probabilities.shape == (5, 4)
    assert np.allclose(result.eval_probabilities.sum(axis=1), 1, atol=1e-5)
    assert {"loss", "accuracy", "f1_weighted", "score", "ext_acc", "final_score"} <= set(result.metrics)
    assert finished_fingerprint(tmp_path / "fold_0") == job.fingerprint()
    assert sorted(path.name for path in (tmp_path / "fold_0" / "result").iterdir()) == [
        "eval_probabilities.npy",
        "fingerprint",
        "metrics.json",
        "model",
        "predict_probabilities.npy",
    ]  # the DeepSpeed config is the run's (`deepspeed_config`), not each fold's
    assert not (tmp_path / "fold_0" / "checkpoints").exists()  # spent checkpoints are removed
    assert (tmp_path / "fold_0" / "result" / "model" / "model.safetensors").is_file()

    # probabilities follow the texts' order (length-grouped batches are for training only)
    direct = predict_probabilities(result.model.load(), job.load_tokenizer(), job.eval_texts, job.model, job.training)
    assert np.allclose(direct, result.eval_probabilities, atol=1e-5)
    assert len({len(text) for text in job.eval_texts}) > 1

    with caplog.at_level(logging.INFO):
        again = run_fold(job, tmp_path / "fold_0")
    assert "not retraining" in caplog.text
    assert np.array_equal(again.eval_probabilities, result.eval_probabilities)

    changed = run_fold(tiny_job(train_labels=[index % 3 for index in range(16)]), tmp_path / "fold_0")
    assert not np.array_equal(changed.eval_probabilities, result.eval_probabilities)


@pytest.mark.slow
def test_same_seed_same_predictions_on_cpu(tmp_path):
    first = run_fold(tiny_job(), tmp_path / "first")
    second = run_fold(tiny_job(), tmp_path / "second")
    assert np.array_equal(first.eval_probabilities, second.eval_probabilities)
    assert np.array_equal(first.predict_probabilities, second.predict_probabilities)
    timing = {"runtime", "samples_per_second", "steps_per_second"}
    assert {k: v for k, v in first.metrics.items() if k not in timing} == {
        k: v for k, v in second.metrics.items() if k not in timing
    }
    other_seed = {**STEPPED_TRAINING, "arguments": {**STEPPED_TRAINING["arguments"], "seed": 8}}
    third = run_fold(tiny_job(training=other_seed), tmp_path / "third")
    assert not np.array_equal(first.eval_probabilities, third.eval_probabilities)


def two_processes() -> dict[str, int]:
    return {"nproc_per_node": 2, "master_port": free_port()}


@pytest.mark.slow
def test_two_processes_on_the_cpu_train_one_fold(tmp_path):
    job = tiny_job(training={**STEPPED_TRAINING, "launcher": two_processes()})
    result = run_fold(job, tmp_path / "fold_0")
    assert result.eval_probabilities.shape == (8, 4)
    assert result.predict_probabilities.shape == (5, 4)
    assert np.allclose(result.predict_probabilities.sum(axis=1), 1, atol=1e-5)
    assert json.loads((tmp_path / "fold_0" / "job.json").read_text())["name"] == "fold_0"


@pytest.mark.slow
def test_a_failing_rank_fails_the_fold_with_its_message(tmp_path):
    broken = {
        **STEPPED_TRAINING,
        "launcher": two_processes(),
        "arguments": {**STEPPED_TRAINING["arguments"], "lr_scheduler_type": "no_such_schedule"},
    }
    with pytest.raises(FoldTrainingError, match=r"fold_0: rank \d failed: ValueError: .*no_such_schedule"):
        run_fold(tiny_job(training=broken), tmp_path / "fold_0")


def short_training(tmp_path, name: str, **training) -> FoldTrainer:
    """A tiny job's trainer after 6 optimizer steps with torch's fused AdamW, logging every step."""
    arguments = {
        **STEPPED_TRAINING["arguments"],
        "optim": "adamw_torch_fused",
        "max_steps": 6,
        "eval_strategy": "no",
        "save_strategy": "no",
    }
    arguments.update(training.pop("arguments", {}))
    trainer = build_trainer(
        tiny_job(training={**STEPPED_TRAINING, "arguments": arguments, **training}), tmp_path / name
    )
    trainer.train()
    return trainer


def parameters_of(trainer: FoldTrainer) -> torch.Tensor:
    return torch.cat([parameter.detach().flatten() for parameter in trainer.model.parameters()])


def test_clipping_inside_fused_adamw_is_the_trainers_clip(tmp_path):
    """Clipping as the fused AdamW's gradient scale updates the weights as the Trainer's clip does."""
    inside = short_training(tmp_path, "inside", clip_in_fused_optimizer=True, arguments={"max_grad_norm": 0.05})
    trainers_clip = short_training(
        tmp_path, "trainer", clip_in_fused_optimizer=False, arguments={"max_grad_norm": 0.05}
    )
    unclipped = short_training(tmp_path, "unclipped", arguments={"max_grad_norm": 0})

    optimizer = inside._fused_adam_to_clip_in()
    assert optimizer is not None and trainers_clip._fused_adam_to_clip_in() is None
    assert optimizer.grad_scale > 1  # the last step was clipped, inside the optimizer
    norms_inside = [entry["grad_norm"] for entry in inside.state.log_history if "grad_norm" in entry]
    norms_trainer = [entry["grad_norm"] for entry in trainers_clip.state.log_history if "grad_norm" in entry]
    assert len(norms_inside) == 6 and min(norms_inside) > 0.05
    assert np.allclose(norms_inside, norms_trainer, rtol=1e-5)
    assert torch.allclose(parameters_of(inside), parameters_of(trainers_clip), atol=1e-6)
    assert not torch.allclose(parameters_of(inside), parameters_of(unclipped), atol=1e-5)


def test_bf16_master_weights_train_bf16_weights_from_fp32_masters_with_the_trainers_clip(tmp_path):
    """`training.bf16_master_weights`: the Trainer's optimizer is `MasterWeightAdamW`, the model's
    weights are bf16 roundings of its fp32 masters, and the clip happens inside its update."""
    from sentence_reduction.finetune.master_weights import MasterWeightAdamW

    trainer = short_training(tmp_path, "master", bf16_master_weights=True, arguments={"max_grad_norm": 0.05})
    optimizer = trainer.optimizer.optimizer  # inside accelerate's wrapper
    assert isinstance(optimizer, MasterWeightAdamW)
    assert {parameter.dtype for parameter in trainer.model.parameters()} == {torch.bfloat16}
    for parameter in trainer.model.parameters():
        state = optimizer.state[parameter]
        assert state["master"].dtype == torch.float32 and float(state["step"]) == 6
        assert torch.equal(parameter.detach(), state["master"].to(torch.bfloat16))
    norms = [entry["grad_norm"] for entry in trainer.state.log_history if "grad_norm" in entry]
    assert len(norms) == 6 and min(norms) > 0.05  # every step was clipped


def test_bf16_master_weights_refuse_an_optimizer_other_than_adamw(tmp_path):
    training = {
        **STEPPED_TRAINING,
        "bf16_master_weights": True,
        "arguments": {**STEPPED_TRAINING["arguments"], "optim": "adafactor"},
    }
    with pytest.raises(ValueError, match="bf16_master_weights.*adamw_torch.*not optim adafactor"):
        build_trainer(tiny_job(training=training), tmp_path / "adafactor")


def test_inductor_settings_hold_while_the_fold_trains(tmp_path):
    import torch._inductor.config as inductor_config

    seen = []

    class RecordSetting(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            seen.append(inductor_config.triton.multi_kernel)

    arguments = {**STEPPED_TRAINING["arguments"], "max_steps": 2, "eval_strategy": "no", "save_strategy": "no"}
    job = tiny_job(training={**STEPPED_TRAINING, "arguments": arguments, "inductor_config": {"triton.multi_kernel": 1}})
    trainer = build_trainer(job, tmp_path / "run")
    trainer.add_callback(RecordSetting())
    trainer.train()
    assert seen == [1, 1] and inductor_config.triton.multi_kernel == 0

    misspelt = tiny_job(
        training={**STEPPED_TRAINING, "arguments": arguments, "inductor_config": {"triton.multikernel": 1}}
    )
    with pytest.raises(AttributeError, match="triton.multikernel does not exist"):
        build_trainer(misspelt, tmp_path / "misspelt").train()


def test_in_training_evaluation_is_a_fixed_stratified_sample_of_the_held_out_fold():
    labels = [0] * 600 + [1] * 300 + [2] * 100
    rows = in_training_evaluation_rows(labels, fraction=0.1, min_rows=20, seed=3)
    assert len(rows) == 100 and len(set(rows)) == 100 and list(rows) == sorted(rows)
    assert np.bincount(np.asarray(labels)[rows]).tolist() == [60, 30, 10]
    assert np.array_equal(rows, in_training_evaluation_rows(labels, fraction=0.1, min_rows=20, seed=3))
    assert not np.array_equal(rows, in_training_evaluation_rows(labels, fraction=0.1, min_rows=20, seed=4))
    assert len(in_training_evaluation_rows(labels, fraction=0.001, min_rows=50, seed=3)) == 50
    assert np.array_equal(in_training_evaluation_rows(labels, 1.0, 0, seed=3), np.arange(1000))
    # a class of a single row cannot be stratified: a plain random sample instead
    assert len(in_training_evaluation_rows([0] * 9 + [1], fraction=0.5, min_rows=0, seed=3)) == 5


def test_training_evaluates_on_the_sample_and_predicts_the_whole_held_out_fold(tmp_path):
    training = {**STEPPED_TRAINING, "in_training_evaluation": {"fraction": 0.25, "min_rows": 2}}
    trainer = build_trainer(tiny_job(training=training), tmp_path / "checkpoints")
    assert len(trainer.eval_dataset) == 2
    result = run_fold(tiny_job(training=training), tmp_path / "fold_0")
    assert result.eval_probabilities.shape == (8, 4)


@pytest.mark.slow
@pytest.mark.parametrize("region", ["model", "layers", "encoder"])
def test_compiled_training_keeps_one_graph_for_batches_of_every_length(tmp_path, region):
    """Texts of many lengths padded per batch, a short last batch, evaluation on the way: compiled
    once for training (torch.compile would otherwise recompile when the second batch's length
    differs). Regional compilation also compiles evaluation's forward: its one graph more."""
    regional = region != "model"
    torch._dynamo.reset()
    texts = [("罪犯某因盗窃罪判处有期徒刑三年" * 5)[: 6 + 2 * index] for index in range(24)]
    arguments = {
        **STEPPED_TRAINING["arguments"],
        "torch_compile": True,
        "num_train_epochs": 1,
        "per_device_train_batch_size": 3,
        "save_strategy": "no",
    }
    training = {**STEPPED_TRAINING, "arguments": arguments, "compiled_region": region}
    job = tiny_job(train_texts=texts[:16], eval_texts=texts[16:], training=training)
    trainer = build_trainer(job, tmp_path / "checkpoints")
    assert trainer.args.torch_compile is not regional  # the layers are compiled by the engine instead
    lengths = []
    prepare = trainer._prepare_inputs
    trainer._prepare_inputs = lambda inputs: (lengths.append(inputs["input_ids"].shape[1]), prepare(inputs))[1]
    counters = torch._dynamo.utils.counters
    counters.clear()
    trainer.train()
    assert trainer.state.global_step == 5  # 16 texts in batches of 3: the short last one is dropped
    assert len(set(lengths)) >= 4
    assert trainer.state.log_history and any("eval_loss" in entry for entry in trainer.state.log_history)
    assert counters["stats"]["unique_graphs"] == (2 if regional else 1)
    assert not counters["graph_break"]


def test_regional_compilation_compiles_the_region_in_the_compile_mode_and_not_the_whole_model(tmp_path, monkeypatch):
    """`torch_compile_mode` goes to the layers' compilation; left to the Trainer, it would switch its
    whole-model compilation back on."""
    modes = []
    compile_function = torch.compile
    monkeypatch.setattr(
        torch,
        "compile",
        lambda *args, **kwargs: (modes.append(kwargs.get("mode")), compile_function(*args, **kwargs))[1],
    )
    arguments = {**STEPPED_TRAINING["arguments"], "torch_compile": True, "torch_compile_mode": "reduce-overhead"}
    training = {**STEPPED_TRAINING, "arguments": arguments, "compiled_region": "layers"}
    trainer = build_trainer(tiny_job(training=training), tmp_path / "checkpoints")
    assert modes == ["reduce-overhead"] * len(trainer.model.base_model.encoder.layer)
    assert trainer.args.torch_compile is False and trainer.args.torch_compile_mode is None
    modes.clear()
    training = {**training, "compiled_region": "encoder"}
    trainer = build_trainer(tiny_job(training=training), tmp_path / "encoder")
    assert modes == ["reduce-overhead"]  # the stack of layers, once
    assert trainer.args.torch_compile is False and trainer.args.torch_compile_mode is None


def test_an_unknown_compiled_region_is_refused():
    with pytest.raises(ValueError, match="training.compiled_region: 'layer' is not one of layers, encoder, model"):
        TrainingSettings.from_params({"compiled_region": "layer"})


@pytest.mark.slow
def test_compiled_layers_match_eager_and_serve_a_later_model_without_compiling():
    """`compile_layers`: the same logits as eager for batches with and without a mask, of several
    lengths; a second model (a later fold) reuses the graphs: nothing is compiled again."""
    torch._dynamo.reset()
    settings = ModelSettings.from_params({**TINY_MODEL, "config": {**TINY_MODEL["config"], "num_hidden_layers": 3}})
    batches = [
        {"input_ids": torch.randint(5, 60, (4, 16)), "attention_mask": torch.ones(4, 16, dtype=torch.long)},
        {"input_ids": torch.randint(5, 60, (3, 24))},
        {"input_ids": torch.randint(5, 60, (2, 8)), "attention_mask": torch.tensor([[1] * 8, [1] * 5 + [0] * 3])},
    ]
    counters = torch._dynamo.utils.counters
    counters.clear()
    for fold in range(2):
        torch.manual_seed(fold)
        model = build_model(settings, num_labels=4, vocab_size=64).eval()
        with torch.inference_mode():
            eager = [model(**batch).logits for batch in batches]
            compile_layers(model, dynamic=True)
            compiled = [model(**batch).logits for batch in batches]
        for expected, got in zip(eager, compiled):
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
        if fold == 0:
            graphs = counters["stats"]["unique_graphs"]
            assert graphs == 2  # the layer's graph with a mask and without one, for every layer
    assert counters["stats"]["unique_graphs"] == graphs


def test_predictions_in_chunks_keep_the_texts_order_and_equal_each_text_alone():
    """`Predictor` tokenises the next chunk while this one runs: chunks of one batch, the last one
    short, give each text the probabilities it gets alone, in the order the texts came."""
    texts = [RULINGS[index % len(RULINGS)][: 12 + 5 * index] for index in range(7)]  # 7 lengths
    tokenizer = build_tokenizer(build_character_vocabulary(texts))
    settings = ModelSettings.from_params(TINY_MODEL)
    torch.manual_seed(0)
    model = build_model(settings, num_labels=4, vocab_size=len(tokenizer))
    training = TrainingSettings.from_params({"arguments": {"per_device_eval_batch_size": 2}})
    predictor = Predictor(model, tokenizer, settings, training)
    alone = np.concatenate([predictor([text]) for text in texts])
    predictor.CHUNK_BATCHES = 1
    in_chunks = predictor(texts)
    assert in_chunks.shape == (7, 4)
    np.testing.assert_allclose(in_chunks, alone, atol=1e-6)
    assert len({tuple(row) for row in np.round(alone, 6)}) == 7  # the rows differ: order is tested
    assert predictor([]).shape == (0, 4)


def test_a_checkpoint_is_asked_for_once_its_minutes_have_passed():
    class State:
        logging_steps = 2
        global_step = 0

    class Control:
        should_save = False

    callback = CheckpointEveryMinutes(minutes=0.5)
    state, control = State(), Control()
    callback.on_train_begin(None, state, control)
    state.global_step = 2
    callback.on_step_end(None, state, control)
    assert not control.should_save
    callback.last_save -= 31
    state.global_step = 3  # not a logging step: not checked
    callback.on_step_end(None, state, control)
    assert not control.should_save
    state.global_step = 4
    callback.on_step_end(None, state, control)
    assert control.should_save
    callback.on_save(None, state, control)
    control.should_save = False
    state.global_step = 6
    callback.on_step_end(None, state, control)
    assert not control.should_save
