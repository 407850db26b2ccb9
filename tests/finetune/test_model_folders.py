"""Pretrained model folders as transformers saves them: every tokenizer form (vocab.txt only, tokenizer.json
only, a SentencePiece unigram, an XLM-R model's) loads through a candidate's `pretrained_path`, trains a
fold and predicts as the predict pipeline does; a broken folder stops with one line naming it."""

from __future__ import annotations

import json
import lzma
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from kedro.io import DatasetError
from tokenizers import SentencePieceUnigramTokenizer, normalizers
from tokenizers.processors import TemplateProcessing
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertModel,
    PreTrainedTokenizerFast,
    XLMRobertaConfig,
    XLMRobertaForMaskedLM,
    XLMRobertaTokenizer,
)

from sentence_reduction.datasets import ModelFolderDataset, TokenizerDataset
from sentence_reduction.finetune.job import FoldJob
from sentence_reduction.finetune.model import ModelSettings, build_model
from sentence_reduction.finetune.text import (
    build_character_vocabulary,
    build_tokenizer,
    padded_batch,
    padding_collator,
    tokenise,
)
from sentence_reduction.input_errors import InputDataError
from sentence_reduction.pipelines.train.transformer import predict_fold, prepare_tokenizer, train_fold
from tests.conftest import PROJECT_ROOT, RULINGS, TINY_TRAINING, copy_project, run_kedro, written_outputs

SAMPLE = PROJECT_ROOT / "data" / "01_raw" / "sample" / "train.csv"
E5 = PROJECT_ROOT.parent / "shared" / "reference" / "multilingual-e5-small"
TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
MAX_LENGTH = 48
SPECIALS = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "sep_token": "</s>",
    "cls_token": "<s>",
    "pad_token": "<pad>",
    "mask_token": "<mask>",
}


def _unigram_pieces(normalised: bool = True) -> SentencePieceUnigramTokenizer:
    """A SentencePiece unigram model trained with the `tokenizers` library on the sample's rulings; on the
    texts as they are unless ``normalised`` (NFKC, the library's default)."""
    texts = pd.read_csv(SAMPLE)["fact"].head(300).tolist()
    unigram = SentencePieceUnigramTokenizer()
    if not normalised:  # XLM-R's tokenizer applies no NFKC of its own: its pieces are the texts' own
        unigram.normalizer = normalizers.Sequence([])
    unigram.train_from_iterator(
        texts, vocab_size=2000, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], unk_token="<unk>"
    )
    return unigram


def _save(folder: Path, model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast | None = None) -> Path:
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder


def vocab_txt_folder(folder: Path) -> Path:
    """A BERT with its masked-LM head and a vocab.txt alone, as Erlangshen and the Chinese BERTs ship."""
    vocabulary = build_character_vocabulary(RULINGS)
    _save(folder, BertForMaskedLM(BertConfig(vocab_size=len(vocabulary), max_position_embeddings=64, **TINY)))
    (folder / "vocab.txt").write_text("\n".join(vocabulary) + "\n", encoding="utf-8")
    return folder


def tokenizer_json_folder(folder: Path) -> Path:
    """A BERT and its tokenizer as transformers 5 saves them: tokenizer.json and tokenizer_config.json."""
    tokenizer = build_tokenizer(build_character_vocabulary(RULINGS))
    return _save(
        folder, BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), max_position_embeddings=64, **TINY)), tokenizer
    )


def sentencepiece_folder(folder: Path) -> Path:
    """A BERT encoder without a masked-LM head (as multilingual-e5) and a SentencePiece unigram tokenizer of
    its own (tokenizer.json), padding with id 1."""
    unigram = _unigram_pieces()
    unigram.post_processor = TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=unigram._tokenizer, **SPECIALS)
    config = BertConfig(vocab_size=len(tokenizer), max_position_embeddings=64, pad_token_id=1, **TINY)
    return _save(folder, BertModel(config, add_pooling_layer=False), tokenizer)


def xlm_roberta_folder(folder: Path) -> Path:
    """An XLM-R model (one token type, positions after the padding id) with XLM-R's own tokenizer over
    unigram pieces."""
    unigram = json.loads(_unigram_pieces(normalised=False)._tokenizer.to_str())["model"]
    pieces = [tuple(piece) for piece in unigram["vocab"]]
    tokenizer = XLMRobertaTokenizer(vocab=pieces)
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer), max_position_embeddings=MAX_LENGTH + 2, type_vocab_size=1, pad_token_id=1, **TINY
    )
    return _save(folder, XLMRobertaForMaskedLM(config), tokenizer)


