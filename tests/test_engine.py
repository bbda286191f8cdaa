"""The engine on a tiny random Llama: batching changes nothing, stop rules hold, letters score."""

import contextlib

import pytest
import torch

from rtuning.scoring import ScoringRules, continuation_token, sure_prompt
from rtuning.tasks import PARAREL


def sure_p(engine, seqs, cache=None):
    """p(sure) / (p(sure) + p(unsure)) after each sequence, as the hf backend reads it."""
    rules = ScoringRules.build(engine.tokenizer)
    return engine.token_probs(seqs, [rules.sure_id, rules.unsure_id], cache)[0][:, 0].tolist()


def choose(engine, seqs, letters, keep=False):
    """(the most likely letter, the letters' distribution) per row, and the prompts' cache."""
    probs, cache = engine.token_probs(seqs, letters, keep_prompt_cache=keep)
    return [(int(r.argmax()), r.tolist()) for r in probs], cache


@contextlib.contextmanager
def forced_logits(engine, schedule):
    """Add a large bias to chosen tokens: schedule[call][row] is the token id to force (or None);
    `row` is the row in the engine's input, whatever rows are still in the batch."""
    calls = {"n": 0}

    def hook(module, inputs, output):
        step = schedule[min(calls["n"], len(schedule) - 1)]
        calls["n"] += 1
        out = output.clone()
        # Rows of logits map to the engine's input rows through active_rows: finished rows leave
        # the batch, and tree-packed prompts give one row of logits per distinct prompt.
        rows = engine.active_rows
        flat = out.view(-1, out.shape[-1]) if rows is not None else out[:, -1]
        for j, row in enumerate(rows if rows is not None else range(out.shape[0])):
            tok = step[row] if row < len(step) else None
            if tok is not None:
                flat[j, tok] += 1000.0
        return out

    handle = engine.model.lm_head.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@pytest.fixture(scope="module")
def plain_engine(tiny_engine):
    """The same model without tree-packed prompts: one left-padded batch per call (the path
    for models whose cache cannot be regrouped)."""
    from rtuning.engine import Engine

    return Engine(tiny_engine.model, tiny_engine.tokenizer, share_prefix=False)


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
    sure_b = sure_p(tiny_engine, sure_seqs)
    sure_s = [sure_p(tiny_engine, [s])[0] for s in sure_seqs]
    assert sure_b == pytest.approx(sure_s, abs=1e-4)


def test_sure_probability_is_the_normalised_pair(tiny_engine, questions):
    seq = tiny_engine.encode([sure_prompt(questions[0].prompt, "x")])
    p = tiny_engine.next_token_probs(seq)[0]
    rules = ScoringRules.build(tiny_engine.tokenizer)
    expected = p[rules.sure_id] / (p[rules.sure_id] + p[rules.unsure_id])
    assert sure_p(tiny_engine, seq)[0] == pytest.approx(float(expected), abs=1e-6)


def test_answers_stop_at_period_or_eos_and_never_decode_padding(plain_engine, bpe_tokenizer):
    tok = bpe_tokenizer
    a, b = tok.convert_tokens_to_ids("ĠParis"), tok.convert_tokens_to_ids("ĠRome")
    period, eos = tok.convert_tokens_to_ids("."), tok.eos_token_id
    seqs = plain_engine.encode(["Question: Where? Answer:", "Question: And where else, then? Answer:"])
    with forced_logits(plain_engine, [[a, a], [eos, b], [a, period], [b, b]]):
        ans = plain_engine.generate(seqs, 5)
    assert [x.text for x in ans] == ["Paris", "Paris Rome"]
    assert [x.stopped_by for x in ans] == ["eos", "period"]
    assert len(ans[0].token_probs) == 1 and len(ans[1].token_probs) == 2
    assert all(p > 0.99 for x in ans for p in x.token_probs)


def test_empty_answer_has_confidence_zero(plain_engine, bpe_tokenizer):
    period = bpe_tokenizer.convert_tokens_to_ids(".")
    seqs = plain_engine.encode(["Question: Where? Answer:"])
    with forced_logits(plain_engine, [[period]]):
        ans = plain_engine.generate(seqs, 5)[0]
    assert ans.text == "" and ans.confidence == 0.0 and ans.stopped_by == "period"


