"""The measured effect of each scoring rule where our default differs from `--compat original`.

    python benchmarks/compat_effects.py --model smollm2-135m --data_dir $RTUNING_DATA_DIR \\
        --pararel 300 --mmlu 200 --output benchmarks/results/compat_effects_smollm2-135m.json

One row per deviation. Each row runs the library's probe or evaluation (rtuning.pipeline with a
RunStore in a temporary folder) twice on the same seeded sample of questions: once under our
default rules and once with one rule of the original's swapped in (ScoringRules.with_rules), so
that the row measures that rule alone; the "all rules" rows run `--compat original` whole. The
sure/unsure-id row measures an original rule that `--compat original` does not switch (see
rtuning/scoring.py). Prints a markdown table and writes the rows, the settings and the machine's
load to --output.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python benchmarks/compat_effects.py` from anywhere
    sys.path.insert(0, str(ROOT))

from rtuning.cli import default_data_dir  # noqa: E402
from rtuning.models import DEFAULT_MODEL  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--data_dir", default=default_data_dir())
    p.add_argument("--pararel", type=int, default=300, help="ParaRel questions (training and ID test each)")
    p.add_argument("--mmlu", type=int, default=200, help="MMLU questions (ID training and ID test each)")
    p.add_argument("--fever", type=int, default=100, help="FEVER ID test questions (option letters after a space)")
    p.add_argument("--wice", type=int, default=100, help="WiCE training questions (its known rule)")
    p.add_argument("--num_try", type=int, default=5, help="samples per question for R-Tuning-U")
    p.add_argument("--seed", type=int, default=42, help="draws the questions (as --sample) and the samples")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--max_prompt_tokens", type=int, default=2048)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--output", default=None, help="JSON file (default: print only), rewritten after each row")
    p.add_argument("--work_dir", default=None,
                   help="keep each probe's and evaluation's records here (one store per run, keyed by its rules "
                        "and questions), so that a rerun resumes them; default: a temporary folder, removed")
    return p.parse_args(argv)


def sample(examples: list, n: int, seed: int) -> list:
    """A random n in file order, as the scripts' --sample draws them."""
    if n >= len(examples):
        return examples
    return [examples[i] for i in sorted(random.Random(seed).sample(range(len(examples)), n))]


class Bench:
    """One loaded model; probes and evaluations under any rules, each in its own store."""

    def __init__(self, args):
        from rtuning.backends import BackendOptions, create_backend
        from rtuning.models import resolve_model
        from rtuning.scoring import ScoringRules

        self.args = args
        self.spec = resolve_model(args.model)
        self.backend = create_backend("hf", self.spec, BackendOptions(device=args.device, dtype=args.dtype,
                                                                      seed=args.seed))
        tok = self.backend.tokenizer
        self.default = ScoringRules.build(tok, "default")
        self.original = ScoringRules.build(tok, "original")
        self.tmp = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="compat_effects_"))
        self.timings: dict[str, float] = {}

    def runner(self, task, rules):
        from rtuning.pipeline import TaskRunner
        from rtuning.tasks import Shots, get_task

        # shots as rtuning.cli.Setup gives them: the model's recommended number for open QA, none for letters
        shots_task = get_task(task.shots_from) if task.shots_from else task
        k = self.spec.recommended_shots if task.kind != "choice" else 0
        pool = shots_task.load(self.args.data_dir, "train") if k else []
        return TaskRunner(self.backend, task, Shots(shots_task, pool, k, self.args.seed), self.args.max_prompt_tokens,
                          rules)

    def store(self, name: str, examples, rules):
        """A store per run; its key (the rules, the questions, the model) lets a rerun resume it."""
        import hashlib

        from rtuning.records import RunStore

        config = {"run": name, "compat": rules.compat, "model": self.args.model, "seed": self.args.seed,
                  "num_try": self.args.num_try, "indices_sha256": hashlib.sha256(
                      json.dumps([ex.index for ex in examples]).encode()).hexdigest()}
        store = RunStore(self.tmp / f"{name}.jsonl", self.tmp / f"{name}.meta.json", config)
        store.start()
        return store

    def probe(self, task, examples, rules, method="unsure", label=""):
        from rtuning.pipeline import probe

        t0 = time.time()
        store = self.store(f"probe_{task.name}_{rules.compat}_{method}", examples, rules)
        out = probe(self.runner(task, rules), examples, store, method=method, batch_size=self.args.batch_size,
                    seed=self.args.seed, num_try=self.args.num_try)
        self.timings[f"probe {task.name} {rules.compat} {label}".strip()] = round(time.time() - t0, 1)
        return out

    def evaluate(self, task, examples, rules, label=""):
        from rtuning.pipeline import evaluate

        t0 = time.time()
        store = self.store(f"evaluate_{task.name}_{rules.compat}", examples, rules)
        out = evaluate(self.runner(task, rules), examples, store, batch_size=self.args.batch_size)
        self.timings[f"evaluate {task.name} {rules.compat} {label}".strip()] = round(time.time() - t0, 1)
        return out