FORMS = {
    "vocab_txt": (vocab_txt_folder, ["config.json", "model.safetensors", "vocab.txt"]),
    "tokenizer_json": (
        tokenizer_json_folder,
        ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"],
    ),
    "sentencepiece": (
        sentencepiece_folder,
        ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"],
    ),
    "xlm_roberta": (
        xlm_roberta_folder,
        ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"],
    ),
}


def _model_input() -> pd.DataFrame:
    texts = RULINGS * 2
    classes = [index % 3 for index in range(len(texts))]
    return pd.DataFrame(
        {"id": [f"id_{i}" for i in range(len(texts))], "fact": texts, "class_id": classes, "label": classes}
    )


# Every form loads, trains a fold and predicts ----------------------------------------------------------


@pytest.mark.parametrize("form", list(FORMS))
def test_each_folder_form_gives_its_own_tokenizer_trains_a_fold_and_predicts_alike(tmp_path, form):
    make, files = FORMS[form]
    folder = make(tmp_path / form)
    assert sorted(path.name for path in folder.iterdir()) == sorted(files)
    model = {"pretrained_path": str(folder), "max_length": MAX_LENGTH, "truncation": "head_tail"}
    model_input = _model_input()

    tokenizer = prepare_tokenizer(model_input, model)
    own = AutoTokenizer.from_pretrained(folder)
    assert tokenizer(RULINGS)["input_ids"] == own(RULINGS)["input_ids"]
    assert tokenizer.unk_token_id not in tokenizer(RULINGS[0])["input_ids"][1:-1]  # it spells the rulings
    dataset = TokenizerDataset(str(tmp_path / "saved" / "tokenizer"))  # the `{candidate}.tokenizer` dataset
    dataset.save(tokenizer)
    reloaded = dataset.load()
    assert reloaded(RULINGS)["input_ids"] == own(RULINGS)["input_ids"]

    folds = pd.DataFrame({"id": model_input["id"], "fold": [index % 2 for index in range(len(model_input))]})
    test_cases = pd.DataFrame({"id": ["test_0", "test_1", "test_2"], "fact": [RULINGS[0] * 3, *RULINGS[1:3]]})
    class_table = pd.DataFrame({"months": [0, 1, 2]})
    training = {**TINY_TRAINING, "work_dir": str(tmp_path / "work")}
    fold_model, oof, tested, metrics = train_fold(
        model_input, folds, test_cases, reloaded, class_table, {}, model, training, form, 0
    )
    assert len(oof) == len(model_input) // 2 and 0 <= metrics["final_score"] <= 1
    # The predict pipeline's path (the saved fold model, the saved tokenizer) gives the fold's own answers.
    predicted = predict_fold(fold_model, dataset.load(), test_cases, model, training)
    np.testing.assert_allclose(predicted.drop(columns="id").to_numpy(), tested.drop(columns="id").to_numpy(), atol=1e-5)


