"""The engine on a tiny random Llama: batching changes nothing, stop rules hold, letters score."""

import contextlib

import pytest
import torch

from rtuning.engine import sure_prompt
from rtuning.tasks import PARAREL


@contextlib.contextmanager
def forced_logits(engine, schedule):
    """Add a large bias to chosen tokens: schedule[call][row] is the token id to force (or None)."""
    calls = {"n": 0}

    def hook(module, inputs, output):
        step = schedule[min(calls["n"], len(schedule) - 1)]
        calls["n"] += 1
        out = output.clone()
        for row, tok in enumerate(step):
            if tok is not None:
                out[row, -1, tok] += 1000.0
        return out

    handle = engine.model.lm_head.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@pytest.fixture(scope="module")
def questions(data_dir):
    exs = PARAREL.load(data_dir, "ID")
    # different lengths, so batching really pads
    return sorted(exs[:40], key=lambda e: len(e.prompt))[::7]


def test_batched_equals_one_at_a_time(tiny_engine, questions):
    prompts = [q.prompt for q in questions]
    seqs = tiny_engine.encode(prompts)
    assert len({len(s) for s in seqs}) > 1
    batched = tiny_engine.generate(seqs, 5)
    single = [tiny_engine.generate([s], 5)[0] for s in seqs]
    assert [a.token_ids for a in batched] == [a.token_ids for a in single]
    assert [a.text for a in batched] == [a.text for a in single]
    for a, b in zip(batched, single):
        assert a.confidence == pytest.approx(b.confidence, abs=1e-4)
    sure_seqs = tiny_engine.encode([sure_prompt(p, a.text) for p, a in zip(prompts, batched)])
    sure_b = tiny_engine.sure_probability(sure_seqs)
    sure_s = [tiny_engine.sure_probability([s])[0] for s in sure_seqs]
    assert sure_b == pytest.approx(sure_s, abs=1e-4)


def test_sure_probability_is_the_normalised_pair(tiny_engine, questions):
    seq = tiny_engine.encode([sure_prompt(questions[0].prompt, "x")])
    p = tiny_engine.next_token_probs(seq)[0]
    expected = p[tiny_engine.sure_id] / (p[tiny_engine.sure_id] + p[tiny_engine.unsure_id])
    assert tiny_engine.sure_probability(seq)[0] == pytest.approx(float(expected), abs=1e-6)


def test_answers_stop_at_period_or_eos_and_never_decode_padding(tiny_engine, bpe_tokenizer):
    tok = bpe_tokenizer
    a, b = tok.convert_tokens_to_ids("ĠParis"), tok.convert_tokens_to_ids("ĠRome")
    period, eos = tok.convert_tokens_to_ids("."), tok.eos_token_id
    seqs = tiny_engine.encode(["Question: Where? Answer:", "Question: And where else, then? Answer:"])
    with forced_logits(tiny_engine, [[a, a], [eos, b], [a, period], [b, b]]):
        ans = tiny_engine.generate(seqs, 5)
    assert [x.text for x in ans] == ["Paris", "Paris Rome"]
    assert [x.stopped_by for x in ans] == ["eos", "period"]
    assert len(ans[0].token_probs) == 1 and len(ans[1].token_probs) == 2
    assert all(p > 0.99 for x in ans for p in x.token_probs)


def test_empty_answer_has_confidence_zero(tiny_engine, bpe_tokenizer):
    period = bpe_tokenizer.convert_tokens_to_ids(".")
    seqs = tiny_engine.encode(["Question: Where? Answer:"])
    with forced_logits(tiny_engine, [[period]]):
        ans = tiny_engine.generate(seqs, 5)[0]
    assert ans.text == "" and ans.confidence == 0.0 and ans.stopped_by == "period"


def test_length_limit(tiny_engine, bpe_tokenizer):
    a = bpe_tokenizer.convert_tokens_to_ids("ĠParis")
    with forced_logits(tiny_engine, [[a]]):
        ans = tiny_engine.generate(tiny_engine.encode(["Q:"]), 3)[0]
    assert ans.token_ids == [a] * 3 and ans.stopped_by == "length"


def test_letter_scoring_picks_the_forced_letter(tiny_engine, bpe_tokenizer):
    from rtuning.engine import continuation_token

    letters = [continuation_token(bpe_tokenizer, "Answer:", c) for c in "ABCD"]
    seqs = tiny_engine.encode(["Question: pick\nAnswer:", "Question: pick again\nAnswer:"])
    with forced_logits(tiny_engine, [[letters[1], letters[3]]]):
        picks = tiny_engine.choose_letter(seqs, letters)
    assert [k for k, _ in picks] == [1, 3]
    assert all(sum(p) == pytest.approx(1.0) for _, p in picks)
    assert picks[0][1][1] > 0.99


def test_sampling_is_reproducible_with_a_seeded_generator(tiny_engine, questions):
    from rtuning.engine import Sampling

    seqs = tiny_engine.encode([q.prompt for q in questions]) * 2
    runs = [tiny_engine.generate(seqs, 4, Sampling(generator=torch.Generator().manual_seed(3))) for _ in range(2)]
    assert [a.token_ids for a in runs[0]] == [a.token_ids for a in runs[1]]


def test_sure_from_the_prompt_cache_equals_a_full_forward(tiny_engine, questions):
    prompts = [q.prompt for q in questions]
    seqs = tiny_engine.encode(prompts)
    answers = tiny_engine.generate(seqs, 5, keep_prompt_cache=True)
    cache = tiny_engine.prompt_cache
    assert cache is not None and cache.cache.get_seq_length() == max(len(s) for s in seqs)
    sure_seqs = tiny_engine.encode([sure_prompt(p, a.text) for p, a in zip(prompts, answers)])
    full = tiny_engine.sure_probability(sure_seqs)
    reused = tiny_engine.sure_probability(sure_seqs, cache)
    assert reused == pytest.approx(full, abs=1e-5)


def test_prompt_cache_falls_back_when_tokens_merge_across_the_boundary(tiny_engine):
    seqs = tiny_engine.encode(["Question: a b Answer:", "Question: c Answer:"])
    tiny_engine.generate(seqs, 2, keep_prompt_cache=True)
    # row 0 does not start with its prompt's tokens: it must be scored in full
    sure_seqs = [tiny_engine.encode(["Something else entirely. I am"])[0],
                 seqs[1] + tiny_engine.encode([" x. I am"])[0]]
    reused = tiny_engine.sure_probability(sure_seqs, tiny_engine.prompt_cache)
    assert reused == pytest.approx(tiny_engine.sure_probability(sure_seqs), abs=1e-5)


def test_letter_cache_reuse_matches(tiny_engine, data_dir):
    from rtuning.engine import continuation_token
    from rtuning.tasks import MMLU

    prompts = [ex.prompt for ex in MMLU.load(data_dir, "ID")[:3]]
    seqs = tiny_engine.encode(prompts)
    letters = [continuation_token(tiny_engine.tokenizer, "Answer:", c) for c in "ABCD"]
    picks = tiny_engine.choose_letter(seqs, letters, keep_prompt_cache=True)
    sure_seqs = tiny_engine.encode([sure_prompt(p, "ABCD"[k], "") for p, (k, _) in zip(prompts, picks)])
    assert tiny_engine.sure_probability(sure_seqs, tiny_engine.prompt_cache) == pytest.approx(
        tiny_engine.sure_probability(sure_seqs), abs=1e-5)
