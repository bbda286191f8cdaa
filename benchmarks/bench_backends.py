"""Backends side by side: the same model, questions and prompts through every inference backend.

    python benchmarks/bench_backends.py --model smollm2-135m --sample 128 --tasks pararel,mmlu \
        --kinds eval,probe --backends reference,generate,hf,vllm \
        --data_dir $RTUNING_DATA_DIR --output benchmarks/results/backends_smollm2-135m.json

For each task and kind (eval: answer + confidence + p(sure) on the ID test split; probe: the
training split's greedy probe) every backend runs `rtuning.pipeline.evaluate` / `probe` through
the same `TaskRunner` and prompts (built by rtuning.cli.Setup, shots included):

    reference  the original per-question algorithm (two `generate` calls a question)
    generate   plain batched `model.generate`, left padding, batch as large as fits
    hf         our engine (tree-packed prompts, shared-prefix and answer KV reuse)
    vllm       vLLM's offline LLM (prefix caching); skipped with a note when not installed

It prints a table per task and kind (questions/s, speedups, identical answers and the largest
probability differences against the reference, or the first backend listed, peak memory) and
writes everything to --output as JSON. The reference can be timed on fewer questions
(--reference_limit): its rate and agreement are then over those questions. Each row also has
`vs_hf`, its agreement with the hf backend (vllm's is the GPU's two-backend check). --runs
picks task:kind pairs instead of every task x kind (benchmarks/gpu_check.sh).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (FLOPS_RULE, Phase, machine, matmul_rate, param_counts, table,  # noqa: E402
                               useful_flops, write_result)


def parser(doc):
    from rtuning.cli import base_parser

    p = base_parser(doc)
    p.add_argument("--tasks", default="pararel", help="comma-separated: pararel, mmlu, ...")
    p.add_argument("--kinds", default="eval,probe", help="eval, probe or both")
    p.add_argument("--runs", default=None,
                   help="task:kind pairs in place of --tasks x --kinds, e.g. pararel:eval,pararel:probe,mmlu:eval")
    p.add_argument("--backends", default="reference,generate,hf,vllm",
                   help="in order; agreement is measured against the first one that ran")
    p.add_argument("--reference_limit", type=int, default=None, help="time the reference on the first N questions")
    p.add_argument("--output", required=True, help="JSON file for the results")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--matmul_seconds", type=float, default=1.5)
    p.add_argument("--matmul_size", type=int, default=None, help="n of the n x n matmul (default 2048, 8192 on GPU)")
    p.add_argument("--eval_new_tokens", type=int, default=None,
                   help="cap on answer tokens (random-weight models: keep random text from dominating)")
    p.set_defaults(sample=None, limit=None, backend="hf")
    return p


def build_backends(names, run, args, log):
    """The run's hf backend, the transformers peers over the same model, and vLLM if installed."""
    from rtuning.backends import BACKENDS, BackendError, BackendOptions, create_backend
    from rtuning.backends.generate import GenerateBackend
    from rtuning.backends.reference import ReferenceBackend

    hf = run.backend
    out = {}
    for name in names:
        if name == "hf":
            out[name] = hf
        elif name == "reference":
            out[name] = ReferenceBackend(hf.model, hf.tokenizer)
        elif name == "generate":
            out[name] = GenerateBackend(hf.model, hf.tokenizer)
        elif name == "vllm":
            why = BACKENDS["vllm"].missing()
            if why:
                log.append(f"vllm skipped: {why}")
                continue
            try:
                out[name] = create_backend("vllm", run.spec, BackendOptions(
                    device=args.device, dtype=args.dtype, tensor_parallel_size=args.tensor_parallel_size,
                    gpu_memory_utilization=args.gpu_memory_utilization, seed=args.seed,
                    extra={"max_model_len": args.max_prompt_tokens + 128}))
            except BackendError as e:
                log.append(f"vllm skipped: {e}")
        else:
            raise SystemExit(f"--backends: unknown {name!r}")
    return out


def run_one(kind, runner, examples, batch_size, args, folder, name):
    from rtuning.pipeline import evaluate, probe
    from rtuning.records import RunStore

    store = RunStore(folder / f"{name}.jsonl", folder / f"{name}.meta.json", {"bench": name})
    mbt = args.max_batch_tokens if getattr(runner.backend, "pads_batches", True) else None
    if kind == "eval":
        return evaluate(runner, examples, store, batch_size=batch_size, match=args.match, max_batch_tokens=mbt)
    return probe(runner, examples, store, method="unsure", batch_size=batch_size, seed=args.seed,
                 match=args.match, max_batch_tokens=mbt)


def agreement(kind, base, records):
    """Identical answers and the largest differences of confidence / p(sure) / letter probabilities."""
    text = "answer" if kind == "eval" else "output"
    conf = "answer_conf" if kind == "eval" else "confidence"
    same = [a[text] == b[text] for a, b in zip(base, records)]
    both = [(a, b) for a, b, s in zip(base, records, same) if s]
    out = {"compared": len(same), "identical_answers": sum(same) / len(same) if same else None,
           "max_conf_diff": max((abs(a[conf] - b[conf]) for a, b in both), default=0.0),
           "mismatches": [{"index": a["index"], "base": a[text], "this": b[text]}
                          for a, b, s in zip(base, records, same) if not s][:10]}
    if kind == "eval":
        out["max_sure_diff"] = max((abs(a["sure_prob"] - b["sure_prob"]) for a, b in both), default=0.0)
        if base and "option_probs" in base[0]:
            out["max_letter_prob_diff"] = max((abs(x - y) for a, b in zip(base, records)
                                               for x, y in zip(a["option_probs"], b["option_probs"])), default=0.0)
    return out


