"""The loops, written once: probe a model on training questions, evaluate it on test questions,
and build refusal-aware training text. Each dataset only supplies its Task declaration."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from .engine import Engine, Sampling, continuation_token, sure_prompt
from .matching import MATCHERS
from .metrics import answer_entropy
from .records import RunStore
from .tasks import REFUSAL_PHRASES, SURE_QUESTION, SURE_TEXT, UNSURE_TEXT, Example, Shots, Task

METHODS = ("unsure", "unknown", "uncertain", "vanilla")


@dataclass
class Scored:
    """One answer with its confidence; `text` is the option letter for multiple choice."""

    text: str
    confidence: float
    stopped_by: str = ""
    option_probs: list[float] | None = None


class TaskRunner:
    """Binds an engine to a task: prompts (with shots), answering and sure-probability."""

    def __init__(self, engine: Engine, task: Task, shots: Shots):
        self.engine, self.task, self.shots = engine, task, shots
        self.letter_ids: list[int] = []
        if task.kind == "choice":
            ctx = "Question: Which one?\nAnswer:" + task.answer_sep
            self.letter_ids = [continuation_token(engine.tokenizer, ctx, c) for c in task.choices]
            if len(set(self.letter_ids)) != len(self.letter_ids):
                raise ValueError(f"option letters {task.choices} share a first token")

    def prompt(self, ex: Example) -> str:
        return self.shots.prompt(ex)

    def answer(self, prompts: list[str], max_new_tokens: int, sampling: Sampling | None = None) -> list[Scored]:
        seqs = self.engine.encode(prompts)
        if self.task.kind == "choice":
            picks = self.engine.choose_letter(seqs, self.letter_ids, sampling)
            return [Scored(self.task.choices[k], probs[k], "letter", probs) for k, probs in picks]
        answers = self.engine.generate(seqs, max_new_tokens, sampling)
        return [Scored(a.text, a.confidence, a.stopped_by) for a in answers]

    def sure(self, prompts: list[str], answers: list[str]) -> list[float]:
        texts = [sure_prompt(p, a, self.task.answer_sep) for p, a in zip(prompts, answers)]
        return self.engine.sure_probability(self.engine.encode(texts))


def run_batches(examples: Sequence[Example], prompts: Sequence[str], tokenizer, batch_size: int,
                store: RunStore, fn: Callable[[list[int], int], list[dict]], desc: str) -> None:
    """Call fn(batch positions, batch number) on length-sorted batches not yet in the store.

    Batches are cut from the full, length-sorted list, so a resumed run computes exactly the
    batches an uninterrupted run would, and gets identical numbers.
    """
    lengths = [len(ids) for ids in tokenizer(list(prompts), add_special_tokens=True).input_ids]
    order = sorted(range(len(examples)), key=lambda i: (-lengths[i], i))  # longest first: OOM shows early
    todo_total = sum(1 for ex in examples if ex.index not in store.done)
    bar = tqdm(total=len(examples), initial=len(examples) - todo_total, desc=desc, unit="q", smoothing=0.1)
    for number, start in enumerate(range(0, len(order), batch_size)):
        batch = [i for i in order[start:start + batch_size] if examples[i].index not in store.done]
        if not batch:
            continue
        store.append(fn(batch, number))
        bar.update(len(batch))
    bar.close()


def sampling_for(seed: int, batch_number: int, temperature: float) -> Sampling:
    """A generator seeded per batch: resumed and uninterrupted runs draw the same samples."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + batch_number)
    return Sampling(temperature=temperature, generator=gen)


