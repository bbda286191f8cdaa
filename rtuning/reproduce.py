"""The paper's study in one command: probe, build data for every method, fine-tune, evaluate, report.

    python -m rtuning.reproduce --model smollm2-135m --datasets pararel,mmlu --out runs/study
    python -m rtuning.reproduce --quick --out runs/quick            # a smoke version in minutes

For each training dataset: probe the base model (greedy for R-Tuning / R-Tuning-R / vanilla,
sampled for R-Tuning-U), build the four training sets, fine-tune one model per method, and
evaluate the base model and every tuned model on the in-domain and out-of-domain test sets and
the unanswerable sets. Baselines: Pretrain-T (the base model's answer confidence, answering
above a threshold chosen on the training questions) and Vanilla-C (the vanilla model filtered
by the entropy of sampled answers). Every step writes its outputs under --out and is skipped
when they exist with the same settings, so a killed study resumes. The summary goes to
{out}/study.json; `python -m rtuning.report {out}/study.json` turns it into docs/results.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .backends import BACKENDS
from .methods import METHODS as DECLARED, NUM_TRY, method_flags, readers
from .scoring import COMPAT_MODES
from .metrics import average_precision, nan_to_none
from .records import REPO_ROOT, environment, file_sha256, git_commit, read_json, read_jsonl, write_json

METHODS = tuple(name for name, m in DECLARED.items() if m.paper)  # the default: the paper's four
REFUSAL_SETS = ("selfaware", "falseqa", "nec")
QUICK = {"limit": 40, "test_limit": 40, "refusal_limit": 40, "num_try": 3, "vanilla_c_samples": 3}


def positive(value: str) -> int:
    """N >= 1 (a 0 would otherwise read as "no limit" or "no samples")."""
    if not value.strip().isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: expected a whole number >= 1")
    return int(value)


def per_dataset(value: str) -> int | dict[str, int]:
    """A limit for every dataset ("300") or per dataset ("pararel=1200,mmlu=300")."""
    def count(n: str) -> int:
        if not n.strip().isdigit() or int(n) < 1:
            raise argparse.ArgumentTypeError(f"{value!r}: expected N >= 1 or dataset=N,dataset=N")
        return int(n)

    if "=" not in value:
        return count(value)
    out = {}
    for part in value.split(","):
        name, _, n = part.partition("=")
        if not name.strip():
            raise argparse.ArgumentTypeError(f"{value!r}: expected N >= 1 or dataset=N,dataset=N")
        out[name.strip()] = count(n)
    return out


def limit_for(value: int | dict | None, dataset: str, domain: str | None = None) -> int | None:
    """The limit of one dataset (or one of its test sets, "mmlu:OOD=2000", which comes first);
    a per-dataset value that names neither means no limit."""
    if not isinstance(value, dict):
        return value
    if domain is not None and f"{dataset}:{domain}" in value:
        return value[f"{dataset}:{domain}"]
    return value.get(dataset)


def parse_args(argv=None) -> argparse.Namespace:
    from .cli import default_data_dir

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--datasets", default="pararel", help="training datasets, comma-separated")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated, of {', '.join(DECLARED)} (default: the paper's {', '.join(METHODS)})")
    p.add_argument("--refusal_sets", default=",".join(REFUSAL_SETS))
    p.add_argument("--data_dir", default=default_data_dir())
    p.add_argument("--out", default=None,
                   help="study folder (default: runs/study, or runs/quick with --quick, so that a smoke run "
                        "never mixes with the full study's outputs)")
    p.add_argument("--limit", type=per_dataset, default=None,
                   help="training questions per dataset, a random sample (--seed) that covers every relation or "
                        "subject: N, or per dataset as pararel=1200,mmlu=300")
    p.add_argument("--test_limit", type=per_dataset, default=None,
                   help="questions per test set: N, or per training dataset or test set as "
                        "pararel=1000,mmlu:OOD=2000 (here MMLU's ID test set stays whole)")
    p.add_argument("--refusal_limit", type=positive, default=None,
                   help="questions per unanswerable/answerable set (a random sample, as --limit)")
    p.add_argument("--refusal_for", default=None,
                   help="training datasets whose tuned models are also evaluated on the unanswerable sets "
                        "(comma-separated; default: all)")
    p.add_argument("--num_try", type=positive, default=5,
                   help=f"samples per question for the sampled methods ({', '.join(readers(NUM_TRY))})")
    p.add_argument("--vanilla_c_samples", type=positive, default=5, help="test-time samples for Vanilla-C")
    for flag in method_flags():  # the other options of the methods' declarations, passed to their probes
        if flag != NUM_TRY:
            p.add_argument(f"--{flag.name}", type=flag.type, default=flag.default, help=flag.help)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--learning_rate", type=float, default=2e-5)
    p.add_argument("--train_batch_size", type=int, default=4)
    p.add_argument("--finetune_dtype", default="auto", choices=("auto", "bf16", "fp16", "fp32"),
                   help="fine-tuning precision (auto: bf16 on a GPU that has it, else fp32); "
                        "bf16 autocast also runs on CPUs with AVX512-BF16/AMX, about 1.5x faster there")
    p.add_argument("--checkpoint_steps", type=int, default=200,
                   help="fine-tunes write a checkpoint every N steps and a rerun continues from it (0: never); "
                        "the checkpoints go once the model is saved")
    p.add_argument("--batch_size", type=int, default=None,
                   help="inference batch size (default: the backend's rule, e.g. Engine.suggest_batch_size)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default="auto")
    p.add_argument("--backend", default="auto", choices=("auto", *BACKENDS),
                   help="inference backend of every probe and evaluation (fine-tuning is transformers'): "
                        "auto = vllm when installed with a GPU, else hf")
    p.add_argument("--tensor_parallel_size", type=int, default=1, help="GPUs per model (vllm backend)")
    p.add_argument("--compat", choices=COMPAT_MODES, default="default",
                   help="scoring rules of every probe and evaluation: default (ours) or original (the original "
                        "release's, to compare with published numbers); see README 'How it differs'")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke preset: {QUICK['limit']} training questions per dataset, {QUICK['test_limit']} per "
                        f"test set and {QUICK['refusal_limit']} per unanswerable/answerable set, "
                        f"{QUICK['num_try']} samples for R-Tuning-U and {QUICK['vanilla_c_samples']} for Vanilla-C "
                        "(each unless given), written to runs/quick unless --out is given")
    args = p.parse_args(argv)
    for name in args.methods.split(","):
        if name not in DECLARED:
            p.error(f"--methods {name!r}: unknown method; choose from {', '.join(DECLARED)}")
    # a misspelt name must not silently mean "no limit"
    from .tasks import DataError, get_task

    for flag, value in (("--limit", args.limit), ("--test_limit", args.test_limit)):
        for key in value if isinstance(value, dict) else ():
            dataset, _, domain = key.partition(":")
            try:
                domains = get_task(dataset).domains
            except DataError as e:
                p.error(f"{flag} {key}: {e}")
            if domain and flag == "--limit":
                p.error(f"{flag} {key}: training questions are limited per dataset, not per test set")
            if domain and domain not in domains:
                p.error(f"{flag} {key}: {dataset} has the test sets {', '.join(domains)}")
    if args.quick:
        for k, v in QUICK.items():
            if getattr(args, k) in (None, p.get_default(k)):
                setattr(args, k, v)
    if args.out is None:
        args.out = "runs/quick" if args.quick else "runs/study"
    return args


class Study:
    def __init__(self, args, argv: list[str] | None = None):
        self.args = args
        self.argv = list(sys.argv[1:] if argv is None else argv)  # as given, for the recorded command
        self.out = Path(args.out)
        self.steps: list[dict] = []
        self.started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.history = previous_invocations(self.out / "study.json")
        self.common = ["--data_dir", args.data_dir, "--seed", str(args.seed), "--device", args.device,
                       "--backend", args.backend, "--tensor_parallel_size", str(args.tensor_parallel_size),
                       "--compat", args.compat]
        if args.batch_size:
            self.common += ["--batch_size", str(args.batch_size)]

    def step(self, name: str, fn):
        """Run one step, timing it; steps resume on their own (their outputs record settings).

        wall_time_s is this invocation's time; work_s the step's whole time over every
        invocation that worked on it (as its outputs record it), so a resumed study still
        reports what each step cost."""
        print(f"== {name}", file=sys.stderr, flush=True)
        t0 = time.time()
        result = fn()
        wall = round(time.time() - t0, 2)
        work = result.get("wall_time_s") if isinstance(result, dict) else None
        step = {"step": name, "wall_time_s": wall, "work_s": round(work if work is not None else wall, 2)}
        if isinstance(result, dict) and result.get("reused"):
            step["reused"] = True  # every record was there: this invocation only checked
        self.steps.append(step)
        return result

    # -- training data -----------------------------------------------------------------

    def probe(self, dataset: str) -> dict[str, Path]:
        from .cli import probe_main
        from .pipeline import lmflow_text_only, mark_certain, training_texts
        from .tasks import get_task, mmlu_training_task

        a = self.args
        task = mmlu_training_task() if dataset == "mmlu" else get_task(dataset)
        out = self.out / "data"
        n = limit_for(a.limit, dataset)
        limit = ["--sample", str(n)] if n else []
        base = ["--model", a.model, "--output_dir", str(out), "--result", dataset, *limit, *self.common]
        files = {}
        self.step(f"probe {dataset}", lambda: probe_main(task, [*base, "--method", "unsure"]))
        # the methods without a sampling step need the same greedy probe: derive them, do not probe again
        records = read_jsonl(out / f"{dataset}_unsure.records.jsonl")
        examples = {ex.index: ex for ex in task.load(a.data_dir, "train")}
        for method in [m for m in DECLARED.values() if m.sampling is None]:
            path = out / f"{dataset}_{method.name}.json"
            if method.name != "unsure":
                chosen = [examples[r["index"]] for r in records]
                marked = mark_certain(records, method.name, method.settings(vars(a)))
                write_json(path, lmflow_text_only(training_texts(task, chosen, marked, method.name, a.seed)))
            files[method.name] = path
        for method in [DECLARED[m] for m in a.methods.split(",") if DECLARED[m].sampling is not None]:
            flags = [x for f in method.reads() for x in (f"--{f.name}", str(getattr(a, f.name)))]
            self.step(f"probe {dataset} (sampled, {method.name})",
                      lambda: probe_main(task, [*base, "--method", method.name, *flags]))
            files[method.name] = out / f"{dataset}_{method.name}.json"
        return {m: files[m] for m in a.methods.split(",")}

    # -- fine-tuning -------------------------------------------------------------------

    def finetune_plan(self, dataset: str, method: str, data: Path) -> tuple[Path, list[str], str]:
        """The fine-tune's output folder, its launcher flags and its key: a hash of the flags and
        of the training data, which a finished model and a started one's checkpoints carry."""
        a = self.args
        target = self.out / "models" / f"{dataset}_{method}"
        flags = ["--model_name_or_path", a.model, "--dataset_path", str(data), "--output_model_path", str(target),
                 "--num_train_epochs", str(a.epochs), "--learning_rate", str(a.learning_rate),
                 "--per_device_train_batch_size", str(a.train_batch_size), "--seed", str(a.seed),
                 "--dtype", a.finetune_dtype]
        return target, flags, hashlib.sha256(json.dumps([flags, file_sha256(data)]).encode()).hexdigest()

    def finetune(self, dataset: str, method: str, data: Path) -> Path:
        a = self.args
        target, flags, key = self.finetune_plan(dataset, method, data)
        marker, timing = target / "study_key.txt", target / "study_time.json"
        started = target / "study_key_started.txt"  # the settings its checkpoints were trained with
        name = f"fine-tune {dataset} {method}"
        if marker.is_file() and marker.read_text() == key:
            print(f"== {name}: done before, skipped", file=sys.stderr)
            self.steps.append({"step": name, "wall_time_s": 0.0, "work_s": _finetune_time(target, timing),
                               "reused": True})
            return target

        # checkpoints change nothing in the result (resumed training repeats the same steps), so
        # they are not part of the key: a killed study continues a fine-tune where it stopped
        resume = ["--save_steps", str(a.checkpoint_steps), "--save_total_limit", "1",
                  "--resume_from_checkpoint"] if a.checkpoint_steps > 0 else []

        def run():
            # a checkpoint left by a fine-tune with other settings (flags or data, e.g. a study
            # rerun with another --finetune_dtype) would carry them on: the trainer resumes its
            # weights, optimizer and schedule whatever the new flags say. Those start over.
            stale = sorted(target.glob("checkpoint-*"))
            if stale and started.is_file() and started.read_text() != key:
                print(f"== {name}: {', '.join(c.name for c in stale)} in {target} came from other settings; "
                      "starting over", file=sys.stderr)
                for checkpoint in stale:
                    shutil.rmtree(checkpoint)
            target.mkdir(parents=True, exist_ok=True)
            started.write_text(key)
            t0 = time.time()
            # the launcher runs under this interpreter, whether or not its environment is activated
            env = {**os.environ, "PYTHON": os.environ.get("PYTHON", sys.executable)}
            subprocess.run(["bash", str(REPO_ROOT / "finetune" / "run_finetune.sh"), *flags, *resume],
                           check=True, env=env)
            wall = time.time() - t0
            # a fine-tune resumed from a checkpoint adds the training time before it
            info = read_json(target / "finetune_args.json") if (target / "finetune_args.json").is_file() else {}
            before = info.get("wall_time_s", 0) - info.get("this_run_s", info.get("wall_time_s", 0))
            record = {"wall_time_s": round(before + wall, 2)}
            write_json(timing, record)
            marker.write_text(key)
            for checkpoint in target.glob("checkpoint-*"):
                shutil.rmtree(checkpoint, ignore_errors=True)
            return record

        self.step(f"fine-tune {dataset} {method}", run)
        return target

    # -- evaluation --------------------------------------------------------------------

    def evaluate(self, model: str, label: str, dataset: str, domain: str, limit: int | None,
                 extra: list[str] = ()) -> dict:
        from .cli import evaluate_main

        args = ["--model", model, "--domain", domain, "--output_dir", str(self.out / "eval"),
                "--result", f"{label}_{dataset}", *self.common, *extra]
        if limit:
            args += ["--sample", str(limit)]
        summary = self.step(f"evaluate {label} on {dataset} {domain}", lambda: evaluate_main(dataset, args))
        summary.pop("reused", None)  # the step's, not the result's
        return {"model": label, "dataset": dataset, "domain": domain, **summary}

    def write(self, rows, refusal_rows, thresholds, t0: float, complete: bool = False,
              stopped: str | None = None) -> dict:
        """study.json as it stands: rewritten after every evaluation, so a study stopped part
        way still has a report of what it finished ("complete" says whether it ran to the end)."""
        from .tasks import get_task

        a = self.args
        datasets = [d for d in a.datasets.split(",") if d]
        refusal_sets = [r for r in a.refusal_sets.split(",") if r]
        # quoted, so the recorded command reruns as it ran (an empty --refusal_sets '' included)
        command = shlex.join([sys.executable, "-m", "rtuning.reproduce", *self.argv])
        commit, wall = git_commit(), round(time.time() - t0, 1)
        study = {
            "model": a.model, "compat": a.compat, "args": vars(a), "command": command, "complete": complete,
            "git_commit": commit, "environment": environment(), "wall_time_s": wall,
            # a study spanning several sittings: each invocation's command, code and time
            "invocations": [*self.history, {"started": self.started, "command": command, "git_commit": commit,
                                            "wall_time_s": wall, "complete": complete,
                                            **({"stopped": stopped} if stopped else {})}],
            "data_sha256": {f"{d} {s}": file_sha256(get_task(d).path(a.data_dir, s)) for d in datasets + refusal_sets
                            for s in get_task(d).files},
            "pretrain_thresholds": thresholds, "results": rows, "refusal": refusal_rows, "steps": self.steps,
        }
        write_json(self.out / "study.json", study)
        return study

    def run(self) -> dict:
        t0 = time.time()
        rows, refusal_rows, thresholds = [], [], {}
        try:
            self.run_steps(rows, refusal_rows, thresholds, t0)
        except BaseException as e:
            # stopped (Ctrl-C, SIGTERM, a data error): record how far it got and how long this
            # invocation ran, then stop as asked
            try:
                self.write(rows, refusal_rows, thresholds, t0, stopped=type(e).__name__)
            except Exception as w:  # e.g. the data file that stopped it cannot be hashed either
                print(f"warning: could not record the stopped study in {self.out / 'study.json'}: {w}",
                      file=sys.stderr)
            raise
        study = self.write(rows, refusal_rows, thresholds, t0, complete=True)
        print(f"study written to {self.out / 'study.json'}", file=sys.stderr)
        return study

    def run_steps(self, rows: list, refusal_rows: list, thresholds: dict, t0: float) -> None:
        from .tasks import get_task

        a = self.args
        datasets = [d for d in a.datasets.split(",") if d]
        for dataset in datasets:
            data = self.probe(dataset)
            thresholds[dataset] = pretrain_threshold(read_jsonl(self.out / "data" / f"{dataset}_unsure.records.jsonl"))
            # each model is evaluated as soon as it exists: a study stopped part way reports the
            # base model and every method it tuned, not only probes and fine-tunes
            for label in ["base", *data]:
                model = a.model if label == "base" else str(self.finetune(dataset, label, data[label]))
                tag = label if label == "base" else f"{dataset}_{label}"
                for domain in get_task(dataset).domains:
                    extra = ["--num_samples", str(a.vanilla_c_samples)] if label == "vanilla" else []
                    row = self.evaluate(model, tag, dataset, domain, limit_for(a.test_limit, dataset, domain), extra)
                    row["method"], row["trained_on"] = label, dataset
                    if label == "base":
                        # the records file by the name evaluation gave it ({result}.jsonl for a
                        # dataset with one test set, as the original names its results)
                        row.update(pretrain_t(Path(row["records_file"]), thresholds[dataset]))
                    rows.append(row)
                    self.write(rows, refusal_rows, thresholds, t0)
                for refusal in [r for r in a.refusal_sets.split(",") if r]:
                    if label == "base" and dataset != datasets[0]:
                        continue  # the base model's refusal is the same whatever the training set
                    if label != "base" and a.refusal_for is not None and dataset not in a.refusal_for.split(","):
                        continue
                    for domain in ("unanswerable", "answerable"):
                        row = self.evaluate(model, tag, refusal, domain, a.refusal_limit)
                        row["method"], row["trained_on"] = label, dataset
                        refusal_rows.append(row)
                        self.write(rows, refusal_rows, thresholds, t0)


