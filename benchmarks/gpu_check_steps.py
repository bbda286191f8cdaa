"""The Python steps of benchmarks/gpu_check.sh: environment, matmul peak, FSDP smoke run, summary.

    python benchmarks/gpu_check_steps.py env --output steps/env.json
    python benchmarks/gpu_check_steps.py peak --output steps/peak.json [--sizes 8192,16384]
    python benchmarks/gpu_check_steps.py fsdp --model FOLDER --output steps/fsdp.json
    python benchmarks/gpu_check_steps.py summary --steps steps --output OUTDIR/gpu_check.json

The shell script runs each step under its own timeout and leaves, per step NAME, NAME.status
(its exit status and seconds, or why it was skipped), NAME.log (its output) and NAME.json (its
result, when it got that far). `summary` turns them into one document with every section: the
section's figures, or {"skipped": why} / {"failed": why, "log_tail": ...}, so a reader sees at
once what was measured and what was not.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# (section, step that produces it) in the order the script runs them
SECTIONS = [("environment", "env"), ("model_embedded", "model_small"), ("model_3b", "model_3b"),
            ("matmul_peak", "peak"), ("backends_embedded", "bench_small"), ("backends_3b", "bench_3b"),
            ("finetune_embedded", "ft_small"), ("finetune_3b", "ft_3b"), ("fsdp_one_gpu", "fsdp")]
TARGETS = {"hf_over_reference_pararel_eval": 100.0, "vllm_over_generate_pararel_eval": 3.0}


# -- steps -------------------------------------------------------------------------------


def env_step(output: str) -> dict:
    """Versions, the device, and which optional backends and models can load here."""
    import platform

    import torch

    from rtuning.backends import BACKENDS

    doc = {"python": platform.python_version(), "torch": torch.__version__,
           "cuda_available": torch.cuda.is_available(), "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        doc.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1),
                   gpu_count=torch.cuda.device_count())
    for module in ("transformers", "accelerate", "tokenizers", "safetensors", "huggingface_hub", "vllm", "gguf"):
        try:
            doc[module] = __import__(module).__version__
        except Exception as e:  # noqa: BLE001 - a broken install is as informative as a missing one
            doc[module] = f"not importable: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    doc["vllm_backend"] = BACKENDS["vllm"].missing() or "available"
    try:
        from rtuning.models import resolve_model

        doc["embedded_model"] = resolve_model("smollm2-135m").path
    except SystemExit as e:
        doc["embedded_model"] = f"not installed: {e.code}"
    write(output, doc)
    return doc


def peak_step(output: str, sizes: list[int], seconds: float) -> dict:
    """The dense bf16 matmul rate (benchmarks/common.py matmul_rate) at each size; the peak is the best median."""
    import torch

    from benchmarks.common import matmul_rate
    from rtuning.models import pick_device

    device = pick_device("auto")
    runs = [matmul_rate(torch.bfloat16, device, n, seconds) for n in sizes]
    best = max(runs, key=lambda r: r["flops_per_s"])
    doc = {"device": str(device), "dtype": "bfloat16", "runs": runs, "bf16_flops_per_s": best["flops_per_s"],
           "n": best["n"], "method": "median time of n x n @ n x n torch.matmul calls, 2 n^3 FLOPs each"}
    write(output, doc)
    print(f"bf16 matmul on {device}: " + ", ".join(f"n={r['n']} {r['flops_per_s'] / 1e12:.1f} TFLOP/s" for r in runs))
    return doc


def fsdp_step(model: str, output: str) -> dict:
    """finetune/gpu_check.py's FSDP smoke run (run_finetune.sh with configs/fsdp.yaml, one process, 5 steps)."""
    import torch

    if not torch.cuda.is_available():
        doc = {"skipped": "no CUDA device: finetune/configs/fsdp.yaml shards over GPUs (use_cpu: false)"}
        print(doc["skipped"])
    else:
        from finetune.gpu_check import fsdp_smoke

        doc = {"model": model, **fsdp_smoke(model)}
        print(f"FSDP on one GPU: {'ok' if doc['ok'] else 'FAILED'} in {doc['seconds']} s")
    write(output, doc)  # a failed run is a result too (ok: false, its stderr): the summary shows it
    return doc