def probe(runner: TaskRunner, examples: Sequence[Example], store: RunStore, *, method: str,
          batch_size: int, seed: int, match: str = "substring", num_try: int = 5,
          temperature: float = 0.7) -> list[dict]:
    """Answer every training question greedily (and sample `num_try` answers for `uncertain`)."""
    task, matcher = runner.task, MATCHERS[match]
    prompts = [runner.prompt(ex) for ex in examples]

    def fn(batch: list[int], number: int) -> list[dict]:
        batch_prompts = [prompts[i] for i in batch]
        greedy = runner.answer(batch_prompts, task.probe_new_tokens)
        records = []
        for i, ans in zip(batch, greedy):
            ex = examples[i]
            records.append({"index": ex.index, "question": ex.question, "gold": ex.gold,
                            "output": ans.text, "confidence": ans.confidence,
                            "correct": bool(matcher(ex.gold, ans.text))})
        if method == "uncertain":
            repeated = [p for p in batch_prompts for _ in range(num_try)]
            samples = runner.answer(repeated, task.probe_new_tokens, sampling_for(seed, number, temperature))
            for j, rec in enumerate(records):
                texts = [s.text for s in samples[j * num_try:(j + 1) * num_try]]
                rec["samples"] = texts
                rec["entropy"] = answer_entropy(texts)
        return records

    run_batches(examples, prompts, runner.engine.tokenizer, batch_size, store, fn, f"probe {task.name}")
    return mark_certain(store.ordered(), method)


def mark_certain(records: list[dict], method: str) -> list[dict]:
    """Split into certain (D1) and uncertain (D0).

    Supervised methods: certain when the greedy answer is correct. `uncertain`: the half with
    the lowest answer entropy is certain (ties broken by question order, so the split is
    deterministic).
    """
    if method != "uncertain":
        return [{**r, "certain": bool(r["correct"])} for r in records]
    ranked = sorted(range(len(records)), key=lambda k: (records[k]["entropy"], records[k]["index"]))
    certain = set(ranked[: len(records) // 2])
    return [{**r, "certain": k in certain} for k, r in enumerate(records)]


def training_texts(task: Task, examples: Sequence[Example], records: Sequence[dict], method: str,
                   seed: int) -> list[str]:
    """Refusal-aware training text (shot-free, as the paper), shuffled with the seed."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    by_index = {ex.index: ex for ex in examples}
    rng = random.Random(seed)
    texts = []
    for rec in records:
        ex = by_index[rec["index"]]
        solved = task.solved(ex)
        if method == "vanilla":
            texts.append(solved)
        elif method == "unknown":
            texts.append(solved if rec["certain"] else f"{ex.prompt}{task.answer_sep}{rng.choice(REFUSAL_PHRASES)}")
        else:  # unsure and uncertain
            texts.append(solved + SURE_QUESTION + (SURE_TEXT if rec["certain"] else UNSURE_TEXT))
    rng.shuffle(texts)
    return texts


def lmflow_text_only(texts: Sequence[str]) -> dict:
    return {"type": "text_only", "instances": [{"text": t} for t in texts]}


def evaluate(runner: TaskRunner, examples: Sequence[Example], store: RunStore, *, batch_size: int,
             match: str = "substring") -> list[dict]:
    """Answer, answer confidence, sure-probability and correctness for each test question."""
    task, matcher = runner.task, MATCHERS[match]
    prompts = [runner.prompt(ex) for ex in examples]

    def fn(batch: list[int], number: int) -> list[dict]:
        batch_prompts = [prompts[i] for i in batch]
        answers = runner.answer(batch_prompts, task.eval_new_tokens)
        sure = runner.sure(batch_prompts, [a.text for a in answers])
        records = []
        for i, ans, s in zip(batch, answers, sure):
            ex = examples[i]
            correct = ans.text == ex.gold if task.kind == "choice" else matcher(ex.gold, ans.text)
            rec = {"index": ex.index, "question": ex.question, "gold": ex.gold, "answer": ans.text,
                   "correct": int(correct), "answer_conf": ans.confidence, "sure_prob": s,
                   "stopped_by": ans.stopped_by}
            if ans.option_probs is not None:
                rec["option_probs"] = ans.option_probs
            records.append(rec)
        return records

    run_batches(examples, prompts, runner.engine.tokenizer, batch_size, store, fn, f"eval {task.name}")
    return store.ordered()