def previous_invocations(path: Path) -> list[dict]:
    """The invocations an earlier study.json in the same folder recorded (one entry for a
    study.json written before invocations were kept), so a resumed study keeps its history."""
    if not path.is_file():
        return []
    try:
        old = read_json(path)
    except (OSError, ValueError) as e:
        print(f"warning: {path} is unreadable ({e}); its invocation history is not carried over", file=sys.stderr)
        return []
    if "invocations" in old:
        return old["invocations"]
    if "command" in old:
        return [{"started": None, **{k: old.get(k) for k in ("command", "git_commit", "wall_time_s", "complete")}}]
    return []


def _finetune_time(target: Path, timing: Path) -> float | None:
    """A finished fine-tune's wall time: as the study recorded it, else the trainer's runtime."""
    if timing.is_file():
        return read_json(timing)["wall_time_s"]
    log = target / "training_log.json"
    if log.is_file():
        entries = [e for e in read_json(log) if "train_runtime" in e]
        if entries:
            return round(entries[-1]["train_runtime"], 2)
    return None


def pretrain_threshold(train_records: list[dict]) -> float:
    """The answer-confidence threshold that best separates right from wrong training answers.

    Answer when confidence > t; t maximises the share of correct decisions (answer a right
    answer, refuse a wrong one) on the training questions.
    """
    pairs = sorted((r["confidence"], bool(r["correct"])) for r in train_records)
    if not pairs:
        return 0.5
    best_t, best = 0.0, -1
    wrong_below = 0
    right_total = sum(c for _, c in pairs)
    right_below = 0
    candidates = [0.0] + [p for p, _ in pairs]
    k = 0
    for t in candidates:  # refuse everything with confidence <= t
        while k < len(pairs) and pairs[k][0] <= t:
            wrong_below += not pairs[k][1]
            right_below += pairs[k][1]
            k += 1
        score = wrong_below + (right_total - right_below)
        if score > best:
            best, best_t = score, t
    return float(best_t)