def main(argv=None) -> dict:
    import torch

    from rtuning.cli import Setup
    from rtuning.pipeline import TaskRunner
    from rtuning.tasks import get_task

    args = parser(__doc__).parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [b for b in args.backends.split(",") if b]
    doc = {"model": args.model, "machine": machine(), "flops_rule": FLOPS_RULE, "results": [], "notes": []}
    backends = None
    user_batch = args.batch_size  # Setup records its choice in args
    pairs = None
    if args.runs:
        pairs = [tuple(r.split(":", 1)) for r in args.runs.split(",") if r]
        bad = [":".join(r) for r in pairs if len(r) != 2 or r[1] not in ("eval", "probe")]
        if bad:
            raise SystemExit(f"--runs: {', '.join(bad)}: expected task:eval or task:probe")
        args.tasks = ",".join(dict.fromkeys(t for t, _ in pairs))
        args.kinds = ",".join(dict.fromkeys(k for _, k in pairs))
    for task_name in args.tasks.split(","):
        task = get_task(task_name)
        if args.eval_new_tokens:
            from dataclasses import replace

            task = replace(task, eval_new_tokens=min(task.eval_new_tokens, args.eval_new_tokens),
                           probe_new_tokens=min(task.probe_new_tokens, args.eval_new_tokens))
        for kind in args.kinds.split(","):
            if pairs is not None and (task_name, kind) not in pairs:
                continue
            split = task.domains[0] if kind == "eval" else "train"
            args.batch_size = user_batch
            run = Setup(args, task, split)
            if backends is None:
                backends = build_backends(names, run, args, doc["notes"])
                hf = run.backend
                dtype = next(hf.model.parameters()).dtype
                counts = param_counts(hf.model)
                mm = matmul_rate(dtype, hf.device, args.matmul_size, args.matmul_seconds)
                doc.update(matmul_flops_per_s=mm["flops_per_s"], matmul=mm, params=counts,
                           dtype=str(dtype).replace("torch.", ""), device=str(hf.device))
            else:  # Setup loaded the model again: use the first one
                run.backend = backends.get("hf", run.backend)
            rows, base, kept = [], None, {}
            for name, backend in backends.items():
                runner = TaskRunner(backend, task, run.runner.shots, run.max_prompt_tokens, run.rules)
                examples = run.examples
                if name == "reference" and args.reference_limit:
                    examples = examples[: args.reference_limit]
                batch = 1 if name == "reference" else (user_batch or run.suggest_batch_size(backend))
                with tempfile.TemporaryDirectory() as tmp:
                    run_one(kind, runner, examples[:2], batch, args, Path(tmp), "warmup")
                    getattr(backend, "reset_work", lambda: None)()
                    if hasattr(backend, "engine"):
                        backend.engine.clear_prefix_cache()
                    with Phase(hf.device, children=name == "vllm") as phase:
                        records = run_one(kind, runner, examples, batch, args, Path(tmp), name)
                work = backend.work()
                row = {"task": task.name, "kind": kind, "backend": name, "n": len(examples), "batch_size": batch,
                       "wall_s": phase.wall, "questions_per_s": len(examples) / phase.wall, "cpu_s": phase.cpu_s,
                       "peak_mb": phase.total_peak_mb, "peak_growth_mb": phase.peak_mb,
                       "memory_method": phase.memory_method, "other_cpu_share": phase.other_cpu_share,
                       "settings": backend.settings(), **work}
                if work.get("tokens_processed") and name != "vllm":
                    fl = useful_flops(counts, work["tokens_processed"], work["logit_rows"])
                    row["matmul_fraction"] = fl["useful_flops"] / phase.wall / doc["matmul_flops_per_s"]
                if base is None:
                    base = (name, records)
                else:
                    row["agreement_with"] = base[0]
                    row.update(agreement(kind, base[1], records[: len(base[1])]))
                rows.append(row)
                kept[name] = records
            # every backend against hf too, on the questions both answered (vllm vs hf is the
            # GPU agreement check; against the reference only its --reference_limit questions count)
            for r in rows:
                if "hf" in kept and r["backend"] != "hf":
                    n = min(len(kept["hf"]), len(kept[r["backend"]]))
                    r["vs_hf"] = agreement(kind, kept["hf"][:n], kept[r["backend"]][:n])
            rate = {r["backend"]: r["questions_per_s"] for r in rows}
            for r in rows:
                r["speedup_over"] = {o: r["questions_per_s"] / q for o, q in rate.items() if o != r["backend"]}
            doc["results"].extend(rows)
            print(report(task.name, kind, rows), flush=True)
            write_result(args.output, doc)  # as it goes: a long run killed later keeps these rows
    for note in doc["notes"]:
        print(note)
    write_result(args.output, doc)
    for b in (backends or {}).values():
        b.close()
    return doc


def report(task, kind, rows) -> str:
    f = lambda v, spec: "-" if v is None else format(v, spec)
    head = ("backend", "n", "batch", "q/s", "vs reference", "vs generate", "identical", "max|conf|", "max|sure|",
            "peak MB", "matmul")
    body = [(r["backend"], str(r["n"]), str(r["batch_size"]), f(r["questions_per_s"], ".2f"),
             f(r["speedup_over"].get("reference"), ".1f") + "x" if "reference" in r["speedup_over"] else "-",
             f(r["speedup_over"].get("generate"), ".1f") + "x" if "generate" in r["speedup_over"] else "-",
             f(r.get("identical_answers"), ".1%"), f(r.get("max_conf_diff"), ".1e"),
             f(r.get("max_sure_diff"), ".1e"), f(r["peak_mb"], ".0f"), f(r.get("matmul_fraction"), ".1%"))
            for r in rows]
    return f"\n{task} {kind}\n" + table(body, head)


if __name__ == "__main__":
    main()
