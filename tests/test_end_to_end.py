"""The three user commands in sequence, as a user runs them (subprocesses, accelerate launch)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def run(cmd, env):
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{cmd}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_probe_finetune_evaluate(tiny_model_dir, data_dir, tmp_path):
    env = {**os.environ, "RTUNING_DATA_DIR": str(data_dir), "TOKENIZERS_PARALLELISM": "false",
           "PYTHON": sys.executable}
    env.pop("OMP_NUM_THREADS", None)
    train_out, model_out, eval_out = tmp_path / "train", tmp_path / "model", tmp_path / "eval"
    run([sys.executable, "training/pararel/run_pararel.py", "--model", str(tiny_model_dir), "--method", "unsure",
         "--limit", "12", "--output_dir", str(train_out), "--result", "pararel"], env)
    data = train_out / "pararel_unsure.json"
    assert len(json.loads(data.read_text())["instances"]) == 12
    run(["bash", "finetune/run_finetune.sh", "--model_name_or_path", str(tiny_model_dir), "--dataset_path",
         str(train_out), "--output_model_path", str(model_out), "--per_device_train_batch_size", "4"], env)
    info = json.loads((model_out / "finetune_args.json").read_text())
    assert info["examples"] == 12 and info["steps"] == 3 and info["args"]["num_train_epochs"] == 1.0
    # accelerate alone would start it with OMP_NUM_THREADS=1: one core of however many
    assert info["torch_threads"] == len(os.sched_getaffinity(0))
    for domain in ("ID", "OOD"):
        out = run([sys.executable, "evaluation/run_pararel.py", "--model", str(model_out), "--domain", domain,
                   "--limit", "10", "--output_dir", str(eval_out), "--result", "tuned"], env)
        assert "AP%" in out and domain in out
        assert len(json.loads((eval_out / f"tuned_{domain}.json").read_text())) == 10
    out = run([sys.executable, "evaluation/calculate_ap.py", "--result", str(eval_out / "tuned_ID.json")], env)
    summary = json.loads((eval_out / "tuned_ID.summary.json").read_text())
    expected = "-" if summary["ap"] is None else f"{100 * summary['ap']:.2f}"
    assert expected in out


def test_embedded_default_model_loads_by_short_name_and_gguf_path():
    import torch

    from rtuning.engine import Engine
    from rtuning.models import REGISTRY, load_model, resolve_model

    spec = resolve_model("smollm2-135m")
    assert spec.recommended_shots == REGISTRY["smollm2-135m"].num_shots == 2
    model, tok = load_model(spec, "cpu", torch.float32)
    assert getattr(model, "hf_quantizer", None) is None
    engine = Engine(model, tok)
    prompt = "Question: What is the capital of France? Answer: Paris.\n\nQuestion: What is the capital of Italy? Answer:"
    ans = engine.generate(engine.encode([prompt]), 5)[0]
    assert "Rome" in ans.text
    gguf = resolve_model(os.path.join(spec.path, spec.gguf_file))
    assert gguf.gguf_file == spec.gguf_file and gguf.entry is None and gguf.recommended_shots == 0


def test_multitask_builds_and_merges_all_five(tiny_model_dir, data_dir, tmp_path):
    env = {**os.environ, "RTUNING_DATA_DIR": str(data_dir), "TOKENIZERS_PARALLELISM": "false",
           "PYTHON": sys.executable}
    run([sys.executable, "training/run_multitask.py", "--model", str(tiny_model_dir), "--method", "unsure",
         "--limit", "3", "--output_dir", str(tmp_path), "--max_prompt_tokens", "256"], env)
    merged = json.loads((tmp_path / "merged" / "multitask_unsure.json").read_text())
    assert len(merged["instances"]) == 15
    for name in ("pararel", "mmlu", "wice", "hotpotqa", "fever"):
        part = json.loads((tmp_path / f"multitask-{name}_unsure.json").read_text())
        assert len(part["instances"]) == 3