def pretrain_t(records_path: Path, threshold: float) -> dict:
    """Pretrain-T on a test set: answer when the base model's answer confidence exceeds the threshold."""
    recs = read_jsonl(records_path)
    answered = [r for r in recs if r["answer_conf"] > threshold]
    return {
        "pretrain_t_threshold": threshold,
        "pretrain_t_answer_rate": len(answered) / len(recs) if recs else None,
        "pretrain_t_accuracy_answered": (sum(r["correct"] for r in answered) / len(answered)) if answered else None,
        "pretrain_t_ap": nan_to_none(average_precision([r["correct"] for r in recs],
                                                       [r["answer_conf"] for r in recs])),
    }


def main(argv=None) -> dict:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args(argv)
    if threading.current_thread() is not threading.main_thread():
        return Study(args, argv).run()
    previous = signal.signal(signal.SIGTERM, _terminated)  # a killed study still records its invocation
    try:
        return Study(args, argv).run()
    finally:
        signal.signal(signal.SIGTERM, previous)


class Terminated(Exception):
    """SIGTERM, raised where the study is so it can record how far it got."""


def _terminated(signum, frame):
    raise Terminated(f"signal {signum}")


if __name__ == "__main__":
    try:
        main()
    except Terminated as e:  # a kill, not a bug: no traceback
        print(f"study stopped ({e}); study.json records how far it got, rerun the same command to resume",
              file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)