def test_an_xlm_r_tokenizer_keeps_its_own_special_tokens_padding_and_no_token_types(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(xlm_roberta_folder(tmp_path / "xlmr"))
    assert (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id) == (0, 2, 1)
    long = RULINGS[0] * 4
    whole = tokenizer(long)["input_ids"]
    for truncation in ("head", "tail", "head_tail"):
        encoded = tokenise(tokenizer, [long, RULINGS[1][:8]], 16, truncation)
        assert set(encoded) == {"input_ids", "attention_mask"}  # no token type ids for XLM-R
        first = encoded["input_ids"][0]
        assert len(first) == 16 and first[0] == 0 and first[-1] == 2
        assert (
            first[1:-1]
            == {"head": whole[1:15], "tail": whole[-15:-1], "head_tail": whole[1:8] + whole[-8:-1]}[truncation]
        )
        assert encoded["input_ids"][1] == tokenizer(RULINGS[1][:8])["input_ids"]  # a short text is never cut
    batch = padding_collator(tokenizer, on_gpu=False)([{"input_ids": [0, 5, 2]}, {"input_ids": [0, 5, 6, 7, 2]}])
    assert batch["input_ids"][0].tolist() == [0, 5, 2, 1, 1] and batch["attention_mask"][0].tolist() == [1, 1, 1, 0, 0]
    assert padded_batch([[0, 5, 2], [0, 5, 6, 7, 2]], tokenizer.pad_token_id, None, False)["input_ids"][0].tolist() == [
        0,
        5,
        2,
        1,
        1,
    ]


def test_the_fold_jobs_fingerprint_follows_the_tokenizer_and_its_file_keeps_it(tmp_path):
    """Two tokenizers of as many ids, one token apart: the job's fingerprint (which names a finished fold)
    tells them apart, and the job file the workers read carries the tokenizer itself."""
    vocabulary = build_character_vocabulary(RULINGS)
    other = [*vocabulary[:-1], "囧"]
    jobs = [
        FoldJob(
            name="fold_0",
            train_texts=RULINGS,
            train_labels=[0] * 8,
            eval_texts=RULINGS,
            eval_labels=[0] * 8,
            predict_texts=RULINGS,
            tokenizer=build_tokenizer(tokens),
            class_months=[0],
            model={},
            training={},
        )
        for tokens in (vocabulary, other)
    ]
    assert jobs[0].fingerprint() != jobs[1].fingerprint()
    jobs[1].save(tmp_path / "job.json")
    loaded = FoldJob.load(tmp_path / "job.json")
    assert loaded.fingerprint() == jobs[1].fingerprint()
    assert loaded.load_tokenizer().convert_ids_to_tokens(len(other) - 1) == "囧"


def test_a_tokenizer_with_more_ids_than_the_embeddings_is_refused_and_a_built_model_is_sized_to_it(tmp_path):
    folder = tokenizer_json_folder(tmp_path / "bert")
    with pytest.raises(ValueError, match="more than the model's"):
        build_model(ModelSettings(pretrained_path=str(folder)), num_labels=3, vocab_size=10_000)
    built = build_model(ModelSettings(config=TINY, architecture="bert"), num_labels=3, vocab_size=10_000)
    assert built.config.vocab_size == 10_000


# Broken folders: one line, before anything trains -------------------------------------------------------


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _pickled_weights(folder: Path) -> Path:
    weights = folder / "pytorch_model.bin"
    torch.save(BertForMaskedLM.from_pretrained(folder).state_dict(), weights)
    (folder / "model.safetensors").unlink()
    return weights


def _bigger_tokenizer(folder: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.add_tokens(["甲乙丙", "丁戊己"])
    tokenizer.save_pretrained(folder)


BROKEN = {
    "no_config": (lambda folder: (folder / "config.json").unlink(), "no config.json"),
    "no_weights": (lambda folder: (folder / "model.safetensors").unlink(), "no weights"),
    "no_tokenizer": (
        lambda folder: [(folder / name).unlink() for name in ("tokenizer.json", "tokenizer_config.json")],
        "no tokenizer",
    ),
    "tokenizer_too_big": (_bigger_tokenizer, "the tokenizer has"),
    "truncated_safetensors": (lambda folder: _truncated(folder / "model.safetensors"), "weights cannot be read"),
    "garbage_safetensors": (
        lambda folder: (folder / "model.safetensors").write_bytes(os.urandom(4096)),
        "weights cannot be read",
    ),
    "truncated_bin": (lambda folder: _truncated(_pickled_weights(folder)), "weights cannot be read"),
    "garbage_bin": (lambda folder: _pickled_weights(folder).write_bytes(os.urandom(4096)), "weights cannot be read"),
    "garbage_config": (lambda folder: (folder / "config.json").write_text("{not json"), "not a readable model config"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_folder_stops_the_tokenizer_node_with_one_line_naming_it(tmp_path, case):
    folder = tokenizer_json_folder(tmp_path / "bert")
    breaking, problem = BROKEN[case]
    breaking(folder)
    with pytest.raises(InputDataError) as raised:
        prepare_tokenizer(_model_input(), {"pretrained_path": str(folder)})
    message = str(raised.value)
    assert message.startswith(str(folder)) and problem in message and "\n" not in message, message


def test_the_good_folders_pickled_weights_pass_the_check(tmp_path):
    folder = tokenizer_json_folder(tmp_path / "bert")
    _pickled_weights(folder)
    assert len(prepare_tokenizer(_model_input(), {"pretrained_path": str(folder)})) == len(
        build_character_vocabulary(RULINGS)
    )


@pytest.mark.slow
def test_a_run_on_a_broken_folder_prints_one_line_and_writes_no_tokenizer_or_model(tmp_path):
    folder = tokenizer_json_folder(tmp_path / "bert")
    _truncated(folder / "model.safetensors")
    project = copy_project(tmp_path / "project")
    completed = run_kedro(
        project,
        "run",
        "--pipelines=train",
        "--params",
        f"transformer_candidates.megatron_bert.model.pretrained_path={folder}",
    )
    assert completed.returncode == 1
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(f"Error: {folder / 'model.safetensors'}: weights cannot be read ("), lines[-1]
    assert "Traceback" not in completed.stdout + completed.stderr
    assert not [
        path for path in written_outputs(project) if "06_models" in path.parts or "07_model_output" in path.parts
    ]


@pytest.mark.slow
def test_the_pipeline_trains_and_predicts_with_an_xlm_r_folder(tmp_path):
    folder = xlm_roberta_folder(tmp_path / "xlmr")
    project = copy_project(
        tmp_path / "project",
        f"""
folds: {{n_splits: 2}}
transformer_candidates:
  megatron_bert:
    model: {{pretrained_path: {folder}, max_length: {MAX_LENGTH}, truncation: head_tail}}
training:
  arguments: {{num_train_epochs: 1, eval_steps: 20, save_steps: 20, logging_steps: 10}}
baseline: {{max_features: 5000}}
serving: {{log_model: false}}
""",
    )
    completed = run_kedro(project, "run", "--pipelines=train")
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    data = project / "data"
    saved = AutoTokenizer.from_pretrained(data / "06_models" / "megatron_bert" / "tokenizer")
    assert saved(RULINGS)["input_ids"] == AutoTokenizer.from_pretrained(folder)(RULINGS)["input_ids"]
    completed = run_kedro(project, "run", "--pipelines=predict")
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    predictions = pd.read_csv(data / "07_model_output" / "predictions.csv")
    assert predictions.equals(pd.read_csv(data / "07_model_output" / "submission.csv"))


# The real multilingual-e5-small folders (../shared/reference) ------------------------------------------


def _unpacked_e5(folder: Path, variant: str) -> Path:
    source = E5 / variant
    folder.mkdir(parents=True)
    for path in source.iterdir():
        if path.suffix == ".xz":
            with lzma.open(path) as packed, (folder / path.stem).open("wb") as unpacked:
                shutil.copyfileobj(packed, unpacked)
        else:
            shutil.copy(path, folder / path.name)
    return folder


@pytest.mark.skipif(not E5.is_dir(), reason="needs ../shared/reference/multilingual-e5-small beside the checkout")
@pytest.mark.parametrize(
    ("variant", "first_ids", "pad"),
    [("zh-chars", ["[CLS]", "罪", "犯"], 0), ("zh-native", ["<s>", "▁", "罪"], 1)],
)
def test_the_real_e5_folders_pass_the_check_and_classify(tmp_path, variant, first_ids, pad):
    folder = _unpacked_e5(tmp_path / variant, variant)
    tokenizer = prepare_tokenizer(_model_input(), {"pretrained_path": str(folder)})
    encoded = tokenise(tokenizer, RULINGS[:2], 64, "head_tail")
    assert tokenizer.convert_ids_to_tokens(encoded["input_ids"][0][:3]) == first_ids
    assert tokenizer.pad_token_id == pad and tokenizer.unk_token_id not in encoded["input_ids"][0]
    model = build_model(ModelSettings(pretrained_path=str(folder)), num_labels=3, vocab_size=len(tokenizer))
    batch = padded_batch(encoded["input_ids"], tokenizer.pad_token_id, None, omit_full_mask=False)
    assert model(**batch).logits.shape == (2, 3) and next(model.parameters()).dtype == torch.float32


# The folders a run writes: saved atomically ------------------------------------------------------------


def test_a_tokenizer_save_that_fails_midway_keeps_the_previous_tokenizer(tmp_path, monkeypatch):
    dataset = TokenizerDataset(str(tmp_path / "candidate" / "tokenizer"))
    first = build_tokenizer(build_character_vocabulary(RULINGS[:1]))
    dataset.save(first)
    second = build_tokenizer(build_character_vocabulary(RULINGS))

    def fails_midway(folder, *arguments, **keywords):
        Path(folder).mkdir(parents=True)
        Path(folder, "tokenizer.json").write_text("{", encoding="utf-8")
        raise OSError("disk full")

    monkeypatch.setattr(second, "save_pretrained", fails_midway)
    with pytest.raises(DatasetError, match="disk full"):
        dataset.save(second)
    assert len(dataset.load()) == len(first)
    assert [path.name for path in (tmp_path / "candidate").iterdir()] == ["tokenizer"]


def test_a_model_folder_is_saved_whole_by_links_and_replaces_the_previous_one(tmp_path):
    source = tokenizer_json_folder(tmp_path / "work" / "result" / "model")
    dataset = ModelFolderDataset(str(tmp_path / "pretrained" / "bert"))
    dataset.save(vocab_txt_folder(tmp_path / "older"))
    dataset.save(source)
    folder = dataset.load()
    assert sorted(path.name for path in folder.iterdir()) == sorted(path.name for path in source.iterdir())
    assert (folder / "model.safetensors").stat().st_ino == (source / "model.safetensors").stat().st_ino
    assert [path.name for path in (tmp_path / "pretrained").iterdir()] == ["bert"]
