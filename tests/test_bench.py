"""Every backend gives the reference backend's answers (the original algorithm); the benchmark scripts run."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/ is not an installed package

from rtuning.backends.generate import GenerateBackend  # noqa: E402
from rtuning.backends.hf import HFBackend  # noqa: E402
from rtuning.backends.reference import ReferenceBackend  # noqa: E402
from rtuning.pipeline import TaskRunner, evaluate, probe  # noqa: E402
from rtuning.records import RunStore  # noqa: E402
from rtuning.tasks import MMLU, PARAREL, Shots  # noqa: E402


@pytest.fixture(scope="module")
def backends(bpe_tokenizer):
    """The three transformers backends over one tiny random Llama whose answers differ per
    question and sometimes stop at "."."""
    from test_engine import varied_model

    model = varied_model(bpe_tokenizer)
    return {"reference": ReferenceBackend(model, bpe_tokenizer), "generate": GenerateBackend(model, bpe_tokenizer),
            "hf": HFBackend(model, bpe_tokenizer)}


def runs(backends, data_dir, tmp_path, split, fn, task=PARAREL, n=5):
    """fn(runner, examples, store) on each backend with the same prompts (two shots for open QA,
    as rtuning.cli.Setup builds them)."""
    shots = Shots(task, task.load(data_dir, "train"), 2 if task is PARAREL else 0, 42)
    examples = task.load(data_dir, split)[:n]
    return {name: fn(TaskRunner(b, task, shots, 2000), examples,
                     RunStore(tmp_path / f"{name}.jsonl", tmp_path / f"{name}.meta.json", {}))
            for name, b in backends.items()}


def test_every_backend_evaluates_alike(backends, data_dir, tmp_path):
    out = runs(backends, data_dir, tmp_path, "ID", lambda r, e, s: evaluate(r, e, s, batch_size=4))
    ref = out.pop("reference")
    assert {r["stopped_by"] for r in ref} >= {"period", "length"}
    for name, records in out.items():
        assert [r["answer"] for r in records] == [r["answer"] for r in ref], name
        assert [r["answer_conf"] for r in records] == pytest.approx([r["answer_conf"] for r in ref], abs=1e-4)
        assert [r["sure_prob"] for r in records] == pytest.approx([r["sure_prob"] for r in ref], abs=1e-4)


def test_every_backend_probes_alike(backends, data_dir, tmp_path):
    out = runs(backends, data_dir, tmp_path, "train",
               lambda r, e, s: probe(r, e, s, method="unsure", batch_size=4, seed=0), n=4)
    ref = out.pop("reference")
    for name, records in out.items():
        assert [r["output"] for r in records] == [r["output"] for r in ref], name
        assert [r["confidence"] for r in records] == pytest.approx([r["confidence"] for r in ref], abs=1e-4)


def test_every_backend_scores_letters_alike(backends, data_dir, tmp_path):
    out = runs(backends, data_dir, tmp_path, "ID", lambda r, e, s: evaluate(r, e, s, batch_size=3), task=MMLU, n=3)
    ref = out.pop("reference")
    for name, records in out.items():
        assert [r["answer"] for r in records] == [r["answer"] for r in ref], name
        for a, b in zip(records, ref):
            assert a["option_probs"] == pytest.approx(b["option_probs"], abs=1e-4)
            assert a["sure_prob"] == pytest.approx(b["sure_prob"], abs=1e-4)


def test_bench_backends_script(tiny_model_dir, data_dir, tmp_path, capsys):
    from benchmarks import bench_backends

    out = tmp_path / "backends.json"
    doc = bench_backends.main(["--model", str(tiny_model_dir), "--data_dir", str(data_dir), "--limit", "3",
                               "--batch_size", "2", "--num_shots", "2", "--threads", str(torch.get_num_threads()),
                               "--tasks", "pararel,mmlu", "--kinds", "eval,probe",
                               "--backends", "reference,generate,hf", "--matmul_seconds", "0.05",
                               "--matmul_size", "256", "--output", str(out)])
    saved = json.loads(out.read_text())
    assert saved["results"] == json.loads(json.dumps(doc["results"]))
    rows = {(r["task"], r["kind"], r["backend"]): r for r in saved["results"]}
    assert set(rows) == {(t, k, b) for t in ("pararel", "mmlu") for k in ("eval", "probe")
                         for b in ("reference", "generate", "hf")}
    for (task, kind, backend), r in rows.items():
        assert r["n"] == 3 and r["questions_per_s"] > 0 and r["peak_mb"] > 0
        if backend != "reference":
            assert r["agreement_with"] == "reference" and r["identical_answers"] == 1.0, (task, kind, backend)
            assert r["max_conf_diff"] < 1e-4 and r.get("max_sure_diff", 0) < 1e-4
            assert r["speedup_over"]["reference"] > 0
    assert rows[("mmlu", "eval", "hf")]["max_letter_prob_diff"] < 1e-4
    printed = capsys.readouterr().out
    assert "pararel eval" in printed and "mmlu probe" in printed and "vs generate" in printed


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
