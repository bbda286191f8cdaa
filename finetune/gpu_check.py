"""GPU check for fine-tuning: bf16 throughput and model FLOPs utilisation, plus an FSDP smoke run.

    python finetune/gpu_check.py --model smollm2-135m --steps 30 --batch_size 16 --output gpu_check.json

On one CUDA device: measures the card's dense bf16 matmul rate (8192^3 matmuls), then runs a
full-parameter bf16 (autocast) fine-tune of the model on ParaRel-style texts for --steps
optimizer steps after --warmup steps, and reports tokens/s and MFU = 6 x parameters x
tokens/s / matmul rate (forward + backward, non-padding tokens). Then it runs
finetune/run_finetune.sh with finetune/configs/fsdp.yaml on one process for a few steps as a
smoke test. Without a GPU it says so and exits 0 (nothing to measure), unless --device cpu
asks for the same measurement on the CPU (smoke tests of benchmarks/gpu_check.sh; no FSDP).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_rate(dtype: torch.dtype, n: int = 8192, repeats: int = 20, device: str = "cuda") -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - t0)


def texts(n: int) -> list[str]:
    suffix = " Are you sure you accurately answered the question based on your internal knowledge? I am"
    return [f"Question: Which country is person number {i} a citizen of? Answer: Country {i % 97}.{suffix}"
            f" {'sure' if i % 3 else 'unsure'}." for i in range(n)]


def throughput(model_name: str, steps: int, warmup: int, batch_size: int, device: str = "cuda") -> dict:
    from transformers import AutoModelForCausalLM

    from rtuning.finetune import PadCollator, TextDataset
    from rtuning.models import load_tokenizer, materialize, resolve_model

    spec = resolve_model(model_name)
    tok = load_tokenizer(spec, padding_side="right")
    model = AutoModelForCausalLM.from_pretrained(materialize(spec), dtype=torch.float32).to(device).train()
    data = TextDataset(texts(batch_size * (steps + warmup)), tok, 512)
    collate = PadCollator(tok.pad_token_id)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5)
    params = sum(p.numel() for p in model.parameters())
    tokens, losses = 0, []
    for step in range(steps + warmup):
        if step == warmup:
            _sync(device)
            t0, tokens = time.perf_counter(), 0
        batch = collate([data[i] for i in range(step * batch_size, (step + 1) * batch_size)])
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += int(batch["attention_mask"].sum())
        losses.append(float(loss))
    _sync(device)
    seconds = time.perf_counter() - t0
    return {"parameters": params, "steps": steps, "batch_size": batch_size, "tokens": tokens,
            "seconds": seconds, "tokens_per_s": tokens / seconds, "model_flops_per_s": 6 * params * tokens / seconds,
            "first_loss": losses[0], "last_loss": losses[-1],
            "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None}


def fsdp_smoke(model_name: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "d.json"
        data.write_text(json.dumps({"type": "text_only", "instances": [{"text": t} for t in texts(64)]}))
        cmd = ["bash", "finetune/run_finetune.sh", "--accelerate_config", "finetune/configs/fsdp.yaml",
               "--num_processes", "1", "--model_name_or_path", model_name, "--dataset_path", str(data),
               "--output_model_path", str(Path(tmp) / "out"), "--max_steps", "5", "--dtype", "bf16"]
        t0 = time.time()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        ok = proc.returncode == 0 and (Path(tmp) / "out" / "config.json").is_file()
        info = json.loads((Path(tmp) / "out" / "finetune_args.json").read_text()) if ok else {}
        return {"ok": ok, "seconds": round(time.time() - t0, 1), "steps": info.get("steps"),
                "stderr_tail": "" if ok else proc.stderr[-2000:]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--output", default="gpu_check.json")
    p.add_argument("--skip_fsdp", action="store_true")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cpu: the same measurement on the CPU, for smoke tests (FSDP skipped)")
    p.add_argument("--matmul_size", type=int, default=8192)
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing to measure (the CPU tests cover the code paths)")
        return
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    result = {"device": name, "torch": torch.__version__, "model": args.model,
              "bf16_matmul_flops": matmul_rate(torch.bfloat16, args.matmul_size, device=args.device)}
    result.update(throughput(args.model, args.steps, args.warmup, args.batch_size, args.device))
    result["mfu"] = result["model_flops_per_s"] / result["bf16_matmul_flops"]
    if not args.skip_fsdp and args.device == "cuda":
        result["fsdp_one_gpu"] = fsdp_smoke(args.model)
    Path(args.output).write_text(json.dumps(result, indent=2))
    print(f"{result['device']}: bf16 matmul {result['bf16_matmul_flops'] / 1e12:.1f} TFLOP/s; "
          f"fine-tune {result['tokens_per_s']:.0f} tokens/s, {result['model_flops_per_s'] / 1e12:.2f} TFLOP/s, "
          f"MFU {100 * result['mfu']:.1f}%, peak {result['peak_memory_gb'] or 0:.1f} GB; "
          f"loss {result['first_loss']:.3f} -> {result['last_loss']:.3f}")
    if "fsdp_one_gpu" in result:
        print(f"FSDP on one GPU: {'ok' if result['fsdp_one_gpu']['ok'] else 'FAILED'}")
    sys.exit(0 if result.get("fsdp_one_gpu", {"ok": True})["ok"] else 1)


if __name__ == "__main__":
    main()
