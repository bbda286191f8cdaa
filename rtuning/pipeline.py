"""The loops, written once: probe a model on training questions, evaluate it on test questions,
and build refusal-aware training text. Each dataset only supplies its Task declaration."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from .backends.base import Backend, Sampling, common_prefix_length
from .scoring import ScoringRules
from .matching import MATCHERS
from .metrics import answer_entropy
from .methods import METHODS, get_method  # noqa: F401 (METHODS: callers imported it from here)
from .distributed import Processes
from .records import RunStore
from .refusal import is_refusal
from .tasks import SURE_QUESTION, DataError, Example, Shots, Task


@dataclass
class Scored:
    """One answer with its confidence; `text` is the option letter for multiple choice."""

    text: str
    confidence: float
    stopped_by: str = ""
    option_probs: list[float] | None = None
    raw: str | None = None  # the answer as decoded, before stripping


class TaskRunner:
    """Binds a backend to a task: prompts (with shots), answering and sure-probability, under
    the scoring rules of one compat mode. It talks to the backend only through the protocol
    (rtuning/backends/base.py); state from answering is passed to `sure` as a value."""

    def __init__(self, backend: Backend, task: Task, shots: Shots, max_prompt_tokens: int | None = None,
                 rules: ScoringRules | None = None):
        self.backend, self.task, self.shots = backend, task, shots
        self.tokenizer = backend.tokenizer
        self.rules = rules or ScoringRules.build(backend.tokenizer)
        self.max_prompt_tokens = max_prompt_tokens
        self.truncated: dict[int, int] = {}  # example index -> context tokens cut away
        self.letter_ids: list[int] = []
        if task.kind == "choice":
            self.letter_ids = self.rules.letter_ids(task.choices, task.answer_sep)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids with the tokenizer's special tokens (BOS where it adds one, as in training)."""
        return self.tokenizer(list(texts), add_special_tokens=True).input_ids

    def prompt(self, ex: Example) -> str:
        """Shots + prompt, its context cut from the left when longer than max_prompt_tokens."""
        prefix = self.shots.prefix(ex)
        full = prefix + ex.prompt
        limit = self.max_prompt_tokens
        if limit is None:
            return full
        tok = self.tokenizer
        enc = tok(full, add_special_tokens=True, return_offsets_mapping=True)
        excess = len(enc.input_ids) - limit
        if excess <= 0:
            return full
        keep_from = len(prefix) + ex.context_end  # shots and context may go; the rest stays
        starts = [s for (s, e) in enc.offset_mapping if e > s]  # real tokens' start offsets
        cut_points = [s for s in starts if s <= keep_from]
        while True:
            if excess >= len(cut_points):
                raise DataError(
                    f"{self.task.name} record {ex.index}: the question part alone is longer than "
                    f"--max_prompt_tokens {limit}; raise the limit")
            text = full[cut_points[excess]:]
            n = len(tok(text, add_special_tokens=True).input_ids)
            if n <= limit:
                self.truncated[ex.index] = len(enc.input_ids) - n
                return text
            excess += n - limit

    def answer(self, prompts: list[str], max_new_tokens: int, keep_state: bool = False,
               stop: frozenset[int] | None = None) -> tuple[list[Scored], object]:
        """Greedy answers (the most likely letter for multiple choice) and the backend's state."""
        seqs = self.encode(prompts)
        if self.task.kind == "choice":
            rows, state = self.backend.token_probs(seqs, self.letter_ids, keep_state=keep_state)
            picks = [max(range(len(r)), key=r.__getitem__) for r in rows]
            return [Scored(self.task.choices[k], r[k], "letter", r, self.task.choices[k])
                    for k, r in zip(picks, rows)], state
        stop = self.rules.stop_ids if stop is None else stop
        answers, state = self.backend.decode(seqs, max_new_tokens, stop=stop, keep_state=keep_state)
        return [Scored(a.text, a.confidence, a.stopped_by, raw=a.raw) for a in answers], state

    def probe_answers(self, prompts: list[str]) -> list[Scored]:
        """The probe's greedy answers, read as the scoring rules say: under the original's rules
        open answers run to the probe's length and are cut at the first "." character.
        Multiple-choice probes score the letters under both (the original's MMLU, FEVER and WiCE
        probes read the letter logits of their one generated position, with its letter ids)."""
        task = self.task
        if task.kind == "choice" or not self.rules.probe_cut:
            return self.answer(prompts, task.probe_new_tokens)[0]
        answers, _ = self.backend.decode(self.encode(prompts), task.probe_new_tokens, stop=frozenset())
        return [Scored(self.cut(a).strip(), a.confidence, a.stopped_by, raw=a.raw) for a in answers]

    def cut(self, answer) -> str:
        """An answer decoded without a stop, read as the original probe reads it."""
        return self.rules.cut_probe_text(answer.raw if answer.raw is not None else answer.text,
                                         answer.stopped_by == "eos")

    def known(self, ex: Example, answer: str, matcher) -> bool:
        """The probe's verdict on its greedy answer: the task's correctness rule, or under the
        original's known rule the gold label word inside the chosen option's (WiCE)."""
        task = self.task
        if task.kind == "choice" and self.rules.label_word_known and task.label_words:
            words = dict(zip(task.choices, task.label_words))
            return words[ex.gold] in words[answer]
        return is_correct(task, matcher, ex, answer)

    def samples(self, prompts: list[str], first: list[Scored], k: int, max_new_tokens: int,
                sampling: Sampling, probe: bool = False) -> list[list[str]]:
        """k sampled answers per prompt (for answer entropy).

        Multiple choice: the letters are drawn from each prompt's own letter distribution at the
        sampling temperature, softmax(logits / T), which `first` (the greedy pass) already
        holds, so no forward pass is repeated (under the original's rules: one token drawn from
        the whole vocabulary, top-k 50, per sample, kept as decoded: " A" and "A" differ). Open
        questions: k decodings per prompt (the probe's, under the original's probe rule: its
        length, no stop, cut at the first ".")."""
        repeated = [p for p in prompts for _ in range(k)]
        if self.task.kind == "choice" and not self.rules.vocab_samples:
            probs = torch.tensor([a.option_probs for a in first], dtype=torch.float64)
            tempered = torch.softmax(torch.log(probs.clamp(min=1e-300)) / sampling.temperature, dim=-1)
            generator = torch.Generator().manual_seed(sampling.seed)
            picks = torch.multinomial(tempered, k, replacement=True, generator=generator)
            return [[self.task.choices[j] for j in row] for row in picks.tolist()]
        if self.task.kind == "choice":
            answers, _ = self.backend.decode(self.encode(repeated), 1, stop=frozenset(), sampling=sampling)
            texts = [a.raw if a.raw is not None else a.text for a in answers]
        elif probe and self.rules.probe_cut:
            answers, _ = self.backend.decode(self.encode(repeated), max_new_tokens, stop=frozenset(),
                                             sampling=sampling)
            texts = [self.cut(a) for a in answers]
        else:
            answers, _ = self.backend.decode(self.encode(repeated), max_new_tokens, stop=self.rules.stop_ids,
                                             sampling=sampling)
            texts = [a.text for a in answers]
        return [texts[i * k:(i + 1) * k] for i in range(len(prompts))]

    def sure(self, prompts: list[str], answers: list[Scored], state: object = None) -> list[float]:
        """Sure-probabilities p(sure) / (p(sure) + p(unsure)); `state` is what `answer` returned."""
        texts = [self.rules.sure_text(p, a.text, a.raw, self.task.sure_sep) for p, a in zip(prompts, answers)]
        rows, _ = self.backend.token_probs(self.encode(texts), [self.rules.sure_id, self.rules.unsure_id],
                                           state=state)
        return [r[0] for r in rows]


