"""Fine-tuning: LMFlow input checks, loss falls on a tiny set, the saved model reloads."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rtuning.finetune import LMFlowError, PadCollator, TextDataset, main, read_lmflow

TEXTS = [
    "Question: What field does Alan Turing work in? Answer: logic. Are you sure you accurately answered "
    "the question based on your internal knowledge? I am sure.",
    "Question: Which country is Rubens Barrichello a citizen of? Answer: Brazil. Are you sure you "
    "accurately answered the question based on your internal knowledge? I am unsure.",
] * 4


def write_lmflow(path, texts):
    path.write_text(json.dumps({"type": "text_only", "instances": [{"text": t} for t in texts]}))
    return path


def mean_loss(model_dir, texts):
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    batch = PadCollator(tok.pad_token_id)([TextDataset(texts, tok, 512)[i] for i in range(len(texts))])
    with torch.no_grad():
        return float(model(**batch).loss)


def test_read_lmflow_folder_and_errors(tmp_path):
    write_lmflow(tmp_path / "a.json", ["x"])
    write_lmflow(tmp_path / "b.json", ["y", "z"])
    (tmp_path / "a.meta.json").write_text("{}")  # our run trail beside the data is skipped
    assert read_lmflow(tmp_path) == ["x", "y", "z"]
    (tmp_path / "c.json").write_text(json.dumps({"type": "text_only", "instances": [{"text": "ok"}, {"txt": 1}]}))
    with pytest.raises(LMFlowError, match=r"c.json: instance 1: field 'text'"):
        read_lmflow(tmp_path)
    with pytest.raises(LMFlowError, match="not found"):
        read_lmflow(tmp_path / "missing")


def test_dataset_appends_eos_and_collator_masks_padding(bpe_tokenizer):
    ds = TextDataset(["short", "a somewhat longer text"], bpe_tokenizer, 512)
    assert all(e[-1] == bpe_tokenizer.eos_token_id for e in ds.examples)
    batch = PadCollator(bpe_tokenizer.pad_token_id)([ds[0], ds[1]])
    assert (batch["labels"] == -100).sum() == len(ds.examples[1]) - len(ds.examples[0])
    assert (batch["labels"][0, : len(ds.examples[0])] == batch["input_ids"][0, : len(ds.examples[0])]).all()
    cut = TextDataset(["a somewhat longer text ending in I am unsure."], bpe_tokenizer, 5)
    assert cut.truncated == 1 and len(cut.examples[0]) == 5
    assert bpe_tokenizer.decode(cut.examples[0]).endswith("I am unsure.<|im_end|>")  # the label survives


def test_finetune_lowers_loss_and_saves_a_loadable_model(tiny_model_dir, tmp_path):
    data = write_lmflow(tmp_path / "train.json", TEXTS)
    out = tmp_path / "tuned"
    before = mean_loss(tiny_model_dir, TEXTS)
    info = main(["--model_name_or_path", str(tiny_model_dir), "--dataset_path", str(data),
                 "--output_model_path", str(out), "--learning_rate", "5e-3", "--num_train_epochs", "8",
                 "--per_device_train_batch_size", "4", "--logging_steps", "1"])
    after = mean_loss(out, TEXTS)
    assert after < before - 1.0, (before, after)
    assert info["steps"] == 16 and info["examples"] == 8
    log = json.loads((out / "training_log.json").read_text())
    losses = [h["loss"] for h in log if "loss" in h]
    assert losses[-1] < losses[0]
    args = json.loads((out / "finetune_args.json").read_text())
    assert args["args"]["learning_rate"] == 5e-3


def test_packing_concatenates_and_drops_the_remainder():
    from rtuning.finetune import PackedDataset

    packed = PackedDataset([[1, 2, 3], [4, 5], [6, 7, 8, 9]], block_size=4)
    assert packed.examples == [[1, 2, 3, 4], [5, 6, 7, 8]] and packed.dropped_tokens == 1
    with pytest.raises(LMFlowError, match="less than one block"):
        PackedDataset([[1, 2]], block_size=4)