# -- what each row reports -------------------------------------------------------------------


def label_change(a: list[dict], b: list[dict]) -> dict:
    """Share of questions whose certain/uncertain label differs between two probes."""
    assert [r["index"] for r in a] == [r["index"] for r in b]
    n = len(a)
    up = sum(1 for x, y in zip(a, b) if not x["certain"] and y["certain"])
    down = sum(1 for x, y in zip(a, b) if x["certain"] and not y["certain"])
    return {"n": n, "labels_changed": (up + down) / n if n else None, "uncertain_to_certain": up,
            "certain_to_uncertain": down, "certain_default": sum(r["certain"] for r in a),
            "certain_original": sum(r["certain"] for r in b)}


def metric_change(a: list[dict], b: list[dict]) -> dict:
    """Accuracy and AP under each rule, and how much the answers and p(sure) moved."""
    from rtuning.metrics import nan_to_none, summarize

    assert [r["index"] for r in a] == [r["index"] for r in b]
    # an undefined AP (no correct answer in the sample) is null, not NaN, in the JSON
    sa, sb = ({k: nan_to_none(v) for k, v in summarize([r["correct"] for r in x], [r["answer_conf"] for r in x],
                                                        [r["sure_prob"] for r in x]).items()} for x in (a, b))
    moved = [abs(x["sure_prob"] - y["sure_prob"]) for x, y in zip(a, b)]

    def diff(key):
        return None if sa[key] is None or sb[key] is None else sb[key] - sa[key]

    return {"n": len(a), "answers_changed": sum(x["answer"] != y["answer"] for x, y in zip(a, b)) / len(a),
            "accuracy_default": sa["accuracy"], "accuracy_original": sb["accuracy"], "accuracy_diff": diff("accuracy"),
            "ap_default": sa["ap"], "ap_original": sb["ap"], "ap_diff": diff("ap"),
            "sure_prob_max_abs_change": max(moved) if moved else None,
            "sure_prob_mean_abs_change": sum(moved) / len(moved) if moved else None}


def letters_changed(bench, task) -> dict:
    """Which option letters the two rules score with different token ids."""
    tok = bench.backend.tokenizer
    d = bench.default.letter_ids(task.choices, task.answer_sep)
    o = bench.original.letter_ids(task.choices, task.answer_sep)
    return {"letters_changed": sum(x != y for x, y in zip(d, o)),
            "letter_tokens_default": tok.convert_ids_to_tokens(d), "letter_tokens_original": tok.convert_ids_to_tokens(o)}


