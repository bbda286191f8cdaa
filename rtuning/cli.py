"""Command-line front ends shared by training/<dataset>/run_*.py and evaluation/run_*.py."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .records import REPO_ROOT, RunConflict, RunStore, environment, file_sha256, git_commit, write_json
from .tasks import DataError, Shots, get_task

DATA_ENV = "RTUNING_DATA_DIR"


def default_data_dir() -> str:
    """$RTUNING_DATA_DIR, else dataset/ in the project (where dataset/README.md puts the data)."""
    return os.environ.get(DATA_ENV) or str(REPO_ROOT / "dataset")


def base_parser(doc: str | None) -> argparse.ArgumentParser:
    from .models import DEFAULT_MODEL

    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="registry name (smollm2-135m), Hugging Face id, local folder or .gguf file")
    p.add_argument("--data_dir", default=default_data_dir(),
                   help=f"R-Tuning data folder (default: ${DATA_ENV} or dataset/)")
    p.add_argument("--result", default=None, help="name prefix of the output files")
    p.add_argument("--limit", type=int, default=None, help="only the first N questions (smoke runs)")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps ...")
    p.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU), fp32, bf16, fp16")
    p.add_argument("--num_shots", type=int, default=None,
                   help="solved training examples before each prompt (default: the model's "
                        "recommended value, 0 for models outside the registry, as in the paper)")
    p.add_argument("--match", choices=("substring", "normalized"), default="substring",
                   help="correctness rule: the original case-sensitive substring, or normalised words")
    p.add_argument("--overwrite", action="store_true", help="discard earlier outputs instead of resuming")
    return p


def _fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def _setup(args, task_name: str, split: str):
    """Load data first (cheap, catches data errors before the model loads), then the model."""
    from .engine import Engine
    from .models import load_model, pick_device, pick_dtype, resolve_model
    from .pipeline import TaskRunner

    task = get_task(task_name)
    examples = task.load(args.data_dir, split)
    if args.limit is not None:
        examples = examples[: args.limit]
    spec = resolve_model(args.model)
    num_shots = spec.recommended_shots if args.num_shots is None else args.num_shots
    shots_pool = task.load(args.data_dir, "train") if num_shots else []
    shots = Shots(task, shots_pool, num_shots, args.seed)
    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)
    t0 = time.time()
    model, tok = load_model(spec, device, dtype)
    print(f"loaded {args.model} on {device} ({dtype}) in {time.time() - t0:.1f}s", file=sys.stderr)
    runner = TaskRunner(Engine(model, tok), task, shots)
    data_file = task.path(args.data_dir, split)
    info = {
        "task": task.name, "split": split, "model": args.model, "model_path": spec.path,
        "gguf_file": spec.gguf_file, "data_file": str(data_file), "data_sha256": file_sha256(data_file),
        "num_shots": num_shots, "num_shots_source": "argument" if args.num_shots is not None else
        ("model registry" if spec.entry else "paper default"),
        "shots": [s.index for s in shots.pool], "device": str(device), "dtype": str(dtype).replace("torch.", ""),
        "git_commit": git_commit(), "environment": environment(), "argv": sys.argv,
    }
    return task, examples, spec, runner, info


def _config(args, info: dict, **extra) -> dict:
    # Everything that changes the numbers; batch size and device only move them within float noise.
    return {"model": args.model, "data_sha256": info["data_sha256"], "split": info["split"],
            "limit": args.limit, "seed": args.seed, "num_shots": info["num_shots"], "match": args.match,
            "dtype": info["dtype"], **extra}


def probe_main(task_name: str, argv: list[str] | None = None, doc: str | None = None) -> dict:
    """`training/<dataset>/run_<dataset>.py`: probe, split certain/uncertain, write training data."""
    from .pipeline import METHODS, lmflow_text_only, probe, training_texts

    p = base_parser(doc)
    p.add_argument("--method", choices=METHODS, default="unsure")
    p.add_argument("--num_try", type=int, default=5, help="samples per question for --method uncertain")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature for uncertain")
    p.add_argument("--output_dir", default=str(REPO_ROOT / "training" / "training_data"))
    args = p.parse_args(argv)
    try:
        task, examples, spec, runner, info = _setup(args, task_name, "train")
        result = args.result or f"{task.name}_{spec.tag}"
        out = Path(args.output_dir)
        stem = out / f"{result}_{args.method}"
        extra = {"method": args.method}
        if args.method == "uncertain":
            extra.update(num_try=args.num_try, temperature=args.temperature)
        store = RunStore(stem.with_suffix(".records.jsonl"), stem.with_suffix(".meta.json"),
                         _config(args, info, **extra), overwrite=args.overwrite)
        store.start(args=vars(args), **info)
        t0 = time.time()
        records = probe(runner, examples, store, method=args.method, batch_size=args.batch_size,
                        seed=args.seed, match=args.match, num_try=args.num_try, temperature=args.temperature)
    except (DataError, RunConflict) as e:
        _fail(str(e))
    texts = training_texts(task, examples, records, args.method, args.seed)
    from .records import write_jsonl

    write_jsonl(stem.with_suffix(".records.jsonl"), records)
    data_path = stem.with_suffix(".json")
    write_json(data_path, lmflow_text_only(texts))
    n_certain = sum(r["certain"] for r in records)
    counts = {"questions": len(records), "certain": n_certain, "uncertain": len(records) - n_certain,
              "greedy_correct": sum(r["correct"] for r in records)}
    store.finish(counts=counts, wall_time_s=round(time.time() - t0, 2), training_data=str(data_path))
    print(json.dumps({"training_data": str(data_path), **counts}, indent=2))
    return counts


def evaluate_main(task_name: str, argv: list[str] | None = None, doc: str | None = None,
                  domains: tuple[str, ...] = ("ID", "OOD")) -> dict:
    """`evaluation/run_<dataset>.py`: answers, confidences and the summary table."""
    from .metrics import format_table, summarize
    from .pipeline import evaluate

    p = base_parser(doc)
    p.add_argument("--domain", choices=domains, default=domains[0])
    p.add_argument("--output_dir", default=str(REPO_ROOT / "evaluation" / "results"))
    args = p.parse_args(argv)
    try:
        task, examples, spec, runner, info = _setup(args, task_name, args.domain)
        result = args.result or f"{spec.tag}_{task.name}"
        stem = Path(args.output_dir) / f"{result}_{args.domain}"
        store = RunStore(stem.with_suffix(".jsonl"), stem.with_suffix(".meta.json"),
                         _config(args, info), overwrite=args.overwrite)
        store.start(args=vars(args), **info)
        t0 = time.time()
        records = evaluate(runner, examples, store, batch_size=args.batch_size, match=args.match)
    except (DataError, RunConflict) as e:
        _fail(str(e))
    wall = time.time() - t0
    # The original's results file: one [correct, answer_conf, sure_prob] per question, in order.
    write_json(stem.with_suffix(".json"), [[r["correct"], r["answer_conf"], r["sure_prob"]] for r in records])
    summary = summarize([r["correct"] for r in records], [r["answer_conf"] for r in records],
                        [r["sure_prob"] for r in records])
    row = {"result": result, "task": task.name, "domain": args.domain, "model": args.model, **summary}
    summary_doc = {**row, "match": args.match, "num_shots": info["num_shots"], "seed": args.seed,
                   "wall_time_s": round(wall, 2), "questions_per_s": round(len(records) / wall, 3) if wall else None,
                   "results_file": str(stem.with_suffix(".json")), "records_file": str(stem.with_suffix(".jsonl")),
                   "git_commit": info["git_commit"], "data_sha256": info["data_sha256"]}
    write_json(stem.with_suffix(".summary.json"), summary_doc)
    store.finish(summary=summary, wall_time_s=round(wall, 2))
    print(format_table([row], SUMMARY_COLUMNS))
    return summary_doc


SUMMARY_COLUMNS = [
    ("task", "task", ""), ("domain", "domain", ""), ("n", "n", "d"), ("accuracy", "acc%", ".2%"),
    ("ap", "AP%", ".2%"), ("ap_answer_conf", "AP(conf)%", ".2%"), ("ap_sure_prob", "AP(sure)%", ".2%"),
    ("answer_rate", "answer%", ".2%"), ("accuracy_answered", "acc@ans%", ".2%"),
]
