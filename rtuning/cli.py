"""Command-line front ends shared by training/<dataset>/run_*.py and evaluation/run_*.py."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from pathlib import Path

from .records import REPO_ROOT, RunConflict, RunStore, environment, file_sha256, git_commit, read_jsonl, write_json
from .distributed import current as current_processes
from .backends import BACKENDS
from .scoring import COMPAT_MODES
from .tasks import DataError, Shots, Task, get_task

DATA_ENV = "RTUNING_DATA_DIR"


# How sampled multiple-choice answers are drawn (part of the resume key: earlier versions drew
# them with one forward pass per sample, other draws from the same distribution)
LETTER_SAMPLES = "from the greedy pass's letter distribution"


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
    p.add_argument("--dataset", default=None,
                   help="data file stem in the dataset's folder, as the original's --dataset (e.g. wice_test, "
                        "hotpot_10k); default: the file of the split (--domain, or the training file)")
    p.add_argument("--limit", type=int, default=None, help="only the first N questions (smoke runs)")
    p.add_argument("--sample", type=int, default=None,
                   help="a random N questions (drawn with --seed, kept in file order): a reduced run that "
                        "still covers every relation/subject, where the files' first N cover only a few")
    p.add_argument("--batch_size", type=int, default=None,
                   help="questions per batch (default: Engine.suggest_batch_size's rule from the prompts' "
                        "length, the device and its free memory: 64 at most on CPU, 256 on GPU)")
    p.add_argument("--max_batch_tokens", type=int, default=16384,
                   help="cap on padded tokens per batch, so long prompts get smaller batches")
    p.add_argument("--max_prompt_tokens", type=int, default=2048,
                   help="longer prompts lose context (evidence, paragraphs, shots) from the left; "
                        "the question is always kept (capped by the model's context length)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps ...")
    p.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU), fp32, bf16, fp16")
    p.add_argument("--device_map", default=None,
                   help="'auto' shards a model too big for one GPU across the visible GPUs (explicit "
                        "choice; otherwise the whole model goes to --device)")
    p.add_argument("--num_shots", type=int, default=None,
                   help="solved training examples before each open-QA prompt (default: the model's "
                        "recommended value, 0 for models outside the registry, as in the paper)")
    p.add_argument("--match", choices=("substring", "normalized"), default="substring",
                   help="correctness rule: the original case-sensitive substring, or normalised words")
    p.add_argument("--overwrite", action="store_true", help="discard earlier outputs instead of resuming")
    p.add_argument("--backend", default="auto", choices=("auto", *BACKENDS),
                   help="inference backend: hf (transformers, batched), vllm (vLLM offline LLM), reference "
                        "(the original per-question algorithm); auto = vllm when installed with a GPU, else hf")
    p.add_argument("--tensor_parallel_size", type=int, default=1,
                   help="GPUs one model is sharded over (vllm backend)")
    p.add_argument("--gpu_memory_utilization", type=float, default=0.9,
                   help="share of each GPU's memory vLLM may take (vllm backend)")
    p.add_argument("--compat", choices=COMPAT_MODES, default="default",
                   help="scoring rules: default (ours: period stop, the letter token that really follows, "
                        "the stripped answer in the sure question) or original (the original release's "
                        "stop id, letter ids, answer spacing and probe reading, to compare with published "
                        "numbers); see README 'How it differs'")
    return p


# Arguments that do not change a run's numbers, so a rerun that changes them may resume: where
# files go, whether to start over, and how work is split (batch composition, the padded-token
# cap and the device move results within float rounding; the backend's own settings, dtype
# included, are part of the key as the backend reports them). Every other argument is part of
# the resume key by default, so a new option can never be left out of it by mistake.
NOT_IN_RESUME_KEY = frozenset({"data_dir", "result", "output_dir", "overwrite", "batch_size", "max_batch_tokens",
                               "device", "device_map", "gpu_memory_utilization", "backend", "dtype",
                               # read after the records, into the summary only
                               "reference"})


def resume_key(args: argparse.Namespace) -> dict:
    """Every argument that can change results, by name (see NOT_IN_RESUME_KEY)."""
    return {k: v for k, v in sorted(vars(args).items()) if k not in NOT_IN_RESUME_KEY}


def _fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def _resuming(store: RunStore, total: int) -> None:
    """Say at the start that a rerun continues earlier records (the bar alone does not say why it starts part way)."""
    if store.resumed and store.rank == 0:
        print(f"resuming: {store.resumed} of {total} questions already done in {store.records_path}", file=sys.stderr)


def _interrupted(store: RunStore | None, total: int) -> None:
    """Ctrl-C: what is saved and how to go on, instead of a traceback; exit status 130 as for SIGINT."""
    if store is None:
        print("\ninterrupted before any question was answered", file=sys.stderr)
    else:
        print(f"\ninterrupted: {len(store.done)} of {total} questions saved in {store.records_path}; "
              "rerun the same command to resume", file=sys.stderr)
    raise SystemExit(130)


class Setup:
    """What a run needs, loaded in order: data first (cheap, catches data errors), then the model."""

    def __init__(self, args, task: Task, split: str):
        from .backends import BackendError, BackendOptions, create_backend, resolve_backend
        from .models import ModelNotFound, resolve_model
        from .pipeline import TaskRunner
        from .scoring import ScoringRules

        if args.dataset is not None:
            task = task.with_dataset(split, args.dataset)
        self.task = task
        examples = task.load(args.data_dir, split)
        if args.sample is not None:
            if args.limit is not None:
                raise DataError("--sample and --limit both choose questions; pass one of them")
            if args.sample < 1:
                raise DataError(f"--sample {args.sample}: pass a number of questions, 1 or more")
            if args.sample < len(examples):
                keep = sorted(random.Random(args.seed).sample(range(len(examples)), args.sample))
                examples = [examples[i] for i in keep]
        if args.limit is not None and args.limit < 1:
            # a slice would give no questions (0) or drop the last ones (-3)
            raise DataError(f"--limit {args.limit}: pass a number of questions, 1 or more")
        self.examples = examples[: args.limit] if args.limit is not None else examples
        try:
            self.spec = spec = resolve_model(args.model)
        except ModelNotFound as e:
            raise DataError(str(e.code)) from None
        # Shots shape the answer format of open questions; letter scoring needs none.
        recommended = spec.recommended_shots if task.kind != "choice" else 0
        self.num_shots = recommended if args.num_shots is None else args.num_shots
        shots_task = get_task(task.shots_from) if task.shots_from else task
        pool = shots_task.load(args.data_dir, "train") if self.num_shots else []
        shots = Shots(shots_task, pool, self.num_shots, args.seed)
        self.procs = procs = current_processes()
        if procs.world > 1 and args.device_map:
            raise DataError("--device_map shards one model over the GPUs; do not combine it with a "
                            "data-parallel launch (one model per process)")
        backend_name = resolve_backend(args.backend)
        options = BackendOptions(
            device=args.device, dtype=args.dtype, device_map=args.device_map,
            tensor_parallel_size=args.tensor_parallel_size, gpu_memory_utilization=args.gpu_memory_utilization,
            seed=args.seed, extra={"process_device": procs.device if procs.world > 1 else None,
                                   # room for the prompt, the answer and the sure question after it
                                   "max_model_len": args.max_prompt_tokens + task.probe_new_tokens + 64})
        t0 = time.time()
        try:
            self.backend = backend = create_backend(backend_name, spec, options)
        except BackendError as e:
            raise DataError(str(e)) from None
        settings = backend.settings()
        print(f"loaded {args.model} with the {backend_name} backend ({settings.get('dtype')}) in "
              f"{time.time() - t0:.1f}s", file=sys.stderr)
        context = getattr(backend, "context_length", None) or getattr(
            getattr(backend, "model", None) and backend.model.config, "max_position_embeddings", None
        ) or args.max_prompt_tokens
        # leave room for the answer and the sure question that follows it
        self.max_prompt_tokens = min(args.max_prompt_tokens, context - task.probe_new_tokens - 48)
        try:
            self.rules = ScoringRules.build(backend.tokenizer, args.compat)
        except ValueError as e:
            raise DataError(f"{args.model}: {e}") from None
        self.runner = TaskRunner(backend, task, shots, self.max_prompt_tokens, self.rules)
        # vLLM schedules tokens itself: a cap on padded tokens per batch only shrinks its calls
        self.max_batch_tokens = args.max_batch_tokens if getattr(backend, "pads_batches", True) else None
        self.batch_size, batch_source = args.batch_size, "argument"
        if self.batch_size is None:
            self.batch_size, batch_source = self.suggest_batch_size(), f"{backend_name} backend's suggest_batch_size"
        args.batch_size = self.batch_size  # recorded with the other arguments
        data_file = task.path(args.data_dir, split)
        self.info = {
            "task": task.name, "split": split, "model": args.model, "model_path": spec.path,
            "gguf_file": spec.gguf_file, "data_file": str(data_file), "data_sha256": file_sha256(data_file),
            "num_shots": self.num_shots, "num_shots_source": "argument" if args.num_shots is not None else
            ("model registry" if spec.entry and recommended else "paper default"),
            "shots_from": shots_task.name, "shots": [s.index for s in shots.pool],
            "max_prompt_tokens": self.max_prompt_tokens, "device": str(getattr(backend, "device", settings.get("device"))),
            "device_map": args.device_map, "backend": settings, "compat": args.compat,
            "processes": procs.world, "batch_size": self.batch_size, "batch_size_source": batch_source,
            "dtype": settings.get("dtype"), "git_commit": git_commit(), "environment": environment(),
            "argv": sys.argv,
            # covers prompt files, shots and truncation: any change to what the model sees
            # (the training split is probed, with the task's probe prompt)
            "prompts_sha256": hashlib.sha256("\0".join(
                self.runner.prompt(task.probing(ex) if split == "train" else ex) + "\1" + ex.gold
                for ex in self.examples).encode()).hexdigest(),
        }

    def suggest_batch_size(self, backend=None) -> int:
        """The backend's rule for this task's rows: a long prompt (90th percentile of up to 512
        questions), the longest answer and the sure question after it."""
        sample = self.examples[:: max(1, len(self.examples) // 512)][:512]
        if not sample:
            return 1
        lengths = sorted(len(ids) for ids in self.runner.encode([self.runner.prompt(ex) for ex in sample]))
        row = lengths[int(0.9 * (len(lengths) - 1))] + self.task.probe_new_tokens + 48
        return (backend or self.backend).suggest_batch_size(
            min(row, self.max_prompt_tokens + self.task.probe_new_tokens + 48))

    def config(self, args, **extra) -> dict:
        """The resume key: every argument unless declared in NOT_IN_RESUME_KEY, plus what the
        arguments resolved to (data and prompts' hashes, shots, prompt limit, the backend's and
        the scoring rules' settings)."""
        return {**resume_key(args), "data_sha256": self.info["data_sha256"], "split": self.info["split"],
                "prompts_sha256": self.info["prompts_sha256"], "num_shots": self.num_shots,
                "max_prompt_tokens": self.max_prompt_tokens, "backend": self.backend.settings(),
                **self.rules.settings(), **extra}

    def store(self, stem_records: Path, stem_meta: Path, config: dict, overwrite: bool, info_args) -> RunStore:
        """The run's store on every process; the main one clears (--overwrite) and starts it first."""
        procs = self.procs
        store = None
        if procs.is_main:
            store = RunStore(stem_records, stem_meta, config, overwrite=overwrite, rank=0, world=procs.world)
            store.start(args=vars(info_args), **self.info)
        procs.barrier()
        if store is None:
            store = RunStore(stem_records, stem_meta, config, rank=procs.rank, world=procs.world)
        return store

    def truncated(self, records: list[dict]) -> int:
        return sum(1 for r in records if r.get("truncated_tokens"))


def probe_parser(doc: str | None) -> argparse.ArgumentParser:
    from .methods import METHODS, method_flags, readers

    p = base_parser(doc)
    p.add_argument("--method", choices=tuple(METHODS), default="unsure",
                   help="; ".join(f"{m.name} ({m.display}): {m.description}" for m in METHODS.values()))
    for flag in method_flags():  # the options the methods' declarations read (rtuning/methods.py)
        p.add_argument(f"--{flag.name}", type=flag.type, default=flag.default,
                       help=f"{flag.help} (--method {', '.join(readers(flag))})")
    p.add_argument("--output_dir", default=str(REPO_ROOT / "training" / "training_data"))
    return p


def probe_main(task: str | Task, argv: list[str] | None = None, doc: str | None = None,
               args: argparse.Namespace | None = None) -> dict:
    """`training/<dataset>/run_<dataset>.py`: probe, split certain/uncertain, write training data."""
    from .methods import get_method, not_in_key
    from .pipeline import lmflow_text_only, probe, training_texts

    args = args or probe_parser(doc).parse_args(argv)
    method = get_method(args.method)
    run = store = None
    try:
        task = get_task(task) if isinstance(task, str) else task
        if "train" not in task.files:
            raise DataError(f"{task.name} has no training split")
        run = Setup(args, task, "train")
        result = args.result or f"{task.name}_{run.spec.tag}"
        stem = Path(args.output_dir) / f"{result}_{args.method}"
        extra = {"letter_samples": LETTER_SAMPLES} if method.sampling and task.kind == "choice" else {}
        config = {k: v for k, v in run.config(args, **extra).items() if k not in not_in_key(method)}
        store = run.store(stem.with_suffix(".records.jsonl"), stem.with_suffix(".meta.json"),
                          config, args.overwrite, args)
        _resuming(store, len(run.examples))
        records = probe(run.runner, run.examples, store, method=args.method, batch_size=args.batch_size,
                        seed=args.seed, match=args.match, max_batch_tokens=run.max_batch_tokens, procs=run.procs,
                        settings=method.settings(vars(args)))
    except (DataError, RunConflict) as e:
        _fail(str(e))
    except KeyboardInterrupt:
        _interrupted(store, len(run.examples) if run else 0)
    if not run.procs.is_main:
        return {}
    texts = training_texts(task, run.examples, records, args.method, args.seed)
    store.write_merged(records)
    data_path = stem.with_suffix(".json")
    write_json(data_path, lmflow_text_only(texts))
    n_certain = sum(r["certain"] for r in records)
    counts = {"questions": len(records), "certain": n_certain, "uncertain": len(records) - n_certain,
              "greedy_correct": sum(r["correct"] for r in records), "truncated_prompts": run.truncated(records)}
    # with the time of the earlier runs it resumed, finished or killed; rounded as recorded, so
    # that a rerun that computes nothing reports the same rate
    wall = round(store.elapsed(), 2)
    store.finish(counts=counts, wall_time_s=wall, training_data=str(data_path))
    print(json.dumps({"training_data": str(data_path), **counts, "wall_time_s": round(wall, 1)}, indent=2))
    return {**counts, "training_data": str(data_path), "wall_time_s": wall, "reused": store.reused}


SUMMARY_COLUMNS = [
    ("task", "task", ""), ("domain", "domain", ""), ("n", "n", "d"), ("accuracy", "acc%", ".2%"),
    ("ap", "AP%", ".2%"), ("ap_answer_conf", "AP(conf)%", ".2%"), ("ap_sure_prob", "AP(sure)%", ".2%"),
    ("answer_rate", "answer%", ".2%"), ("accuracy_answered", "acc@ans%", ".2%"),
    # beyond AP (rtuning.metrics.honesty_metrics; every other one is in the .summary.json)
    ("brier_sure_prob", "Brier", ".3f"), ("aurc", "AURC", ".3f"), ("effective_reliability", "eff.rel.", ".3f"),
]
# with --reference (the base model's records): alignment-for-honesty's and CRaFT's scores
REFERENCE_COLUMNS = [("honesty", "honesty", ".3f"), ("ths", "THS", ".3f")]
REFUSAL_COLUMNS = [
    ("task", "task", ""), ("domain", "questions", ""), ("n", "n", "d"), ("refusal_rate", "refused%", ".2%"),
    ("refused_by_unsure", "unsure%", ".2%"), ("refused_by_phrase", "phrase%", ".2%"),
    ("mean_sure_prob", "mean p(sure)", ".3f"),
    # with both sides of the pair evaluated: AbstentionBench's F1 (unanswerable = positive)
    ("abstention_f1", "abst.F1", ".3f"),
]


def evaluate_main(task: str | Task, argv: list[str] | None = None, doc: str | None = None) -> dict:
    """`evaluation/run_<dataset>.py`: answers, confidences and the summary table."""
    from .metrics import (ReferenceMismatch, auroc, average_precision, expected_calibration_error, format_table,
                          honesty_metrics, match_reference, nan_to_none, read_reference, summarize)
    from .pipeline import evaluate
    from .refusal import refusal_summary

    task = get_task(task) if isinstance(task, str) else task
    p = base_parser(doc)
    p.add_argument("--domain", choices=task.domains, default=task.domains[0])
    p.add_argument("--num_samples", type=int, default=0,
                   help="also sample K answers per question (temperature --temperature) and record their "
                        "entropy, for test-time uncertainty filtering (the paper's Vanilla-C)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--output_dir", default=str(REPO_ROOT / "evaluation" / "results"))
    p.add_argument("--reference", default=None, metavar="RECORDS",
                   help="the .jsonl records of an evaluation of the base model on the same split: adds the "
                        "knowledge quadrants, over-conservativeness, prudence, honesty and THS to the summary")
    args = p.parse_args(argv)
    run = store = reference = None
    try:
        if args.reference:
            if task.kind == "refusal":
                raise ReferenceMismatch(f"--reference {args.reference}: the knowledge quadrants need correctness, "
                                        f"which {task.name} (a refusal set) does not have")
            reference = read_reference(args.reference)
        run = Setup(args, task, args.domain)
        if reference is not None:
            # checked before the model answers anything, not after the whole evaluation
            match_reference([(ex.index, ex.question) for ex in run.examples], reference, args.reference)
        result = args.result or f"{run.spec.tag}_{task.name}"
        stem = Path(args.output_dir) / task.result_name(result, args.domain)
        extra = {"letter_samples": LETTER_SAMPLES} if args.num_samples and task.kind == "choice" else {}
        store = run.store(stem.with_suffix(".jsonl"), stem.with_suffix(".meta.json"), run.config(args, **extra),
                          args.overwrite, args)
        _resuming(store, len(run.examples))
        records = evaluate(run.runner, run.examples, store, batch_size=args.batch_size, match=args.match,
                           max_batch_tokens=run.max_batch_tokens, procs=run.procs,
                           num_samples=args.num_samples, temperature=args.temperature, seed=args.seed)
    except (DataError, RunConflict, ReferenceMismatch) as e:
        _fail(str(e))
    except KeyboardInterrupt:
        _interrupted(store, len(run.examples) if run else 0)
    if not run.procs.is_main:
        return {}
    store.write_merged(records)
    # with the time of the earlier runs it resumed, finished or killed; rounded as recorded, so
    # that a rerun that computes nothing reports the same rate
    wall = round(store.elapsed(), 2)
    row = {"result": result, "task": task.name, "domain": args.domain, "model": args.model}
    if task.kind == "refusal":
        summary = refusal_summary(records, answerable=args.domain == "answerable")
        # abstention precision/recall/F1 need both sides of the pair: the other side's records,
        # when its evaluation (same --result, --output_dir) has finished
        other = "answerable" if args.domain == "unanswerable" else "unanswerable"
        other_stem = Path(args.output_dir) / f"{result}_{other}"
        try:
            other_records = read_jsonl(other_stem.with_suffix(".jsonl")) \
                if other_stem.with_suffix(".summary.json").is_file() else []
        except RunConflict as e:  # this evaluation is done and saved; only the pair's metrics are lost
            print(f"warning: no abstention precision/recall: {e}", file=sys.stderr)
            other_records = []
        if other_records:
            unanswerable, controls = (records, other_records) if other == "answerable" else (other_records, records)
            summary.update(honesty_metrics(unanswerable, controls=controls))
            summary["abstention_pair"] = str(other_stem.with_suffix(".jsonl"))
        columns = REFUSAL_COLUMNS
    else:
        # The original's results file: one [correct, answer_conf, sure_prob] per question, in order.
        write_json(stem.with_suffix(".json"), [[r["correct"], r["answer_conf"], r["sure_prob"]] for r in records])
        summary = summarize([r["correct"] for r in records], [r["answer_conf"] for r in records],
                            [r["sure_prob"] for r in records])
        summary["match"] = args.match
        if args.num_samples:
            # Vanilla-C: rank by low answer entropy
            summary["ap_neg_entropy"] = nan_to_none(average_precision(
                [r["correct"] for r in records], [-r["entropy"] for r in records]))
        summary["ece_sure_prob"] = expected_calibration_error([r["correct"] for r in records],
                                                              [r["sure_prob"] for r in records])
        summary["auroc_sure_prob"] = auroc([r["correct"] for r in records], [r["sure_prob"] for r in records])
        summary.update(honesty_metrics(records, reference, reference_name=args.reference or "reference"))
        columns = SUMMARY_COLUMNS + (REFERENCE_COLUMNS if reference is not None else [])
        if reference is not None:
            summary["reference_records"], summary["reference_sha256"] = args.reference, file_sha256(args.reference)
    row.update(summary)
    summary_doc = {**row, "truncated_prompts": run.truncated(records), "max_prompt_tokens": run.max_prompt_tokens,
                   "num_shots": run.num_shots, "seed": args.seed, "wall_time_s": wall,
                   "questions_per_s": round(len(records) / wall, 3) if wall else None,
                   "records_file": str(stem.with_suffix(".jsonl")),
                   # the code that computed the records (the last commit that added any), not that of
                   # a rerun that found them all done
                   "git_commit": store.records_commits()[-1], "records_git_commits": store.records_commits(),
                   "data_sha256": run.info["data_sha256"]}
    if task.kind != "refusal":
        summary_doc["results_file"] = str(stem.with_suffix(".json"))
    write_json(stem.with_suffix(".summary.json"), summary_doc)
    store.finish(summary=summary, wall_time_s=wall)
    print(format_table([row], columns))
    if summary_doc["truncated_prompts"]:
        print(f"{summary_doc['truncated_prompts']} prompts were cut to --max_prompt_tokens {run.max_prompt_tokens}")
    return {**summary_doc, "reused": store.reused}