# -- summary -----------------------------------------------------------------------------


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def step_section(steps: Path, step: str) -> tuple[dict, dict | None]:
    """(the step's status for the report, its result or None): why it is missing when it is."""
    status = read_json(steps / f"{step}.status")
    result = read_json(steps / f"{step}.json")
    if status is None:
        return {"skipped": "not reached: the script stopped before this step"}, None
    if "skipped" in status:
        return status, None
    info = {"rc": status.get("rc"), "seconds": status.get("seconds"), "limit_s": status.get("limit_s")}
    rc = status.get("rc")
    if rc in (124, 137):
        return {**info, "failed": f"timed out after {status.get('limit_s')} s",
                "log_tail": log_tail(steps / f"{step}.log")}, None
    if result is not None and "skipped" in result and len(result) == 1:
        return {**info, "skipped": result["skipped"]}, None
    if rc != 0 or result is None:
        tail = log_tail(steps / f"{step}.log")
        if rc == 0:  # it ran and chose not to measure: its last line says why
            return {**info, "skipped": tail.splitlines()[-1] if tail else "the step wrote no result"}, None
        return {**info, "failed": f"exit status {rc}", "log_tail": tail}, None
    return info, result


def bench_view(doc: dict, peak: float | None) -> dict:
    """Per task and kind: each backend's rate, speedups, agreement and share of the measured peak."""
    runs: dict[str, dict] = {}
    for r in doc.get("results", []):
        row = {k: r.get(k) for k in ("n", "batch_size", "questions_per_s", "wall_s", "peak_mb", "matmul_fraction")}
        row["speedup_over"] = r.get("speedup_over", {})
        if r.get("matmul_fraction") is not None and peak:
            # matmul_fraction is useful FLOP/s over bench_backends' own matmul; rescaled to the peak step's
            row["share_of_bf16_peak"] = r["matmul_fraction"] * doc["matmul_flops_per_s"] / peak
        for key in ("agreement_with", "identical_answers", "max_conf_diff", "max_sure_diff", "max_letter_prob_diff"):
            if key in r:
                row[key] = r[key]
        if "vs_hf" in r:
            row["vs_hf"] = {k: v for k, v in r["vs_hf"].items() if k != "mismatches"}
        runs.setdefault(f"{r['task']} {r['kind']}", {})[r["backend"]] = row
    return {"model": doc.get("model"), "params": doc.get("params"), "dtype": doc.get("dtype"),
            "device": doc.get("device"), "bench_matmul_flops_per_s": doc.get("matmul_flops_per_s"),
            "notes": doc.get("notes", []), "runs": runs, "results": doc.get("results", [])}


def agreement_view(bench: dict) -> dict:
    """hf against vllm (the two-backend check), and against generate and the reference, per run."""
    vllm_note = next((n for n in bench.get("notes", []) if n.startswith("vllm")), "vllm did not run")
    out = {}
    for run, rows in bench.get("runs", {}).items():
        entry = {}
        for other in ("vllm", "generate"):
            entry[f"hf_vs_{other}"] = (rows[other].get("vs_hf") if other in rows and "hf" in rows
                                       else {"skipped": vllm_note if other == "vllm" else f"{other} did not run"})
        hf = rows.get("hf", {})
        entry["hf_vs_reference"] = ({k: hf[k] for k in ("identical_answers", "max_conf_diff", "max_sure_diff",
                                                         "max_letter_prob_diff") if k in hf}
                                    if hf.get("agreement_with") == "reference" else {"skipped": "reference did not run"})
        entry["hf_vs_reference"].setdefault("compared", rows.get("reference", {}).get("n"))
        out[run] = entry
    return out