def test_length_limit(plain_engine, bpe_tokenizer):
    a = bpe_tokenizer.convert_tokens_to_ids("ĠParis")
    with forced_logits(plain_engine, [[a]]):
        ans = plain_engine.generate(plain_engine.encode(["Q:"]), 3)[0]
    assert ans.token_ids == [a] * 3 and ans.stopped_by == "length"


def test_letter_scoring_picks_the_forced_letter(plain_engine, bpe_tokenizer):

    letters = [continuation_token(bpe_tokenizer, "Answer:", c) for c in "ABCD"]
    seqs = plain_engine.encode(["Question: pick\nAnswer:", "Question: pick again\nAnswer:"])
    with forced_logits(plain_engine, [[letters[1], letters[3]]]):
        picks, _ = choose(plain_engine, seqs, letters)
    assert [k for k, _ in picks] == [1, 3]
    assert all(sum(p) == pytest.approx(1.0) for _, p in picks)
    assert picks[0][1][1] > 0.99


def test_sampling_is_reproducible_with_a_seed(tiny_engine, questions):
    from rtuning.backends import Sampling

    seqs = tiny_engine.encode([q.prompt for q in questions]) * 2
    runs = [tiny_engine.generate(seqs, 4, Sampling(seed=3)) for _ in range(2)]
    assert [a.token_ids for a in runs[0]] == [a.token_ids for a in runs[1]]


def test_sure_from_the_prompt_cache_equals_a_full_forward(tiny_engine, questions):
    prompts = [q.prompt for q in questions]
    seqs = tiny_engine.encode(prompts)
    answers, cache = tiny_engine.decode(seqs, 5, keep_prompt_cache=True)
    assert cache is not None and cache.cache.get_seq_length() >= max(len(s) for s in seqs)
    sure_seqs = tiny_engine.encode([sure_prompt(p, a.text) for p, a in zip(prompts, answers)])
    full = sure_p(tiny_engine, sure_seqs)
    reused = sure_p(tiny_engine, sure_seqs, cache)
    assert reused == pytest.approx(full, abs=1e-5)


def test_prompt_cache_falls_back_when_tokens_merge_across_the_boundary(tiny_engine):
    seqs = tiny_engine.encode(["Question: a b Answer:", "Question: c Answer:"])
    _, cache = tiny_engine.decode(seqs, 2, keep_prompt_cache=True)
    # row 0 does not start with its prompt's tokens: it must be scored in full
    sure_seqs = [tiny_engine.encode(["Something else entirely. I am"])[0],
                 seqs[1] + tiny_engine.encode([" x. I am"])[0]]
    reused = sure_p(tiny_engine, sure_seqs, cache)
    assert reused == pytest.approx(sure_p(tiny_engine, sure_seqs), abs=1e-5)


def test_letter_cache_reuse_matches(tiny_engine, data_dir):
    from rtuning.tasks import MMLU

    prompts = [ex.prompt for ex in MMLU.load(data_dir, "ID")[:3]]
    seqs = tiny_engine.encode(prompts)
    letters = [continuation_token(tiny_engine.tokenizer, "Answer:", c) for c in "ABCD"]
    picks, cache = choose(tiny_engine, seqs, letters, keep=True)
    sure_seqs = tiny_engine.encode([sure_prompt(p, "ABCD"[k], "") for p, (k, _) in zip(prompts, picks)])
    assert sure_p(tiny_engine, sure_seqs, cache) == pytest.approx(
        sure_p(tiny_engine, sure_seqs), abs=1e-5)


# -- tree-packed prompts, kept prefix, finished rows leaving the batch, answer KV reuse -----


