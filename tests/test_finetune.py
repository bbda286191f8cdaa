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


def test_group_by_length_batches_similar_lengths_and_keeps_every_example(tiny_model_dir, tmp_path, monkeypatch):
    import rtuning.finetune as ft

    texts = [("word " * (1 + (17 * i) % 60)).strip() for i in range(64)]
    data = write_lmflow(tmp_path / "train.json", texts)

    def batches(extra):
        seen = []

        class Recording(PadCollator):
            def __call__(self, features):
                seen.append(sorted(len(f["input_ids"]) for f in features))
                return super().__call__(features)

        monkeypatch.setattr(ft, "PadCollator", Recording)
        main(["--model_name_or_path", str(tiny_model_dir), "--dataset_path", str(data), "--output_model_path",
              str(tmp_path / f"out{len(extra)}"), "--per_device_train_batch_size", "4", "--max_steps", "16",
              *extra])
        return seen

    lengths = sorted(len(x) for x in TextDataset(texts, AutoTokenizer.from_pretrained(tiny_model_dir), 512).examples)
    padding = lambda seen: sum(max(b) * len(b) - sum(b) for b in seen)
    grouped, shuffled = batches(["--group_by_length"]), batches([])
    # one epoch either way: every example once
    assert sorted(n for b in grouped for n in b) == lengths == sorted(n for b in shuffled for n in b)
    # 64 examples: 4 random groups of 4 batches, sorted by length inside each
    assert padding(grouped) < padding(shuffled) / 3, (padding(grouped), padding(shuffled))
    info = json.loads((tmp_path / "out1" / "finetune_args.json").read_text())
    assert info["group_by_length"] is True


def test_group_by_length_with_packing_is_refused(tmp_path, capsys):
    data = write_lmflow(tmp_path / "train.json", TEXTS)
    with pytest.raises(SystemExit) as e:
        main(["--dataset_path", str(data), "--output_model_path", str(tmp_path / "o"), "--packing",
              "--group_by_length"])
    assert e.value.code == 2 and "--group_by_length has nothing to group with --packing" in capsys.readouterr().err


def test_packing_concatenates_and_drops_the_remainder():
    from rtuning.finetune import PackedDataset

    packed = PackedDataset([[1, 2, 3], [4, 5], [6, 7, 8, 9]], block_size=4)
    assert packed.examples == [[1, 2, 3, 4], [5, 6, 7, 8]] and packed.dropped_tokens == 1
    with pytest.raises(LMFlowError, match="less than one block"):
        PackedDataset([[1, 2]], block_size=4)


@pytest.mark.parametrize("sampling", [[], ["--group_by_length"]], ids=["random", "group_by_length"])
def test_killed_run_resumes_from_its_checkpoint(tiny_model_dir, tmp_path, monkeypatch, capsys, sampling):
    from transformers import Trainer

    data = write_lmflow(tmp_path / "train.json", TEXTS)
    common = ["--model_name_or_path", str(tiny_model_dir), "--dataset_path", str(data), "--learning_rate", "5e-3",
              "--max_steps", "6", "--per_device_train_batch_size", "2", "--logging_steps", "1", "--save_steps", "2",
              *sampling]
    whole = main([*common, "--output_model_path", str(tmp_path / "whole")])
    real, calls = Trainer.training_step, {"n": 0}

    def killed(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 4:  # during step 4: checkpoint-2 exists, checkpoint-4 not yet
            raise KeyboardInterrupt("killed")
        return real(self, *a, **k)

    monkeypatch.setattr(Trainer, "training_step", killed)
    with pytest.raises(KeyboardInterrupt):
        main([*common, "--output_model_path", str(tmp_path / "broken")])
    monkeypatch.setattr(Trainer, "training_step", real)
    assert [p.name for p in (tmp_path / "broken").glob("checkpoint-*")] == ["checkpoint-2"]
    spent = json.loads((tmp_path / "broken" / "checkpoint-2" / "rtuning_time.json").read_text())["train_time_s"]
    assert spent > 0
    # a kill while checkpoint-4 was being written: weights there, trainer state not yet
    cut = tmp_path / "broken" / "checkpoint-4"
    cut.mkdir()
    for f in (tmp_path / "broken" / "checkpoint-2").glob("model*"):
        (cut / f.name).write_bytes(f.read_bytes())
    done = {"n": 0}

    def counted(self, *a, **k):
        done["n"] += 1
        return real(self, *a, **k)

    monkeypatch.setattr(Trainer, "training_step", counted)
    # resuming under another learning rate would carry on the old run's weights and schedule
    other = [*common[:common.index("--learning_rate")], "--learning_rate", "1e-3",
             *common[common.index("--learning_rate") + 2:]]
    with pytest.raises(SystemExit) as e:
        main([*other, "--output_model_path", str(tmp_path / "broken"), "--resume_from_checkpoint"])
    assert e.value.code == 2 and done["n"] == 0
    assert "learning_rate: 0.005 there, 0.001 now" in capsys.readouterr().err
    resumed = main([*common, "--output_model_path", str(tmp_path / "broken"), "--resume_from_checkpoint"])
    assert resumed["resumed_from"].endswith("checkpoint-2")
    # the tiny model ties its output layer to the embeddings: the run says why transformers'
    # missing-key warning is harmless, and the loss curve below shows it is
    assert "lm_head.weight is missing from the checkpoint is harmless" in capsys.readouterr().err
    assert done["n"] == 4  # steps 3-6 only: steps 1-2 are not redone
    assert resumed["steps"] == whole["steps"] == 6
    # the reported time covers both invocations: the killed one up to its checkpoint, and this one
    assert resumed["wall_time_s"] == pytest.approx(spent + resumed["this_run_s"], abs=0.02)
    assert whole["wall_time_s"] == whole["this_run_s"]
    log = lambda d: {h["step"]: h["loss"] for h in json.loads((tmp_path / d / "training_log.json").read_text())
                     if "loss" in h}
    before, after = log("whole"), log("broken")
    assert sorted(after) == sorted(before) == list(range(1, 7))
    for step in range(1, 7):  # the curve continues from the checkpoint as if never killed
        assert after[step] == pytest.approx(before[step], rel=1e-4)


def test_lora_trains_only_adapters_and_merges(tiny_model_dir, tmp_path):
    from rtuning.models import load_model, resolve_model

    data = write_lmflow(tmp_path / "train.json", TEXTS)
    out = tmp_path / "lora"
    info = main(["--model_name_or_path", str(tiny_model_dir), "--dataset_path", str(data), "--output_model_path",
                 str(out), "--lora", "--lora_r", "4", "--lora_target_modules", "q_proj,v_proj",
                 "--learning_rate", "1e-2", "--num_train_epochs", "2", "--merge_lora"])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    # r x (in + out) per adapted projection: q (32->32) and v (32->16) in 2 layers
    assert info["trainable_parameters"] == 2 * 4 * ((32 + 32) + (32 + 16))
    adapted, tok = load_model(resolve_model(str(out / "lora_adapter")))
    merged, _ = load_model(resolve_model(str(out)))
    for name, p in adapted.named_parameters():
        if "lora_" not in name:  # base weights are untouched
            clean = name.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(p, base.get_parameter(clean)), name
    ids = tok(TEXTS[:2], return_tensors="pt", padding=True)
    with torch.no_grad():
        a, m, b = adapted(**ids).logits, merged(**ids).logits, base(**ids).logits
    assert torch.allclose(a, m, atol=1e-4)
    assert not torch.allclose(a, b, atol=1e-3)  # the adapters learned something