def target_view(bench: dict) -> dict:
    """The issue's GPU targets on ParaRel evaluation, read off one model's runs."""
    rows = bench.get("runs", {}).get("pararel eval", {})
    out = {}
    for key, (backend, over) in {"hf_over_reference_pararel_eval": ("hf", "reference"),
                                 "vllm_over_generate_pararel_eval": ("vllm", "generate")}.items():
        x = rows.get(backend, {}).get("speedup_over", {}).get(over)
        out[key] = ({"value": x, "target": TARGETS[key], "met": x >= TARGETS[key]} if x is not None
                    else {"skipped": f"{backend} or {over} did not run"})
    return out


def summarize(steps: Path, total_s: float | None = None, budget_s: float | None = None) -> dict:
    """Every section of the check from the steps folder (module docstring)."""
    doc: dict = {"check": "benchmarks/gpu_check.sh (issue 22 item 7)", "seconds": total_s, "budget_s": budget_s,
                 "steps": {}}
    install = read_json(steps / "install.status") or {"skipped": "not reached"}
    if install.get("rc", 0) != 0:
        install["log_tail"] = log_tail(steps / "install.log")
    doc["steps"]["install"] = install
    results = {}
    for section, step in SECTIONS:
        doc["steps"][step], results[section] = step_section(steps, step)
    peak = (results["matmul_peak"] or {}).get("bf16_flops_per_s")
    for section, step in SECTIONS:
        result = results[section]
        if result is None:
            doc[section] = {k: v for k, v in doc["steps"][step].items()
                            if k in ("skipped", "failed", "log_tail", "seconds")}
        elif section.startswith("backends_"):
            doc[section] = bench_view(result, peak)
        elif section.startswith("finetune_"):
            doc[section] = dict(result)
            if peak:
                doc[section]["mfu_of_peak_step"] = result["model_flops_per_s"] / peak
        else:
            doc[section] = result
    doc["agreement"] = {}
    doc["targets"] = {}
    for name in ("embedded", "3b"):
        bench = doc.get(f"backends_{name}", {})
        if "runs" in bench:
            doc["agreement"][name] = agreement_view(bench)
            doc["targets"][name] = target_view(bench)
        else:
            why = bench.get("skipped") or bench.get("failed") or "no backends result"
            doc["agreement"][name] = {"skipped": f"backends benchmark: {why}"}
            doc["targets"][name] = {"skipped": f"backends benchmark: {why}"}
    doc["summary"] = summary_lines(doc)
    return doc


def _f(x, spec=".1f", unit=""):
    return "-" if x is None else format(x, spec) + unit