def run(args) -> dict:
    from rtuning.scoring import original_sure_ids
    from rtuning.tasks import FEVER, MMLU, PARAREL, WICE, mmlu_training_task

    t0, load_start = time.time(), list(os.getloadavg())
    b = Bench(args)
    D, O = b.default, b.original
    load = lambda task, split, n: sample(task.load(args.data_dir, split), n, args.seed)  # noqa: E731
    rows = []

    def row(name, original, default, compat, effect, **measured):
        rows.append({"deviation": name, "original": original, "default": default, "compat_original": compat,
                     "effect": effect, **measured})
        if args.output:  # a run stopped part way keeps the rows it finished
            write(args.output, summary(args, b, rows, t0, load_start))

    if args.pararel:
        train, test = load(PARAREL, "train", args.pararel), load(PARAREL, "ID", args.pararel)
        p_d = b.probe(PARAREL, train, D)
        p_o = b.probe(PARAREL, train, D.with_rules(O, "probe_read"), label="probe_read")
        m = label_change(p_d, p_o)
        row("ParaRel probe reading", "15 tokens, no stop, text cut at the first \".\" character (none: last "
            "character dropped)", "stops at a period token (15 tokens at most)", "the original's",
            f"{m['labels_changed']:.1%} of {m['n']} training labels change", **m)
        e_d = b.evaluate(PARAREL, test, D)
        m = metric_change(e_d, b.evaluate(PARAREL, test, D.with_rules(O, "stop"), label="stop"))
        row("Stop rule (evaluation)", "stop id tokenizer(\".\").input_ids[0] only (on LLaMA `▁.`, which never "
            "follows a word: answers run to 5/8 tokens)", "any period token (\".\", \".\\n\", \" .\" ...)",
            "the original's", f"ParaRel ID: {m['answers_changed']:.1%} answers change, accuracy "
            f"{_pp(m['accuracy_diff'])}, AP {_pp(m['ap_diff'])}", **m)
        m = metric_change(e_d, b.evaluate(PARAREL, test, D.with_rules(O, "sure_spacing"), label="sure_spacing"))
        row("Sure-prompt spacing", "answer inserted as decoded: `Answer:  {answer}.` (two spaces) on BPE and "
            "SentencePiece", "stripped answer, one space (as in training)", "the original's",
            f"p(sure) moves by up to {_f(m['sure_prob_max_abs_change'])} (mean {_f(m['sure_prob_mean_abs_change'])}),"
            f" AP {_pp(m['ap_diff'])} on the same answers", **m)
        sure, unsure = original_sure_ids(b.backend.tokenizer)
        tok = b.backend.tokenizer
        m = metric_change(e_d, b.evaluate(PARAREL, test, replace(D, compat="default+sure_ids", sure_id=sure,
                                                                  unsure_id=unsure), label="sure_ids"))
        row("Sure/unsure ids", "tokenizer(\"sure\").input_ids[0]: `▁sure` on LLaMA (the token after \"I am\"), "
            f"the bare word on BPE (here {tok.convert_ids_to_tokens(sure)!r})",
            f"the token that really follows \"I am\" (here {tok.convert_ids_to_tokens(D.sure_id)!r})",
            "ours (the same as the original's on LLaMA)",
            f"not switched; ParaRel ID: p(sure) moves by up to {_f(m['sure_prob_max_abs_change'])}, AP "
            f"{_pp(m['ap_diff'])}", **m)
        m = metric_change(e_d, b.evaluate(PARAREL, test, O, label="all"))
        row("ParaRel evaluation, all rules", "(all of the above)", "ours", "`--compat original`",
            f"ParaRel ID: accuracy {_pp(m['accuracy_diff'])}, AP {_pp(m['ap_diff'])}", **m)
    if args.mmlu:
        mmlu_train = mmlu_training_task()
        train, test = load(mmlu_train, "train", args.mmlu), load(MMLU, "ID", args.mmlu)
        # On a letter task the rules in effect are the letter ids alone (no stop; the decoded
        # letter has no space to keep): with the same ids both evaluations are the same run.
        same = letters_changed(b, MMLU)
        if same["letters_changed"]:
            e_d = b.evaluate(MMLU, test, D)
            m = {**same, **metric_change(e_d, b.evaluate(MMLU, test, D.with_rules(O, "letters"), label="letters"))}
            effect = f"MMLU ID accuracy {_pp(m['accuracy_diff'])}, AP {_pp(m['ap_diff'])}"
        else:
            m = {**same, "n": 0, "accuracy_diff": 0.0, "ap_diff": 0.0}
            effect = "none on this tokenizer (the same ids: not run); on LLaMA `▁A` vs `A`"
        row("Option letter ids (MMLU, WiCE: no space before the letter)", "tokenizer(\"A\").input_ids[0] (on LLaMA "
            "`▁A`, not the `A` that follows `Answer:`)", "the token that really follows `Answer:`", "the original's",
            f"{m['letters_changed']} of 4 letters change here; {effect}", **m)
        u_d = b.probe(mmlu_train, train, D, method="uncertain")
        u_o = b.probe(mmlu_train, train, D.with_rules(O, "choice_samples"), method="uncertain", label="choice_samples")
        m = label_change(u_d, u_o)
        m["samples_not_a_letter"] = sum(s.strip() not in MMLU.choices for r in u_o for s in r["samples"]) / max(
            1, sum(len(r["samples"]) for r in u_o))
        row("MMLU R-Tuning-U sampling", "one token from the whole vocabulary (temperature 0.7, top-k 50), "
            "distinct decoded tokens counted", f"the letter drawn from the letters' distribution at temperature 0.7",
            "the original's", f"{m['labels_changed']:.1%} of {m['n']} certain labels change; "
            f"{m['samples_not_a_letter']:.1%} of the original's samples are not a letter", **m)
        if same["letters_changed"]:
            m = metric_change(e_d, b.evaluate(MMLU, test, O, label="all"))
            row("MMLU evaluation, all rules", "(letters, stop, spacing)", "ours", "`--compat original`",
                f"MMLU ID: accuracy {_pp(m['accuracy_diff'])}, AP {_pp(m['ap_diff'])}", **m)
    if args.fever:
        test = load(FEVER, "ID", args.fever)
        m = {**letters_changed(b, FEVER), **metric_change(b.evaluate(FEVER, test, D),
                                                           b.evaluate(FEVER, test, D.with_rules(O, "letters"),
                                                                      label="letters"))}
        row("Option letter ids (FEVER: a space before the letter)", "tokenizer(\"A\").input_ids[0] (on BPE `A`, "
            "while `Answer: A` has ` A`)", "the token that really follows `Answer: `", "the original's",
            f"{m['letters_changed']} of 3 letters change here; FEVER accuracy {_pp(m['accuracy_diff'])}, "
            f"AP {_pp(m['ap_diff'])}", **m)
    if args.wice:
        train = load(WICE, "train", args.wice)
        m = label_change(b.probe(WICE, train, D), b.probe(WICE, train, D.with_rules(O, "known"), label="known"))
        m["supported_share"] = sum(ex.gold == "A" for ex in train) / len(train)
        row("WiCE known rule", "gold label word in the chosen option's word: every `supported` question is "
            "known", "the chosen letter is the gold one", "the original's",
            f"{m['labels_changed']:.1%} of {m['n']} training labels change ({m['supported_share']:.0%} of the "
            "questions are `supported`)", **m)
    result = summary(args, b, rows, t0, load_start, complete=True)
    if not args.work_dir:
        shutil.rmtree(b.tmp, ignore_errors=True)
    return result