def plan_batches(seqs: Sequence[Sequence[int]], batch_size: int,
                 max_batch_tokens: int | None = None) -> list[list[int]]:
    """Batches of at most batch_size prompts and, with max_batch_tokens, at most that many
    padded tokens (rows x longest row), the largest batch first so memory trouble shows at once.

    Prompts that share a long prefix go together: the engine computes a prefix shared within a
    batch once, so MMLU's five-shot prompt of a subject (~400 tokens) is paid once per batch
    instead of once per question. The grouping prefix is the median length two prompts share
    when sorted (the few-shot block where there is one; a few tokens where prompts only share
    a template, so that long-context tasks stay sorted by length), and within a group prompts
    are sorted longest first.
    """
    n = len(seqs)
    lex = sorted(range(n), key=lambda i: seqs[i])
    shared = sorted(common_prefix_length(seqs[a], seqs[b]) for a, b in zip(lex, lex[1:]))
    p = shared[len(shared) // 2] if shared else 0
    order = sorted(range(n), key=lambda i: (seqs[i][:p], -len(seqs[i]), i))
    batches: list[list[int]] = []
    width = 0
    for i in order:
        if batches:
            current = batches[-1]
            w = max(width, len(seqs[i]))
            if len(current) < batch_size and (max_batch_tokens is None or (len(current) + 1) * w <= max_batch_tokens):
                current.append(i)
                width = w
                continue
        batches.append([i])
        width = len(seqs[i])
    batches.sort(key=lambda b: -len(b) * max(len(seqs[i]) for i in b))  # stable: ties keep their order
    return batches


def batch_work(seqs: Sequence[Sequence[int]], batch: Sequence[int], row_tokens: int = 0) -> int:
    """Tokens a batch costs the engine, for the progress bar: its prompts' distinct prefixes
    (tree packing computes a prefix that rows share once) plus `row_tokens` a question for what
    follows the prompt (answer tokens decoded, the sure question).

    Padded prompt tokens overstate batches of prompts that share a few-shot block: replayed on
    the study's MMLU evaluation, the first tenth of the run promised 67 minutes by padded tokens
    and 19 by this count; it took 20.
    """
    rows = sorted(seqs[i] for i in batch)
    # each row's last token is its own (its logits are read), even in a repeated prompt
    shared = sum(min(common_prefix_length(a, b), len(b) - 1) for a, b in zip(rows, rows[1:]))
    return sum(len(r) for r in rows) - shared + row_tokens * len(rows)


def answer_tokens(task: Task, new_tokens: int, answers: int) -> int:
    """Decoded tokens a question costs at most: none for a letter choice, whose answers (greedy
    and sampled) all come from one next-token distribution."""
    return 0 if task.kind == "choice" else new_tokens * answers


def run_batches(examples: Sequence[Example], prompts: Sequence[str], tokenizer, batch_size: int,
                store: RunStore, fn: Callable[[list[int], int], list[dict]], desc: str,
                max_batch_tokens: int | None = None, procs: Processes = Processes(),
                row_tokens: int = 0) -> None:
    """Call fn(batch positions, batch number) on length-sorted batches not yet in the store.

    Batches are cut from the full list, so a resumed run computes exactly the batches an
    uninterrupted run would, and gets identical numbers. In a data-parallel run, process r
    takes batches r, r + world, ... (the same batches a single process computes), and all
    processes wait for each other before the records are read back.
    """
    seqs = tokenizer(list(prompts), add_special_tokens=True).input_ids
    plan = plan_batches(seqs, batch_size, max_batch_tokens)
    mine = [(number, b) for number, b in enumerate(plan) if number % procs.world == procs.rank]
    todo = [(number, [i for i in b if examples[i].index not in store.done]) for number, b in mine]
    # The bar counts tokens of work (batch_work), not questions: batches run largest first, so
    # a rate in questions would promise hours during the first (long) batches of a task whose
    # prompts vary in length (MMLU: 20 minutes in all, 3 hours at first sight).
    cost = {number: batch_work(seqs, b, row_tokens) for number, b in mine}
    done = sum(cost[number] for number, b in todo if not b)
    questions, left = sum(len(b) for _, b in mine), sum(len(b) for _, b in todo)
    bar = tqdm(total=sum(cost.values()), initial=done, desc=desc if procs.world == 1 else f"{desc} [{procs.rank}]",
               unit="tok", unit_scale=True, smoothing=0.1, position=procs.rank)
    bar.set_postfix_str(f"{questions - left}/{questions} questions", refresh=False)
    for number, batch in todo:
        if not batch:
            continue
        store.append(fn(batch, number))
        left -= len(batch)
        bar.set_postfix_str(f"{questions - left}/{questions} questions", refresh=False)
        bar.update(cost[number])
    bar.close()
    procs.barrier()
    store.refresh()


def sampling_for(seed: int, batch_number: int, temperature: float) -> Sampling:
    """A seed per batch: resumed and uninterrupted runs draw the same samples."""
    return Sampling(temperature=temperature, seed=seed * 1_000_003 + batch_number)


def probe(runner: TaskRunner, examples: Sequence[Example], store: RunStore, *, method: str,
          batch_size: int, seed: int, match: str = "substring", num_try: int = 5,
          temperature: float = 0.7, max_batch_tokens: int | None = None,
          procs: Processes = Processes(), settings: Mapping[str, Any] | None = None) -> list[dict]:
    """Answer every training question greedily, run the method's sampling step if it declares
    one, and label the records; `settings` holds the values of the method's flags (num_try and
    temperature may also be given as arguments)."""
    task, matcher, declared = runner.task, MATCHERS[match], get_method(method)
    values = declared.settings({"num_try": num_try, "temperature": temperature, **(settings or {})})
    step = declared.sampling
    prompts = [runner.prompt(task.probing(ex)) for ex in examples]  # the original's probe prompt

    def fn(batch: list[int], number: int) -> list[dict]:
        batch_prompts = [prompts[i] for i in batch]
        greedy = runner.probe_answers(batch_prompts)
        records = []
        for i, ans in zip(batch, greedy):
            ex = examples[i]
            records.append({"index": ex.index, "question": ex.question, "gold": ex.gold,
                            "output": ans.text, "confidence": ans.confidence,
                            "correct": bool(runner.known(ex, ans.text, matcher)),
                            "truncated_tokens": runner.truncated.get(ex.index, 0)})
        if step is not None:
            samples = runner.samples(batch_prompts, greedy, values[step.count.name], task.probe_new_tokens,
                                     sampling_for(seed, number, values[step.temperature.name]), probe=True)
            for i, rec, texts in zip(batch, records, samples):
                rec["samples"] = texts
                if step.score:
                    rec["samples_correct"] = [bool(is_correct(task, matcher, examples[i], t)) for t in texts]
                rec.update(step.summary(rec))
        return records

    answers = 1 + (values[step.count.name] if step is not None else 0)
    run_batches(examples, prompts, runner.tokenizer, batch_size, store, fn, f"probe {task.name}",
                max_batch_tokens, procs, row_tokens=answer_tokens(task, task.probe_new_tokens, answers))
    return mark_certain(store.ordered(), method, values)


def mark_certain(records: list[dict], method: str, settings: Mapping[str, Any] | None = None) -> list[dict]:
    """Split into certain (D1) and uncertain (D0) by the method's label rule (rtuning.methods);
    settings: its flags' values (default: the flags' defaults)."""
    declared = get_method(method)
    flags = declared.certain(records, declared.settings(settings or {}))
    return [{**r, "certain": c} for r, c in zip(records, flags)]


def training_texts(task: Task, examples: Sequence[Example], records: Sequence[dict], method: str,
                   seed: int) -> list[str]:
    """Refusal-aware training text (shot-free, as the paper) in the method's form, shuffled with the seed."""
    text = get_method(method).text
    by_index = {ex.index: ex for ex in examples}
    rng = random.Random(seed)
    texts = [text(task, by_index[rec["index"]], rec["certain"], rng) for rec in records]
    rng.shuffle(texts)
    return texts


def lmflow_text_only(texts: Sequence[str]) -> dict:
    return {"type": "text_only", "instances": [{"text": t} for t in texts]}


def is_correct(task: Task, matcher, ex: Example, answer: str) -> bool:
    """Multiple choice: the chosen letter is the gold one; open QA: the matcher's verdict."""
    return answer == ex.gold if task.kind == "choice" else matcher(ex.gold, answer)


def evaluate(runner: TaskRunner, examples: Sequence[Example], store: RunStore, *, batch_size: int,
             match: str = "substring", max_batch_tokens: int | None = None,
             reuse_cache: bool = True, procs: Processes = Processes(), num_samples: int = 0,
             temperature: float = 0.7, seed: int = 0) -> list[dict]:
    """Answer, answer confidence, sure-probability and correctness (or refusal) per question.

    reuse_cache: the sure question continues from the answer prompt's KV cache instead of
    encoding the shared prefix again (same numbers, less arithmetic). num_samples > 0 also
    samples that many answers per question and records their entropy (the paper's Vanilla-C
    baseline: test-time uncertainty filtering)."""
    task, matcher = runner.task, MATCHERS[match]
    prompts = [runner.prompt(ex) for ex in examples]

    def fn(batch: list[int], number: int) -> list[dict]:
        batch_prompts = [prompts[i] for i in batch]
        answers, state = runner.answer(batch_prompts, task.eval_new_tokens, keep_state=reuse_cache)
        sure = runner.sure(batch_prompts, answers, state)
        del state  # the prompts' KV cache: free it before sampling
        records = []
        for i, ans, s in zip(batch, answers, sure):
            ex = examples[i]
            rec = {"index": ex.index, "question": ex.question, "gold": ex.gold, "answer": ans.text,
                   "answer_conf": ans.confidence, "sure_prob": s, "stopped_by": ans.stopped_by,
                   "truncated_tokens": runner.truncated.get(ex.index, 0)}
            if task.kind == "refusal":
                rec["refused"], rec["refused_by"] = is_refusal(ans.text, s)
            else:
                rec["correct"] = int(is_correct(task, matcher, ex, ans.text))
            if ans.option_probs is not None:
                rec["option_probs"] = ans.option_probs
            records.append(rec)
        if num_samples:
            samples = runner.samples(batch_prompts, answers, num_samples, task.eval_new_tokens,
                                     sampling_for(seed, number, temperature))
            for rec, texts in zip(records, samples):
                rec["samples"], rec["entropy"] = texts, answer_entropy(texts)
        return records

    sure_tokens = len(runner.tokenizer(f".{SURE_QUESTION} I am", add_special_tokens=False).input_ids)
    run_batches(examples, prompts, runner.tokenizer, batch_size, store, fn, f"eval {task.name}",
                max_batch_tokens, procs,
                row_tokens=sure_tokens + answer_tokens(task, task.eval_new_tokens, 1 + num_samples))
    return store.ordered()