def varied_model(tokenizer, seed: int = 0):
    """A tiny random Llama whose greedy answers differ per prompt and sometimes stop at "."
    or the end token (wider initialisation; the stop tokens' output rows scaled up)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                      initializer_range=0.2, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                      tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for t in (tokenizer.convert_tokens_to_ids("."), tokenizer.eos_token_id):
            model.get_output_embeddings().weight[t] *= 4.5
    return model


@pytest.fixture(scope="module")
def varied(bpe_tokenizer):
    from rtuning.engine import Engine

    model = varied_model(bpe_tokenizer)
    return Engine(model, bpe_tokenizer), Engine(model, bpe_tokenizer, share_prefix=False)


@pytest.fixture(scope="module")
def shot_prompts(data_dir):
    """Prompts as the scripts build them (two shots: a long shared prefix), plus a zero-shot
    prompt that does not share it and a repeated one."""
    from rtuning.tasks import Shots

    shots = Shots(PARAREL, PARAREL.load(data_dir, "train"), 2, 42)
    exs = PARAREL.load(data_dir, "ID")[:14]
    return [shots.prompt(e) for e in exs] + [exs[0].prompt, shots.prompt(exs[3])]


def answer_and_sure(engine, prompts, new_tokens=5):
    seqs = engine.encode(prompts)
    answers, cache = engine.decode(seqs, new_tokens, keep_prompt_cache=True)
    sure_seqs = engine.encode([sure_prompt(p, a.text) for p, a in zip(prompts, answers)])
    return answers, sure_p(engine, sure_seqs, cache), sure_seqs


def assert_same(a, b, sure_a, sure_b):
    assert [x.token_ids for x in a] == [x.token_ids for x in b]
    assert [x.stopped_by for x in a] == [x.stopped_by for x in b]
    assert [x.confidence for x in a] == pytest.approx([x.confidence for x in b], abs=1e-5)
    assert sure_a == pytest.approx(sure_b, abs=1e-5)


def test_packed_prompts_equal_plain_batches_with_less_work(varied, shot_prompts):
    packed, plain = varied
    packed.clear_prefix_cache()
    packed.reset_counters(), plain.reset_counters()
    a, sure_a, _ = answer_and_sure(packed, shot_prompts)
    b, sure_b, sure_seqs = answer_and_sure(plain, shot_prompts)
    assert {x.stopped_by for x in b} >= {"period", "length"}  # the test covers both kinds of stop
    assert_same(a, b, sure_a, sure_b)
    assert sure_b == pytest.approx(sure_p(plain, sure_seqs), abs=1e-5)  # cache vs full, plain
    assert packed.tokens_processed < 0.7 * plain.tokens_processed
    packed.reset_counters()
    packed.next_token_probs(packed.encode(shot_prompts))
    assert packed.token_slots == packed.tokens_processed  # prompts: no padding computed


def test_kept_prefix_and_small_chunks_change_nothing(varied, shot_prompts, monkeypatch):
    packed, plain = varied
    b, sure_b, _ = answer_and_sure(plain, shot_prompts)
    packed.clear_prefix_cache()
    monkeypatch.setattr(packed, "PACK_TOKENS", 150)  # several packed passes per batch
    work = []
    for _ in range(2):
        packed.reset_counters()
        a, sure_a, _ = answer_and_sure(packed, shot_prompts)
        assert_same(a, b, sure_a, sure_b)
        work.append(packed.tokens_processed)
    assert len(packed._prefix) >= 30 and work[1] < work[0]  # the shots are not computed again


def test_one_question_at_a_time_equals_plain(varied, shot_prompts):
    packed, plain = varied
    answer_and_sure(packed, shot_prompts)
    for p in shot_prompts[:3]:
        a, sure_a, _ = answer_and_sure(packed, [p])
        b, sure_b, _ = answer_and_sure(plain, [p])
        assert_same(a, b, sure_a, sure_b)


def test_a_batch_gives_the_same_bits_whatever_ran_before(bpe_tokenizer, shot_prompts):
    """What a resumed run relies on: a batch's numbers depend on its own rows only."""
    from rtuning.engine import Engine

    model = varied_model(bpe_tokenizer)
    fresh, used = Engine(model, bpe_tokenizer), Engine(model, bpe_tokenizer)
    shots = shot_prompts[0][: shot_prompts[0].rindex("Question:")]
    # a batch whose shared prefix is longer (the shots and most of a question) goes first
    answer_and_sure(used, [f"{shots}Question: What field does Foo Bar{i} work in? Answer:" for i in range(4)])
    assert len(used._prefix) > len(fresh.encode([shots])[0])
    batch = shot_prompts[4:10]
    a, sure_a, _ = answer_and_sure(used, batch)
    b, sure_b, _ = answer_and_sure(fresh, batch)
    assert [x.token_probs for x in a] == [x.token_probs for x in b]
    assert sure_a == sure_b


