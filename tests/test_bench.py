"""The benchmarks' re-implementation of the original algorithm agrees with the engine."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/ is not an installed package

from benchmarks.reference import reference_evaluate, reference_probe  # noqa: E402
from rtuning.pipeline import TaskRunner, evaluate, probe  # noqa: E402
from rtuning.records import RunStore  # noqa: E402
from rtuning.tasks import PARAREL, Shots  # noqa: E402


@pytest.fixture(scope="module")
def varied_engine(bpe_tokenizer):
    """A tiny random Llama whose answers differ per question and sometimes stop at "."."""
    from test_engine import varied_model

    from rtuning.engine import Engine

    return Engine(varied_model(bpe_tokenizer), bpe_tokenizer)


def runner_and_examples(engine, data_dir, split, n=5):
    shots = Shots(PARAREL, PARAREL.load(data_dir, "train"), 2, 42)  # as rtuning.cli.Setup builds them
    return TaskRunner(engine, PARAREL, shots, 2000), PARAREL.load(data_dir, split)[:n]


def test_reference_evaluation_equals_the_engine(varied_engine, data_dir, tmp_path):
    engine = varied_engine
    runner, examples = runner_and_examples(engine, data_dir, "ID")
    ref = reference_evaluate(engine, [runner.prompt(ex) for ex in examples], PARAREL.eval_new_tokens)
    store = RunStore(tmp_path / "e.jsonl", tmp_path / "e.meta.json", {})
    records = evaluate(runner, examples, store, batch_size=4)
    assert [r["text"] for r in ref] == [r["answer"] for r in records]
    assert [r["confidence"] for r in ref] == pytest.approx([r["answer_conf"] for r in records], abs=1e-4)
    assert [r["sure_prob"] for r in ref] == pytest.approx([r["sure_prob"] for r in records], abs=1e-4)


def test_reference_probe_equals_the_engine(varied_engine, data_dir, tmp_path):
    runner, examples = runner_and_examples(varied_engine, data_dir, "train", n=4)
    prompts = [runner.prompt(PARAREL.probing(ex)) for ex in examples]  # as pipeline.probe sends them
    ref = reference_probe(varied_engine, prompts, PARAREL.probe_new_tokens)
    store = RunStore(tmp_path / "p.jsonl", tmp_path / "p.meta.json", {})
    records = probe(runner, examples, store, method="unsure", batch_size=4, seed=0)
    assert {r["stopped_by"] for r in ref} >= {"period", "length"}
    assert [r["text"] for r in ref] == [r["output"] for r in records]
    assert [r["confidence"] for r in ref] == pytest.approx([r["confidence"] for r in records], abs=1e-4)


def test_bench_eval_script(tiny_model_dir, data_dir, tmp_path):
    from benchmarks import bench_eval

    out = tmp_path / "eval.json"
    doc = bench_eval.main(["--model", str(tiny_model_dir), "--data_dir", str(data_dir), "--limit", "3",
                           "--batch_size", "2", "--num_shots", "2", "--threads", str(torch.get_num_threads()),
                           "--matmul_seconds", "0.05", "--matmul_size", "256", "--output", str(out)])
    saved = json.loads(out.read_text())
    for key in ("reference_qps", "engine_qps", "speedup", "identical_answers", "max_conf_diff", "max_sure_diff",
                "reference_peak_mb", "engine_peak_mb", "matmul_fraction", "machine", "torch_threads", "model",
                "n", "batch_size", "dtype", "flops_rule"):
        assert key in saved, key
    assert saved["n"] == 3 and doc["identical_answers"] == 1.0 and doc["max_sure_diff"] < 1e-4


def test_bench_finetune_script(tiny_model_dir, tmp_path, capsys):
    from benchmarks import bench_finetune

    data = tmp_path / "train.json"
    texts = [f"Question: What is {i} plus one? Answer: {i + 1}. I am sure." * (1 + i % 3) for i in range(96)]
    data.write_text(json.dumps({"type": "text_only", "instances": [{"text": t} for t in texts]}))
    doc = bench_finetune.main(["--model", str(tiny_model_dir), "--data", str(data), "--steps", "1",
                               "--warmup_steps", "0", "--block_size", "64", "--batch_size", "4",
                               "--matmul_seconds", "0.05", "--matmul_size", "256",
                               "--output", str(tmp_path / "ft.json")])
    assert doc["packed"]["padding_share"] == 0.0 < doc["padded"]["padding_share"]
    assert doc["packed"]["tokens_per_s"] > 0 and doc["padded"]["tokens_per_s"] > 0
    # 96 texts of three lengths (4 groups of 6 batches): grouping leaves less padding than a random order
    assert doc["grouped"]["epoch_padding_share"] < doc["padded"]["epoch_padding_share"] / 2
    assert doc["grouped"]["epoch_batches"] == doc["padded"]["epoch_batches"] == 24
    assert doc["epoch_positions_ratio_grouped"] > 1
    head = next(line for line in capsys.readouterr().out.splitlines() if "padded (default)" in line)
    assert "grouped (--group_by_length)" in head and "packed (--packing)" in head


def test_bench_finetune_compares_precisions(tiny_model_dir, tmp_path, capsys):
    from benchmarks import bench_finetune

    data = tmp_path / "train.json"
    texts = [f"Question: What is {i} plus one? Answer: {i + 1}. I am sure." for i in range(16)]
    data.write_text(json.dumps({"type": "text_only", "instances": [{"text": t} for t in texts]}))
    common = ["--model", str(tiny_model_dir), "--data", str(data), "--steps", "1", "--warmup_steps", "0",
              "--block_size", "64", "--matmul_seconds", "0.05", "--matmul_size", "256", "--layouts", "padded",
              "--output", str(tmp_path / "ft.json")]
    doc = bench_finetune.main([*common, "--dtypes", "fp32,bf16"])
    fp32, bf16 = doc["padded fp32"], doc["padded bf16"]
    # the same first batch from the same weights: bf16 autocast really ran (a different loss), and
    # computed the same thing to bf16's precision
    assert fp32["first_loss"] != bf16["first_loss"]
    assert bf16["first_loss"] == pytest.approx(fp32["first_loss"], rel=0.02)
    assert set(doc["matmul_by_dtype"]) == {"fp32", "bf16"}
    assert doc["epoch_ratio_fp32_over"]["bf16"]["padded"] > 0 and doc["epoch_ratio_grouped"] is None
    assert "fp32 / bf16: padded" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench_finetune.main([*common, "--dtypes", "fp8"])
    assert "--dtypes: unknown fp8" in capsys.readouterr().err
