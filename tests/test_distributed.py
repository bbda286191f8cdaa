"""Two real processes on the CPU (accelerate launch, gloo): evaluation and fine-tuning."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def same_records(a, b):
    """Equal texts and decisions; probabilities equal up to float noise (kernels may differ by
    memory alignment between processes)."""
    ra = [json.loads(line) for line in a.read_text().splitlines()]
    rb = [json.loads(line) for line in b.read_text().splitlines()]
    assert len(ra) == len(rb)
    for x, y in zip(ra, rb):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], float):
                assert x[k] == pytest.approx(y[k], rel=1e-5, abs=1e-7), k
            else:
                assert x[k] == y[k], k


def launch(args, env, processes=2):
    # accelerate's --cpu would start one process: the multi-process launcher forms a gloo group
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes), "--multi_gpu",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


@pytest.fixture()
def env(data_dir):
    return {**os.environ, "RTUNING_DATA_DIR": str(data_dir), "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}


def test_two_process_evaluation_equals_one_process(tiny_model_dir, tmp_path, env):
    common = ["evaluation/run_pararel.py", "--model", str(tiny_model_dir), "--domain", "OOD", "--limit", "13",
              "--batch_size", "3", "--result", "r", "--num_shots", "1"]
    single = subprocess.run([sys.executable, *common, "--output_dir", str(tmp_path / "one")], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    launch([*common, "--output_dir", str(tmp_path / "two")], env)
    same_records(tmp_path / "one" / "r_OOD.jsonl", tmp_path / "two" / "r_OOD.jsonl")
    one, two = (json.loads((tmp_path / d / "r_OOD.json").read_text()) for d in ("one", "two"))
    assert [r[0] for r in one] == [r[0] for r in two]
    assert not list((tmp_path / "two").glob("*.rank*"))  # parts merged away
    meta = json.loads((tmp_path / "two" / "r_OOD.meta.json").read_text())
    assert meta["processes"] == 2 and meta["status"] == "finished"


def test_two_process_probe_equals_one_process(tiny_model_dir, tmp_path, env):
    common = ["training/pararel/run_pararel.py", "--model", str(tiny_model_dir), "--method", "uncertain",
              "--num_try", "2", "--limit", "9", "--batch_size", "2", "--result", "p", "--num_shots", "0"]
    single = subprocess.run([sys.executable, *common, "--output_dir", str(tmp_path / "one")], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    launch([*common, "--output_dir", str(tmp_path / "two")], env)
    assert (tmp_path / "one" / "p_uncertain.json").read_text() == (tmp_path / "two" / "p_uncertain.json").read_text()
    same_records(tmp_path / "one" / "p_uncertain.records.jsonl", tmp_path / "two" / "p_uncertain.records.jsonl")


def test_two_process_finetune(tiny_model_dir, tmp_path, env):
    texts = [f"Question: What is {i} plus {i}? Answer: {2 * i}. Are you sure you accurately answered the "
             f"question based on your internal knowledge? I am sure." for i in range(16)]
    data = tmp_path / "d.json"
    data.write_text(json.dumps({"type": "text_only", "instances": [{"text": t} for t in texts]}))
    out = tmp_path / "m"
    proc = subprocess.run(["bash", "finetune/run_finetune.sh", "--num_processes", "2", "--cpu",
                           "--model_name_or_path", str(tiny_model_dir), "--dataset_path", str(data),
                           "--output_model_path", str(out), "--learning_rate", "5e-3", "--num_train_epochs", "4",
                           "--per_device_train_batch_size", "2", "--logging_steps", "1"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]
    info = json.loads((out / "finetune_args.json").read_text())
    assert info["world_size"] == 2
    assert info["torch_threads"] == 1  # OMP_NUM_THREADS from the environment wins over the launcher's share
    assert info["steps"] == 16  # 16 examples / (2 per device x 2 processes) x 4 epochs
    losses = [h["loss"] for h in json.loads((out / "training_log.json").read_text()) if "loss" in h]
    assert losses[-1] < losses[0] - 0.5


def test_shipped_accelerate_configs_parse():
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {p.stem: str(load_config_from_file(str(p)).distributed_type).split(".")[-1]
             for p in (REPO / "finetune" / "configs").glob("*.yaml")}
    assert kinds == {"single": "NO", "ddp": "MULTI_GPU", "fsdp": "FSDP", "zero2": "DEEPSPEED", "zero3": "DEEPSPEED"}


def test_deepspeed_config_without_deepspeed_says_so(env):
    pytest.importorskip("accelerate")
    try:
        import deepspeed  # noqa: F401
        pytest.skip("deepspeed is installed")
    except ImportError:
        pass
    proc = subprocess.run(["bash", "finetune/run_finetune.sh", "--accelerate_config", "finetune/configs/zero3.yaml",
                           "--dataset_path", "x", "--output_model_path", "y"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "pip install deepspeed" in proc.stderr


def test_launcher_runs_under_PYTHON_without_the_environment_on_PATH(env):
    """An interpreter named by PYTHON is enough: no `accelerate` command (nor venv) on PATH."""
    bare = {**env, "PATH": "/usr/bin:/bin"}
    args = ["bash", "finetune/run_finetune.sh", "--accelerate_config", "finetune/configs/single.yaml",
            "--dataset_path", "missing.json", "--output_model_path", "y"]
    proc = subprocess.run(args, cwd=REPO, env=bare, capture_output=True, text=True, timeout=300)
    # got past the launcher into rtuning.finetune, which names the missing dataset
    assert proc.returncode != 0 and "missing.json" in proc.stderr, proc.stderr[-3000:]
    proc = subprocess.run(args, cwd=REPO, env={**bare, "PYTHON": "/no/such/python"}, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "/no/such/python" in proc.stderr and "PYTHON" in proc.stderr


@pytest.mark.parametrize("flags, processes_here", [
    ([], 1),
    (["--num_processes", "2", "--cpu"], 2),
    (["--accelerate_config", "finetune/configs/ddp.yaml"], 8),  # its num_processes
    (["--accelerate_config", "finetune/configs/ddp.yaml", "--num_processes", "16", "--num_machines", "2"], 8),
])
def test_launcher_shares_this_machines_cores_among_its_processes(tmp_path, env, flags, processes_here):
    """accelerate launch alone would give every process OMP_NUM_THREADS=1; the launcher passes each
    process its share of the cores (at least one), unless OMP_NUM_THREADS is set."""
    stand_in = tmp_path / "python"  # imports like the real interpreter, prints what it would launch
    stand_in.write_text(f'#!/bin/bash\nif [ "$1" = -c ]; then exec {sys.executable} "$@"; fi\necho "$@"\n')
    stand_in.chmod(0o755)
    args = ["bash", "finetune/run_finetune.sh", *flags, "--dataset_path", "d.json", "--output_model_path", "o"]
    unset = {k: v for k, v in env.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run(args, cwd=REPO, env={**unset, "PYTHON": str(stand_in)}, capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    share = max(1, len(os.sched_getaffinity(0)) // processes_here)
    assert out[out.index("--num_cpu_threads_per_process") + 1] == str(share)
    out = subprocess.run(args, cwd=REPO, env={**env, "PYTHON": str(stand_in)}, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert "--num_cpu_threads_per_process" not in out  # OMP_NUM_THREADS=1 in env: accelerate passes it on