def test_kept_prefix_is_dropped_when_the_weights_change(bpe_tokenizer, shot_prompts):
    from rtuning.engine import Engine

    model = varied_model(bpe_tokenizer, seed=1)
    packed, plain = Engine(model, bpe_tokenizer), Engine(model, bpe_tokenizer, share_prefix=False)
    answer_and_sure(packed, shot_prompts)
    assert packed._prefix_kv is not None
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight.mul_(1.5)
    a, sure_a, _ = answer_and_sure(packed, shot_prompts)
    b, sure_b, _ = answer_and_sure(plain, shot_prompts)
    assert_same(a, b, sure_a, sure_b)


def test_sure_reuses_the_answer_tokens_and_falls_back_when_they_differ(varied, shot_prompts):
    packed, _ = varied
    prompts = shot_prompts[:8]
    seqs = packed.encode(prompts)
    answers, cache = packed.decode(seqs, 5, keep_prompt_cache=True)
    assert cache.answers and any(cache.answers)
    # half the rows get another answer than the one decoded: their cached answer columns must go
    texts = [a.text if i % 2 else "Zanzibar" for i, a in enumerate(answers)]
    sure_seqs = packed.encode([sure_prompt(p, t) for p, t in zip(prompts, texts)])
    packed.reset_counters()
    reused = sure_p(packed, sure_seqs, cache)
    after_prompt = sum(len(s) - len(p) for s, p in zip(sure_seqs, seqs))
    assert packed.tokens_processed < after_prompt  # decoded answer tokens were not computed again
    assert reused == pytest.approx(sure_p(packed, sure_seqs), abs=1e-5)


def test_finished_rows_leave_the_batch(plain_engine, bpe_tokenizer):
    tok = bpe_tokenizer
    a, period = tok.convert_tokens_to_ids("ĠParis"), tok.convert_tokens_to_ids(".")
    seqs = plain_engine.encode([f"Question: number {i}? Answer:" for i in range(8)])
    plain_engine.reset_counters()
    # six rows stop at once, two go on to the length limit
    with forced_logits(plain_engine, [[period] * 6 + [a, a], [a] * 8]):
        ans = plain_engine.generate(seqs, 4)
    assert [x.stopped_by for x in ans] == ["period"] * 6 + ["length"] * 2
    # the prompts, one step with all 8 rows and two with the 2 rows still going
    assert plain_engine.tokens_processed == sum(map(len, seqs)) + 2 + 2 + 2
    assert plain_engine.token_slots == 8 * max(map(len, seqs)) + 2 + 2 + 2


def test_packed_letters_equal_plain_letters(varied, data_dir):
    from rtuning.tasks import MMLU

    packed, plain = varied
    prompts = [ex.prompt for ex in MMLU.load(data_dir, "ID")[:4]]
    letters = [continuation_token(packed.tokenizer, "Answer:", c) for c in "ABCD"]
    picks = [choose(e, e.encode(prompts), letters)[0] for e in (packed, plain)]
    assert [k for k, _ in picks[0]] == [k for k, _ in picks[1]]
    for (_, p), (_, q) in zip(*picks):
        assert p == pytest.approx(q, abs=1e-5)


def test_letters_without_the_prompt_cache_skip_gathering_it(varied, data_dir, monkeypatch):
    import rtuning.engine.prefill as engine_module
    from rtuning.tasks import MMLU

    packed, _ = varied
    seqs = packed.encode([ex.prompt for ex in MMLU.load(data_dir, "ID")[:4]])
    letters = [continuation_token(packed.tokenizer, "Answer:", c) for c in "ABCD"]
    built = []
    real = engine_module._cache_from
    monkeypatch.setattr(engine_module, "_cache_from", lambda kv: built.append(kv) or real(kv))
    kept, cache = choose(packed, seqs, letters, keep=True)
    assert cache is not None
    with_cache = len(built)
    plain, cache = choose(packed, seqs, letters)
    assert cache is None
    assert len(built) - with_cache == with_cache - 1  # the same passes, less the gathered cache
    assert plain == kept  # bit for bit: the logits do not depend on the gather


def test_suggested_batch_size_follows_the_memory_budget(tiny_engine):
    assert tiny_engine.suggest_batch_size(100, memory_budget=10**12) == 64  # the CPU cap
    assert 1 <= tiny_engine.suggest_batch_size(4000, memory_budget=20 * 2**20) < 64
    assert tiny_engine.suggest_batch_size(4000, memory_budget=1) == 1
