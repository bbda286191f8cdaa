"""Refusal-aware training data: the exact texts of SPEC.md for each method, in LMFlow format."""

import json

import pytest

from rtuning.pipeline import lmflow_text_only, mark_certain, training_texts
from rtuning.tasks import PARAREL, REFUSAL_PHRASES, Example

SURE = " Are you sure you accurately answered the question based on your internal knowledge? I am sure."
UNSURE = " Are you sure you accurately answered the question based on your internal knowledge? I am unsure."


def examples():
    qs = [("Who wrote Hamlet?", "Shakespeare"), ("Capital of Peru?", "Lima"), ("Who is X?", "Y"), ("Q4?", "A4")]
    return [Example(i, q, f"Question: {q} Answer:", a) for i, (q, a) in enumerate(qs)]


def records(correct):
    return [{"index": i, "correct": c} for i, c in enumerate(correct)]


def test_unsure_texts_are_the_papers():
    exs = examples()
    texts = training_texts(PARAREL, exs, mark_certain(records([1, 0, 1, 0]), "unsure"), "unsure", seed=0)
    assert sorted(texts) == sorted([
        "Question: Who wrote Hamlet? Answer: Shakespeare." + SURE,
        "Question: Capital of Peru? Answer: Lima." + UNSURE,
        "Question: Who is X? Answer: Y." + SURE,
        "Question: Q4? Answer: A4." + UNSURE,
    ])


def test_unknown_replaces_unknown_answers_with_a_refusal_phrase():
    texts = training_texts(PARAREL, examples(), mark_certain(records([1, 0, 0, 1]), "unknown"), "unknown", seed=1)
    assert "Question: Who wrote Hamlet? Answer: Shakespeare." in texts
    refused = [t for t in texts if t.startswith("Question: Capital of Peru? Answer: ")]
    assert len(refused) == 1
    assert refused[0].removeprefix("Question: Capital of Peru? Answer: ") in REFUSAL_PHRASES
    assert len(REFUSAL_PHRASES) == 16


def test_vanilla_keeps_gold_answers_only():
    texts = training_texts(PARAREL, examples(), mark_certain(records([0, 0, 0, 0]), "vanilla"), "vanilla", seed=0)
    assert sorted(texts) == sorted(PARAREL.solved(e) for e in examples())


def test_uncertain_splits_at_the_median_entropy():
    recs = [{"index": i, "correct": 0, "entropy": e} for i, e in enumerate([1.2, 0.0, 0.7, 0.0])]
    marked = mark_certain(recs, "uncertain")
    assert [r["certain"] for r in marked] == [False, True, False, True]
    texts = training_texts(PARAREL, examples(), marked, "uncertain", seed=0)
    assert "Question: Capital of Peru? Answer: Lima." + SURE in texts
    assert "Question: Who wrote Hamlet? Answer: Shakespeare." + UNSURE in texts


def test_shuffle_is_fixed_by_the_seed_and_format_is_lmflow():
    recs = mark_certain(records([1, 0, 1, 0]), "unsure")
    a = training_texts(PARAREL, examples(), recs, "unsure", seed=5)
    assert a == training_texts(PARAREL, examples(), recs, "unsure", seed=5)
    doc = json.loads(json.dumps(lmflow_text_only(a)))
    assert doc["type"] == "text_only" and [i["text"] for i in doc["instances"]] == a


def test_unknown_method_name_is_rejected():
    with pytest.raises(ValueError, match="unknown method"):
        training_texts(PARAREL, examples(), records([1, 0, 1, 0]), "bogus", seed=0)


def test_batch_plan_groups_shared_prefixes_and_respects_caps():
    from rtuning.pipeline import plan_batches

    shots_a, shots_b = list(range(100, 140)), list(range(200, 240))  # two subjects' few-shot blocks
    seqs = [(shots_a if i % 2 else shots_b) + [i] * (1 + i % 5) for i in range(12)]
    plan = plan_batches(seqs, batch_size=6)
    assert sorted(i for b in plan for i in b) == list(range(12))
    assert all(len({tuple(seqs[i][:40]) for i in b}) == 1 for b in plan)  # one subject per batch
    for b in plan:  # longest first within a group
        assert [len(seqs[i]) for i in b] == sorted((len(seqs[i]) for i in b), reverse=True)
    capped = plan_batches(seqs, batch_size=6, max_batch_tokens=3 * 45)
    assert all(len(b) * max(len(seqs[i]) for i in b) <= 3 * 45 for b in capped)
    # no shared block: plain longest-first order, as before
    plain = plan_batches([[i] * n for i, n in enumerate([3, 9, 5, 7])], batch_size=2)
    assert plain == [[1, 3], [2, 0]]


def test_batch_work_counts_a_shared_block_once():
    from rtuning.pipeline import batch_work

    shots = list(range(100, 140))
    seqs = [shots + [i] * (1 + i % 5) for i in range(6)] + [shots + [0]]  # the last repeats the first
    # the block once, each row's own tokens, one token for the repeat, 3 tokens a row after the prompt
    assert batch_work(seqs, range(7), row_tokens=3) == 40 + sum(1 + i % 5 for i in range(6)) + 1 + 3 * 7
    assert batch_work(seqs, [2], row_tokens=0) == 43
