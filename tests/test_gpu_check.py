"""benchmarks/gpu_check.sh and its helpers: the random models' shapes, the summary's sections,
and the whole script on the CPU in its tiny configuration (GPU_CHECK_TINY=1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # benchmarks/ is not an installed package

from benchmarks import gpu_check_steps, random_model  # noqa: E402


def test_open_llama_3b_shape_counted_on_meta():
    counts = random_model.param_count(random_model.build_config("open_llama_3b"))
    # open_llama_3b's own vocabulary: its published size, 3.43B
    assert counts["total"] == 3_426_473_600
    assert counts["per_block"] == 4 * 3200 * 3200 + 3 * 3200 * 8640 + 2 * 3200
    assert counts["blocks"] == 26 and not counts["tied_embeddings"]


def test_open_llama_3b_with_smollm2_tokenizer(bpe_tokenizer):
    config = random_model.build_config("open_llama_3b", bpe_tokenizer)
    assert config.vocab_size == len(bpe_tokenizer) == 49152
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
            config.intermediate_size) == (3200, 26, 32, 8640)
    assert config.eos_token_id == bpe_tokenizer.eos_token_id
    counts = random_model.param_count(config)
    # only the embedding and the untied output head grow: 2 x (49152 - 32000) x 3200
    assert counts["total"] == 3_426_473_600 + 2 * (49152 - 32000) * 3200


def test_smollm2_shape_is_the_embedded_models():
    from transformers import AutoConfig

    from rtuning.models import materialize, resolve_model

    real = AutoConfig.from_pretrained(materialize(resolve_model("smollm2-135m")))
    ours = random_model.build_config("smollm2_135m")
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "max_position_embeddings", "tie_word_embeddings", "vocab_size"):
        assert getattr(ours, key) == getattr(real, key), key
    assert ours.rope_parameters["rope_theta"] == real.rope_parameters["rope_theta"]
    assert ours.rms_norm_eps == pytest.approx(real.rms_norm_eps)
    assert random_model.param_count(ours)["total"] == 134_515_008


def test_random_model_saves_and_loads_by_path(bpe_tokenizer, tmp_path):
    import torch

    from rtuning.models import load_model, resolve_model

    info = random_model.save_random_model("tiny", bpe_tokenizer, tmp_path / "m", torch.bfloat16, "cpu")
    assert info["vocab_size"] == len(bpe_tokenizer) and info["dtype"] == "bfloat16"
    assert json.loads((tmp_path / "m" / "config.json").read_text())["dtype"] == "bfloat16"
    model, tok = load_model(resolve_model(str(tmp_path / "m")), "cpu", torch.float32)
    assert sum(p.numel() for p in model.parameters()) == info["params"]
    assert len(tok) == len(bpe_tokenizer)


def _step(folder: Path, name: str, status: dict, result: dict | None = None, log: str = "") -> None:
    (folder / f"{name}.status").write_text(json.dumps(status))
    if result is not None:
        (folder / f"{name}.json").write_text(json.dumps(result))
    (folder / f"{name}.log").write_text(log)


def test_summary_says_why_a_section_is_missing(tmp_path):
    _step(tmp_path, "env", {"rc": 0, "seconds": 3, "limit_s": 60}, {"torch": "2.11.0", "gpu": "H200"})
    _step(tmp_path, "peak", {"rc": 0, "seconds": 5, "limit_s": 45}, {"bf16_flops_per_s": 8e14, "n": 8192})
    _step(tmp_path, "bench_3b", {"rc": 124, "seconds": 180, "limit_s": 180}, None, "loading\nstill decoding")
    _step(tmp_path, "ft_3b", {"rc": 1, "seconds": 9, "limit_s": 120}, None, "Traceback\nCUDA out of memory")
    _step(tmp_path, "ft_small", {"rc": 0, "seconds": 2, "limit_s": 75}, None,
          "no CUDA device: nothing to measure (the CPU tests cover the code paths)")
    _step(tmp_path, "fsdp", {"rc": 0, "seconds": 40, "limit_s": 100},
          {"ok": False, "seconds": 38.0, "steps": None, "stderr_tail": "NCCL error"})
    (tmp_path / "bench_small.status").write_text(json.dumps({"skipped": "model_small did not build"}))
    doc = gpu_check_steps.summarize(tmp_path, 400, 450)
    assert doc["backends_3b"]["failed"] == "timed out after 180 s" and "still decoding" in doc["backends_3b"]["log_tail"]
    assert doc["finetune_3b"]["failed"] == "exit status 1" and "out of memory" in doc["finetune_3b"]["log_tail"]
    assert doc["finetune_embedded"]["skipped"].startswith("no CUDA device")
    assert doc["backends_embedded"] == {"skipped": "model_small did not build"}
    assert doc["model_3b"]["skipped"].startswith("not reached")
    assert doc["fsdp_one_gpu"]["ok"] is False
    assert doc["agreement"]["3b"]["skipped"].startswith("backends benchmark: timed out")
    text = "\n".join(doc["summary"])
    assert "FSDP on one GPU: FAILED" in text and "800 TFLOP/s" in text and "fine-tune, 3b: FAILED" in text


def _sections_have_numbers_or_reasons(doc: dict) -> None:
    for section, _ in gpu_check_steps.SECTIONS:
        value = doc[section]
        assert isinstance(value, dict) and value, section
        if "skipped" in value or "failed" in value:
            assert isinstance(value.get("skipped", value.get("failed")), str), section


@pytest.mark.slow
def test_gpu_check_script_tiny_on_cpu(tmp_path, data_dir):
    """The whole script with tiny models on the CPU: every section, numbers where the CPU can
    give them, a reason where it cannot (FSDP, vLLM), and at most 8 files in OUTDIR."""
    out = tmp_path / "out"
    env = {**os.environ, "GPU_CHECK_TINY": "1", "GPU_CHECK_WORK": str(tmp_path / "work"), "PYTHON": sys.executable,
           "RTUNING_DATA_DIR": str(data_dir), "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    env.pop("WHEELS", None)
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), str(out)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert sorted(p.name for p in files) == ["gpu_check.json", "gpu_check.log"]
    doc = json.loads((out / "gpu_check.json").read_text())
    _sections_have_numbers_or_reasons(doc)
    assert all("failed" not in s for s in doc["steps"].values()), doc["steps"]
    assert all(s.get("rc", 0) == 0 for s in doc["steps"].values()), doc["steps"]
    assert doc["steps"]["install"] == {"skipped": "WHEELS is not set: the machine's own packages"}
    assert doc["matmul_peak"]["bf16_flops_per_s"] > 0
    assert doc["model_3b"]["arch"] == "tiny" and doc["model_3b"]["vocab_size"] == 49152
    for name in ("embedded", "3b"):
        bench = doc[f"backends_{name}"]
        assert set(bench["runs"]) == {"pararel eval", "mmlu eval", "pararel probe"}
        for run, rows in bench["runs"].items():
            assert set(rows) == {"reference", "generate", "hf"}, run
            assert rows["reference"]["n"] == 2 and rows["hf"]["n"] == 4
            assert all(r["questions_per_s"] > 0 for r in rows.values())
            assert rows["hf"]["share_of_bf16_peak"] > 0
        assert any(n.startswith("vllm skipped") for n in bench["notes"])
        agree = doc["agreement"][name]
        for run, entry in agree.items():
            assert entry["hf_vs_vllm"]["skipped"].startswith("vllm skipped")
            # the transformers backends agree on a CPU in fp32 (tests/test_bench.py checks why)
            assert entry["hf_vs_generate"]["identical_answers"] == 1.0 and entry["hf_vs_generate"]["compared"] == 4
            assert entry["hf_vs_reference"]["identical_answers"] == 1.0 and entry["hf_vs_reference"]["compared"] == 2
        assert doc["targets"][name]["hf_over_reference_pararel_eval"]["value"] > 0
        ft = doc[f"finetune_{name}"]
        assert ft["device"] == "cpu" and ft["tokens_per_s"] > 0 and ft["mfu"] > 0 and ft["mfu_of_peak_step"] > 0
    assert doc["fsdp_one_gpu"]["skipped"].startswith("no CUDA device")
    assert "FSDP on one GPU: skipped" in proc.stdout and "backends, 3b, pararel eval" in proc.stdout