def summary_lines(doc: dict) -> list[str]:
    """A few lines a reader of the device's output tail can take in at once."""
    env = doc.get("environment", {})
    lines = [f"GPU check on {env.get('gpu', 'no GPU')} (torch {env.get('torch', '?')}, transformers "
             f"{env.get('transformers', '?')}, vllm: {env.get('vllm_backend', '?')}), "
             f"{_f(doc.get('seconds'), '.0f')} s of {_f(doc.get('budget_s'), '.0f')}"]
    install = doc["steps"].get("install", {})
    if install.get("rc", 0) != 0 or "skipped" in install:
        lines.append("install: " + (f"skipped ({install['skipped']})" if "skipped" in install
                                    else f"FAILED (exit {install['rc']}): {install.get('log_tail', '')[-300:]}"))
    peak = doc.get("matmul_peak", {})
    lines.append(f"bf16 matmul peak: {_f((peak.get('bf16_flops_per_s') or 0) / 1e12, '.4g')} TFLOP/s (n={peak.get('n')})"
                 if "bf16_flops_per_s" in peak else f"bf16 matmul peak: {_why(peak)}")
    for name in ("embedded", "3b"):
        bench = doc.get(f"backends_{name}", {})
        if "runs" not in bench:
            lines.append(f"backends, {name}: {_why(bench)}")
            continue
        for run, rows in bench["runs"].items():
            parts = []
            for b, r in rows.items():
                s = f"{b} {_f(r['questions_per_s'])} q/s"
                if b in ("hf", "vllm"):
                    sp = r["speedup_over"]
                    s += f" ({_f(sp.get('reference'))}x ref, {_f(sp.get('generate'))}x generate"
                    if r.get("share_of_bf16_peak") is not None:
                        s += f", {_f(100 * r['share_of_bf16_peak'])}% of peak"
                    s += ")"
                parts.append(s)
            lines.append(f"backends, {name}, {run}: " + " | ".join(parts))
        for run, entry in doc["agreement"][name].items():
            parts = []
            for key in ("hf_vs_vllm", "hf_vs_generate", "hf_vs_reference"):
                a = entry[key]
                why = "vllm: see the first line" if key == "hf_vs_vllm" else a.get("skipped")
                parts.append(f"{key} " + (f"skipped ({why})" if "skipped" in a else
                                          f"{_f(100 * a['identical_answers'])}% identical of {a.get('compared')}, "
                                          f"max|conf| {_f(a.get('max_conf_diff'), '.1e')}"
                                          + (f", max|sure| {_f(a['max_sure_diff'], '.1e')}" if "max_sure_diff" in a else "")
                                          if a.get("identical_answers") is not None else "nothing compared"))
            lines.append(f"agreement, {name}, {run}: " + "; ".join(parts))
        for key, t in doc["targets"][name].items():
            lines.append(f"target {name} {key}: " + (f"skipped ({t['skipped']})" if "skipped" in t else
                                                      f"{_f(t['value'])}x (target {t['target']:.0f}x): "
                                                      + ("met" if t["met"] else "NOT met")))
    for name in ("embedded", "3b"):
        ft = doc.get(f"finetune_{name}", {})
        lines.append(f"fine-tune, {name}: " + (
            f"{_f(ft['tokens_per_s'], '.0f')} tokens/s, MFU {_f(100 * ft['mfu'])}% of its own matmul, "
            f"{_f(100 * ft['mfu_of_peak_step']) if 'mfu_of_peak_step' in ft else '-'}% of the peak step"
            if "tokens_per_s" in ft else _why(ft)))
    fsdp = doc.get("fsdp_one_gpu", {})
    lines.append("FSDP on one GPU: " + (("ok" if fsdp["ok"] else "FAILED") + f" ({fsdp.get('steps')} steps, "
                                        f"{fsdp.get('seconds')} s)" if "ok" in fsdp else _why(fsdp)))
    return lines


def _why(section: dict) -> str:
    if "skipped" in section:
        return f"skipped ({section['skipped']})"
    if "failed" in section:
        return f"FAILED ({section['failed']})"
    return "no result"


def write(path: str | Path, doc: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(doc, indent=2) + "\n")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="step", required=True)
    s = sub.add_parser("env")
    s.add_argument("--output", required=True)
    s = sub.add_parser("peak")
    s.add_argument("--output", required=True)
    s.add_argument("--sizes", default="8192,16384", help="comma-separated n of the n x n matmuls")
    s.add_argument("--seconds", type=float, default=1.5, help="time per size")
    s = sub.add_parser("fsdp")
    s.add_argument("--model", required=True)
    s.add_argument("--output", required=True)
    s = sub.add_parser("summary")
    s.add_argument("--steps", required=True, help="the folder of NAME.status / NAME.json / NAME.log")
    s.add_argument("--output", required=True)
    s.add_argument("--seconds", type=float, default=None, help="the check's wall time so far")
    s.add_argument("--budget", type=float, default=None, help="the check's time budget")
    args = p.parse_args(argv)
    if args.step == "env":
        env = env_step(args.output)
        print("; ".join(f"{k} {v}" for k, v in env.items()))
    elif args.step == "peak":
        peak_step(args.output, [int(n) for n in args.sizes.split(",") if n], args.seconds)
    elif args.step == "fsdp":
        fsdp_step(args.model, args.output)
    else:
        doc = summarize(Path(args.steps), args.seconds, args.budget)
        write(args.output, doc)
        print("\n".join(doc["summary"]))


if __name__ == "__main__":
    main()
