"""One benchmark run: the original per-question algorithm (a) against the engine's real path (b).

Used by bench_eval.py (answer + sure-probability) and bench_probe.py (15-token greedy answers).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.common import (FLOPS_RULE, Phase, bench_parser, machine, matmul_rate, param_counts, setup,
                               table, useful_flops, write_result)
from benchmarks.reference import reference_evaluate, reference_probe


def _engine_counters(engine) -> tuple[int | None, int | None, int | None]:
    return (getattr(engine, "tokens_processed", None), getattr(engine, "logit_rows", None),
            getattr(engine, "token_slots", None))


def _reset(engine) -> None:
    for name in ("reset_counters", "clear_prefix_cache"):
        fn = getattr(engine, name, None)
        if fn is not None:
            fn()


def run_comparison(kind: str, argv: list[str] | None, doc: str | None) -> dict:
    """kind: "eval" (answers, confidences, sure-probabilities) or "probe" (15-token answers)."""
    from rtuning.pipeline import evaluate, probe
    from rtuning.records import RunStore

    args = bench_parser(doc, "ID" if kind == "eval" else "train").parse_args(argv)
    run = setup(args, args.domain)
    runner, examples = run.runner, run.examples
    engine, task = runner.engine, runner.task
    device = engine.device
    dtype = next(engine.model.parameters()).dtype
    # the prompts pipeline.probe and pipeline.evaluate send (probing uses the task's probe prompt)
    prompts = [runner.prompt(task.probing(ex) if kind == "probe" else ex) for ex in examples]
    counts = param_counts(engine.model)
    new_tokens = task.eval_new_tokens if kind == "eval" else task.probe_new_tokens

    def reference(ps):
        if kind == "eval":
            return reference_evaluate(engine, ps, new_tokens, task.sure_sep)
        return reference_probe(engine, ps, new_tokens)

    def engine_run(exs, folder: Path, name: str, reuse_cache: bool = True):
        store = RunStore(folder / f"{name}.jsonl", folder / f"{name}.meta.json", {"bench": name})
        if kind == "eval":
            return evaluate(runner, exs, store, batch_size=args.batch_size, match=args.match,
                            max_batch_tokens=args.max_batch_tokens, reuse_cache=reuse_cache)
        return probe(runner, exs, store, method="unsure", batch_size=args.batch_size, seed=args.seed,
                     match=args.match, max_batch_tokens=args.max_batch_tokens)

    n = len(examples)
    sure_forward = {}
    mm_before = matmul_rate(dtype, device, args.matmul_size, args.matmul_seconds)
    ref = None
    if not args.skip_reference:
        reference(prompts[:2])  # warm-up
        with Phase(device) as ref_phase:
            ref = reference(prompts)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        engine_run(examples[: args.batch_size], Path(tmp), "warmup")  # warm-up: one full batch
        for i in range(max(1, args.repeat)):
            _reset(engine)  # counters and the kept prefix: every run starts cold
            with Phase(device) as phase:
                records = engine_run(examples, Path(tmp), f"timed{i}")
            runs.append((phase.wall, phase, _engine_counters(engine), records))
        if kind == "eval":
            # the other way to score the sure question: one batched forward pass over the full
            # sure prompts (prompt tree-packed again) instead of continuing from the answer's cache
            _reset(engine)
            with Phase(device) as fwd_phase:
                fwd_records = engine_run(examples, Path(tmp), "sure_forward", reuse_cache=False)
            sure_forward = {"engine_sure_forward_s": fwd_phase.wall, "engine_sure_forward_qps": n / fwd_phase.wall,
                            "sure_forward_tokens_processed": _engine_counters(engine)[0],
                            "sure_forward_max_sure_diff": max(abs(a["sure_prob"] - b["sure_prob"])
                                                              for a, b in zip(fwd_records, runs[-1][3]))}
    runs.sort(key=lambda x: x[0])
    _, eng_phase, (tokens, logit_rows, slots), records = runs[len(runs) // 2]  # the median run
    mm_after = matmul_rate(dtype, device, args.matmul_size, args.matmul_seconds)
    mm = max(mm_before["flops_per_s"], mm_after["flops_per_s"])  # the larger: never flatters the fraction

    out = {
        "benchmark": kind, "model": args.model, "n": n, "domain": args.domain, "num_shots": run.num_shots,
        "batch_size": args.batch_size, "max_batch_tokens": args.max_batch_tokens, "new_tokens": new_tokens,
        "device": str(device), "dtype": str(dtype).replace("torch.", ""),
        "torch_threads": machine()["torch_threads"], "machine": machine(),
        "engine_s": eng_phase.wall, "engine_qps": n / eng_phase.wall, "engine_peak_mb": eng_phase.total_peak_mb,
        "engine_peak_growth_mb": eng_phase.peak_mb,
        "engine_runs_s": [r[0] for r in runs], "engine_cpu_s": eng_phase.cpu_s,
        "engine_cpu_share": eng_phase.own_cpu_share, "engine_other_cpu_share": eng_phase.other_cpu_share,
        "matmul_flops_per_s": mm, "matmul_before": mm_before, "matmul_after": mm_after,
        "flops_rule": FLOPS_RULE, "params": counts, "memory_method": eng_phase.memory_method,
        "batch_size_source": run.info.get("batch_size_source"), **sure_forward,
    }
    if tokens is not None:
        fl = useful_flops(counts, tokens, logit_rows)
        out.update({"engine_tokens_processed": tokens, "engine_logit_rows": logit_rows,
                    "engine_token_slots": slots,
                    "engine_padding_share": (1 - tokens / slots) if slots else None,
                    "engine_useful_flops_per_s": fl["useful_flops"] / eng_phase.wall,
                    "matmul_fraction": fl["useful_flops"] / eng_phase.wall / mm,
                    "matmul_fraction_2x_all_params": fl["useful_flops_2x_all_params"] / eng_phase.wall / mm})
    if ref is not None:
        rt, rl = sum(r["tokens_processed"] for r in ref), sum(r["logit_rows"] for r in ref)
        rfl = useful_flops(counts, rt, rl)
        out.update({"reference_s": ref_phase.wall, "reference_qps": n / ref_phase.wall,
                    "reference_cpu_s": ref_phase.cpu_s, "cpu_time_speedup": ref_phase.cpu_s / eng_phase.cpu_s,
                    "reference_peak_mb": ref_phase.total_peak_mb, "reference_peak_growth_mb": ref_phase.peak_mb,
                    "reference_cpu_share": ref_phase.own_cpu_share,
                    "reference_other_cpu_share": ref_phase.other_cpu_share,
                    "reference_tokens_processed": rt, "reference_logit_rows": rl,
                    "reference_matmul_fraction": rfl["useful_flops"] / ref_phase.wall / mm,
                    "speedup": ref_phase.wall / eng_phase.wall,
                    # the target's measure: peak memory of the process, weights included
                    "peak_memory_ratio": eng_phase.total_peak_mb / ref_phase.total_peak_mb,
                    "peak_growth_ratio": eng_phase.peak_mb / ref_phase.peak_mb if ref_phase.peak_mb > 0 else None})
        out.update(agreement(kind, ref, records))
    write_result(args.output, out)
    print(report(out))
    return out


def agreement(kind: str, ref: list[dict], records: list[dict]) -> dict:
    """Share of identical answers and the largest probability differences (over identical answers)."""
    text_key, conf_key = ("answer", "answer_conf") if kind == "eval" else ("output", "confidence")
    same, conf_diff, sure_diff, mismatches = 0, 0.0, 0.0, []
    for r, e in zip(ref, records):
        if r["text"] == e[text_key]:
            same += 1
            conf_diff = max(conf_diff, abs(r["confidence"] - e[conf_key]))
            if kind == "eval":
                sure_diff = max(sure_diff, abs(r["sure_prob"] - e["sure_prob"]))
        elif len(mismatches) < 10:
            mismatches.append({"index": e["index"], "reference": r["text"], "engine": e[text_key]})
    out = {"identical_answers": same / len(ref) if ref else None, "max_conf_diff": conf_diff,
           "mismatches": mismatches}
    if kind == "eval":
        out["max_sure_diff"] = sure_diff
    return out


def report(o: dict) -> str:
    f = lambda v, spec: "-" if v is None else format(v, spec)
    rows = [("questions/s", f(o.get("reference_qps"), ".2f"), f(o["engine_qps"], ".2f")),
            ("wall s", f(o.get("reference_s"), ".1f"), f(o["engine_s"], ".1f")),
            ("CPU s (this process)", f(o.get("reference_cpu_s"), ".1f"), f(o["engine_cpu_s"], ".1f")),
            ("peak memory MB (process)", f(o.get("reference_peak_mb"), ".0f"), f(o["engine_peak_mb"], ".0f")),
            ("peak growth MB (working set)", f(o.get("reference_peak_growth_mb"), ".0f"),
             f(o.get("engine_peak_growth_mb"), ".0f")),
            ("tokens processed", f(o.get("reference_tokens_processed"), "d"), f(o.get("engine_tokens_processed"), "d")),
            ("useful matmul share", f(o.get("reference_matmul_fraction"), ".1%"), f(o.get("matmul_fraction"), ".1%")),
            ("other processes' CPU", f(o.get("reference_other_cpu_share"), ".0%"),
             f(o.get("engine_other_cpu_share"), ".0%"))]
    lines = [f"{o['benchmark']}: {o['model']}, {o['n']} ParaRel {o['domain']} questions, batch {o['batch_size']}, "
             f"{o['dtype']} on {o['device']} ({o['machine']['cpu']}, {o['torch_threads']} torch threads)",
             table(rows, ("", "(a) original", "(b) engine"))]
    if o.get("engine_sure_forward_qps"):
        lines.append(f"sure question as one batched forward pass instead of continuing from the answer's cache: "
                     f"{o['engine_sure_forward_qps']:.2f} q/s vs {o['engine_qps']:.2f} "
                     f"(max |sure diff| {o['sure_forward_max_sure_diff']:.1e})")
    if len(o["engine_runs_s"]) > 1:
        lines.append("engine runs (s): " + ", ".join(f"{x:.2f}" for x in o["engine_runs_s"]) + "; the median is shown")
    if "speedup" in o:
        lines.append(f"speedup {o['speedup']:.2f}x (CPU time {o['cpu_time_speedup']:.2f}x); "
                     f"identical answers {o['identical_answers']:.1%}; max |conf diff| {o['max_conf_diff']:.2e}"
                     + (f"; max |sure diff| {o['max_sure_diff']:.2e}" if "max_sure_diff" in o else ""))
    lines.append(f"dense matmul {o['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s "
                 f"({o['matmul_before']['n']}^3 {o['dtype']}, median)")
    return "\n".join(lines)