def summary(args, b: Bench, rows: list, t0: float, load_start: list, complete: bool = False) -> dict:
    return {"model": args.model, "model_path": b.spec.path, "seed": args.seed, "complete": complete,
            "sizes": {"pararel": args.pararel, "mmlu": args.mmlu, "fever": args.fever, "wice": args.wice},
            "num_try": args.num_try, "batch_size": args.batch_size, "rows": rows, "timings_s": b.timings,
            "wall_time_s": round(time.time() - t0, 1), "load_average_start": load_start,
            "load_average": list(os.getloadavg()), "cpus": os.cpu_count(),
            "device": str(getattr(b.backend, "device", args.device)), "git_commit": _git_commit(),
            "command": " ".join(["python", "benchmarks/compat_effects.py", *sys.argv[1:]])}


def write(path, result: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")


def _pp(x) -> str:
    """A difference of shares in percentage points."""
    return "n/a" if x is None else f"{x * 100:+.2f} pp"


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _git_commit():
    from rtuning.records import git_commit

    return git_commit()


def table(result: dict) -> str:
    lines = ["| deviation | original | default | `--compat original` | measured effect |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['deviation']} | {r['original']} | {r['default']} | {r['compat_original']} | {r['effect']} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    result = run(args)
    print(table(result))
    if args.output:
        write(args.output, result)
    return result


if __name__ == "__main__":
    main()
