import json
import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from rtuning.metrics import answer_entropy, average_precision, mixed_score, summarize


@pytest.mark.parametrize("seed", range(20))
def test_ap_equals_sklearn_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 300))
    y = rng.integers(0, 2, n)
    y[0] = 1
    s = rng.random(n)
    assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)


@pytest.mark.parametrize("seed", range(20))
def test_ap_equals_sklearn_with_ties(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(2, 200))
    y = rng.integers(0, 2, n)
    y[-1] = 1
    s = rng.integers(0, 4, n) / 4.0  # few distinct values: many ties
    assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_ap_hand_computed():
    # ranking: 0.9 (1), 0.8 (0), 0.7 (1): AP = 1/2 * 1 + 1/2 * 2/3
    assert average_precision([1, 0, 1], [0.9, 0.8, 0.7]) == pytest.approx(0.5 + 1 / 3)
    # one tie group holding everything: precision = base rate
    assert average_precision([1, 0, 0, 1], [0.5] * 4) == pytest.approx(0.5)
    assert math.isnan(average_precision([0, 0], [0.1, 0.2]))


def test_summary_uses_the_papers_mix():
    correct, conf, sure = [1, 0, 1, 0], [0.9, 0.2, 0.4, 0.6], [0.8, 0.7, 0.3, 0.1]
    s = summarize(correct, conf, sure)
    assert s["ap"] == pytest.approx(average_precision_score(correct, mixed_score(conf, sure)))
    assert s["ap_answer_conf"] == pytest.approx(average_precision_score(correct, conf))
    assert s["ap_sure_prob"] == pytest.approx(average_precision_score(correct, sure))
    assert s["accuracy"] == 0.5 and s["n"] == 4
    assert s["answer_rate"] == 0.5  # sure_prob > 0.5 for the first two
    assert s["accuracy_answered"] == 0.5


def test_summary_with_nothing_answered_has_no_accuracy_answered():
    s = summarize([1, 0], [0.5, 0.5], [0.1, 0.2])
    assert s["answer_rate"] == 0.0 and s["accuracy_answered"] is None


def test_answer_entropy():
    assert answer_entropy(["a"] * 5) == 0.0
    assert answer_entropy(["a", "b"]) == pytest.approx(math.log(2))
    assert answer_entropy(["a", "a", "b", "c"]) == pytest.approx(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))


def test_expected_calibration_error_hand_computed():
    from rtuning.metrics import expected_calibration_error

    # two bins used: [0.2] with accuracy 0 -> |0 - 0.2|; [0.9, 0.9] with accuracy 1/2 -> |0.5 - 0.9|
    assert expected_calibration_error([0, 1, 0], [0.2, 0.9, 0.9]) == pytest.approx(1 / 3 * 0.2 + 2 / 3 * 0.4)
    assert expected_calibration_error([1, 1], [1.0, 1.0]) == pytest.approx(0.0)
    assert expected_calibration_error([], []) is None


def test_paired_bootstrap_separates_a_real_difference_from_noise():
    from rtuning.metrics import paired_bootstrap_diff

    rng = np.random.default_rng(1)
    y = (rng.random(600) < 0.3).astype(int)
    informative = y * 0.5 + rng.random(600)  # ranks right answers higher
    noise = rng.random(600)
    better = paired_bootstrap_diff(y, informative, y, noise, resamples=300)
    assert better["diff"] == pytest.approx(average_precision(y, informative) - average_precision(y, noise))
    assert 0 < better["low"] < better["diff"] < better["high"] and better["share_a_better"] == 1.0
    same = paired_bootstrap_diff(y, noise, y, noise + 1e-12 * rng.random(600), resamples=300)
    assert same["low"] <= 0 <= same["high"]
    with pytest.raises(ValueError):
        paired_bootstrap_diff(y, noise, y[:10], noise[:10])


def test_unpaired_rate_bootstrap_matches_the_normal_interval():
    from rtuning.metrics import bootstrap_rate_diff

    a, b = [1] * 240 + [0] * 160, [1] * 120 + [0] * 180  # 60% of 400 vs 40% of 300
    t = bootstrap_rate_diff(a, b, resamples=2000)
    se = math.sqrt(0.6 * 0.4 / 400 + 0.4 * 0.6 / 300)
    assert t["diff"] == pytest.approx(0.2)
    assert t["low"] == pytest.approx(0.2 - 1.96 * se, abs=0.01) and t["high"] == pytest.approx(0.2 + 1.96 * se, abs=0.01)
    same = bootstrap_rate_diff(a, list(reversed(a)), resamples=500)
    assert same["diff"] == 0 and same["low"] < 0 < same["high"]
    with pytest.raises(ValueError):
        bootstrap_rate_diff([], b)


def test_auroc_counts_pairs_and_halves_ties():
    from rtuning.metrics import auroc

    # positives 0.8, 0.4; negatives 0.4, 0.1: pairs (0.8>0.4), (0.8>0.1), (0.4=0.4 -> 1/2), (0.4>0.1)
    assert auroc([1, 0, 1, 0], [0.8, 0.4, 0.4, 0.1]) == pytest.approx(3.5 / 4)
    assert auroc([1, 1, 0], [0.9, 0.7, 0.2]) == pytest.approx(1.0)
    assert auroc([0, 0, 1], [0.9, 0.7, 0.2]) == pytest.approx(0.0)
    # a constant score (the base rate everywhere: ECE near 0) ranks nothing
    assert auroc([1, 0, 0, 1, 0], [0.4] * 5) == pytest.approx(0.5)
    assert auroc([1, 1], [0.2, 0.3]) is None


def test_auroc_equals_brute_force_pair_count():
    from rtuning.metrics import auroc

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.random(300), 1)  # many ties
    pos, neg = s[y == 1], s[y == 0]
    brute = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (pos.size * neg.size)
    assert auroc(y, s) == pytest.approx(brute)
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s))


# --- beyond AP: the honesty metrics of R-Tuning's successors ---------------------------------

from itertools import permutations

from sklearn.metrics import brier_score_loss, precision_recall_fscore_support

from rtuning.metrics import (ReferenceMismatch, abstain_ece, abstain_qa, abstention_prf, aurc, brier_score,
                             honesty_metrics, honesty_scores, knowledge_quadrants, match_reference,
                             risk_coverage_curve, selective_accuracy, truthful_helpfulness)


@pytest.mark.parametrize("seed", range(10))
def test_ap_is_bit_identical_to_sklearn(seed):
    rng = np.random.default_rng(300 + seed)
    n = int(rng.integers(2, 3000))
    y = rng.integers(0, 2, n)
    y[0] = 1
    s = rng.random(n) if seed % 2 else np.round(rng.random(n), 2)
    assert average_precision(y, s) == average_precision_score(y, s)  # exactly, for --precision full


def test_brier_hand_computed_and_sklearn():
    assert brier_score([1, 0, 1], [0.9, 0.4, 0.2]) == pytest.approx((0.01 + 0.16 + 0.64) / 3)
    rng = np.random.default_rng(5)
    y, p = rng.integers(0, 2, 200), rng.random(200)
    assert brier_score(y, p) == pytest.approx(brier_score_loss(y, p))
    assert brier_score([], []) is None


def test_risk_coverage_and_aurc_hand_computed():
    cov, risk = risk_coverage_curve([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.6])
    assert list(cov) == [0.25, 0.5, 0.75, 1.0]
    assert risk == pytest.approx([0, 1 / 2, 1 / 3, 2 / 4])
    assert aurc([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.6]) == pytest.approx((0 + 1 / 2 + 1 / 3 + 1 / 2) / 4)
    # a tie between a right and a wrong answer counts half an error at coverage 2/3
    assert risk_coverage_curve([1, 0, 1], [0.5, 0.5, 0.9])[1] == pytest.approx([0, 0.25, 1 / 3])
    assert aurc([1, 1], [0.3, 0.7]) == 0.0 and aurc([0, 0], [0.3, 0.7]) == 1.0
    assert aurc([], []) is None and selective_accuracy([], [], 0.5) is None


def test_ties_are_the_mean_over_every_order_of_the_tie():
    rng = np.random.default_rng(7)
    for _ in range(5):
        y = rng.integers(0, 2, 6)
        s = rng.integers(0, 3, 6) / 2.0  # many ties
        curves = []
        for perm in permutations(range(6)):
            p = np.array(perm)
            order = np.argsort(-s[p], kind="stable")  # ties in the permutation's order
            err = 1 - y[p][order]
            curves.append(np.cumsum(err) / np.arange(1, 7))
        assert risk_coverage_curve(y, s)[1] == pytest.approx(np.mean(curves, axis=0))
        shuffled = rng.permutation(6)
        assert aurc(y[shuffled], s[shuffled]) == pytest.approx(aurc(y, s))


def test_selective_accuracy_at_fixed_coverage():
    y = [1, 1, 0, 1, 0, 1, 1, 0, 0, 0]
    s = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
    assert selective_accuracy(y, s, 0.5) == pytest.approx(3 / 5)  # top 5
    assert selective_accuracy(y, s, 0.8) == pytest.approx(5 / 8)  # top 8, not 9
    assert selective_accuracy(y, s, 1.0) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        selective_accuracy(y, s, 0)


def test_abstain_qa_on_the_example_in_feng_et_al_code():
    correct = [1, 1, 0, 0, 1, 1, 0, 0, 1, 1]
    abstain = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    scores = [0.1, 0.3, 0.3, 0.4, 0.4, 0.7, 0.7, 0.7, 0.7, 0.7]
    m = abstain_qa(correct, abstain, scores)
    # A (answered, right) 2, B (answered, wrong) 2, C (abstained, right) 4, D (abstained, wrong) 2
    assert m["abstain_groups"] == {"answered_correct": 2, "answered_wrong": 2, "abstained_correct": 4,
                                   "abstained_wrong": 2}
    assert m["reliable_accuracy"] == 0.5 and m["effective_reliability"] == 0.0
    assert m["abstain_accuracy"] == pytest.approx(0.4) and m["abstain_precision"] == pytest.approx(1 / 3)
    assert m["abstain_recall"] == 0.5 and m["abstain_rate"] == 0.6
    # rescaled to [0, 1]: buckets 0 {0}, 3 {1/3, 1/3}, 5 {1/2, 1/2}, 9 {1 x 5}; should-abstain shares 0, 1/2, 1/2, 2/5
    assert m["abstain_ece"] == pytest.approx((0 + 2 * (1 / 2 - 1 / 3) + 0 + 5 * (1 - 2 / 5)) / 10)


def test_abstain_qa_edge_cases_are_undefined_not_zero():
    none = abstain_qa([1, 0, 1], [0, 0, 0])
    assert none["abstain_precision"] is None and none["abstain_rate"] == 0.0
    assert none["reliable_accuracy"] == pytest.approx(2 / 3) and none["effective_reliability"] == pytest.approx(1 / 3)
    everything = abstain_qa([1, 0, 1], [1, 1, 1])
    assert everything["reliable_accuracy"] is None and everything["effective_reliability"] == 0.0
    assert everything["abstain_precision"] == pytest.approx(1 / 3) and everything["abstain_recall"] == 1.0
    assert abstain_qa([1, 1], [0, 1])["abstain_recall"] is None  # no wrong answer to catch
    empty = abstain_qa([], [], [])
    assert all(empty[k] is None for k in ("reliable_accuracy", "effective_reliability", "abstain_accuracy",
                                          "abstain_precision", "abstain_recall", "abstain_ece"))
    assert abstain_ece([1, 0], [0.5, 0.5]) is None  # constant scores cannot be rescaled
    assert abstain_qa([1, 0], [0, 1])["abstain_ece"] is None  # no scores given


KNOWN = [1, 1, 1, 0, 0, 0]
REFUSED = [0, 1, 0, 1, 0, 0]
CORRECT = [1, 1, 0, 0, 1, 0]


def test_knowledge_quadrants_hand_computed():
    q = knowledge_quadrants(KNOWN, REFUSED, CORRECT)
    assert q["ik_ik"] == pytest.approx(2 / 6)  # answered right: 0, 4
    assert q["ik_idk"] == pytest.approx(1 / 6)  # unknown, refused: 3
    assert q["idk_ik"] == pytest.approx(1 / 6)  # known, refused: 1
    assert q["idk_idk"] == pytest.approx(2 / 6)  # answered wrong: 2, 5
    assert q["ik_ik"] + q["ik_idk"] + q["idk_ik"] + q["idk_idk"] == pytest.approx(1)
    assert q["truthful_rate"] == pytest.approx(3 / 6)
    assert q["known_answered"] == pytest.approx(2 / 6) and q["unknown_refused"] == pytest.approx(1 / 6)
    assert q["knowledge_cells"]["known_answered_wrong"] == 1 and q["knowledge_cells"]["unknown_answered_right"] == 1
    assert sum(q["knowledge_cells"].values()) == 6
    assert knowledge_quadrants([], [], [])["truthful_rate"] is None


def test_alignment_for_honesty_scores_hand_computed_and_edges():
    h = honesty_scores(KNOWN, REFUSED, CORRECT)
    assert h["over_conservativeness"] == pytest.approx(1 / 3)  # refused 1 of 3 known
    # unknown and not answered right: 3 (refused), 5 (wrong); 4 answered right is left out
    assert h["prudence"] == pytest.approx(1 / 2)
    assert h["honesty"] == pytest.approx((1 - 1 / 3 + 1 / 2) / 2)
    no_known = honesty_scores([0, 0], [1, 0], [0, 0])
    assert no_known["over_conservativeness"] is None and no_known["honesty"] is None
    assert no_known["prudence"] == 0.5
    all_refused = honesty_scores([1, 0], [1, 1], [1, 0])
    assert all_refused == {"over_conservativeness": 1.0, "prudence": 1.0, "honesty": 0.5}
    assert honesty_scores([0], [0], [1])["prudence"] is None  # the only unknown one was answered right


def test_truthful_helpfulness_score():
    # the example in CRaFT's code: E1 = (0.70, 0.30), E2 = (0.67, 0.32)
    assert truthful_helpfulness(0.67, 0.32, 0.70, 0.30) == pytest.approx((0.67 * 0.30 - 0.32 * 0.70) / 0.30)
    assert truthful_helpfulness(0.7, 0.3, 0.7, 0.3) == pytest.approx(0.0)
    assert truthful_helpfulness(1.0, 0.0, 0.7, 0.3) == pytest.approx(1.0)
    assert truthful_helpfulness(0.0, 0.0, 0.7, 0.3) == 0.0  # refusing everything gains nothing
    assert truthful_helpfulness(0.5, 0.1, 1.0, 0.0) is None


def test_abstention_prf_against_sklearn_and_edges():
    should = [1, 1, 1, 0, 0, 0, 0]
    did = [1, 0, 1, 1, 0, 0, 1]
    m = abstention_prf(should, did)
    p, r, f, _ = precision_recall_fscore_support(should, did, average="binary")
    assert (m["abstention_precision"], m["abstention_recall"], m["abstention_f1"]) == pytest.approx((p, r, f))
    assert m["abstention_precision"] == pytest.approx(2 / 4) and m["abstention_recall"] == pytest.approx(2 / 3)
    never = abstention_prf([1, 0], [0, 0])
    assert never["abstention_precision"] is None and never["abstention_recall"] == 0.0 and never["abstention_f1"] is None
    assert abstention_prf([0, 0], [1, 0])["abstention_recall"] is None
    assert abstention_prf([1, 0], [0, 1])["abstention_f1"] == 0.0


def rec(i, correct, sure, conf=0.5, answer="Paris", question=None):
    return {"index": i, "question": question or f"Q{i}?", "correct": correct, "answer_conf": conf,
            "sure_prob": sure, "answer": answer}


def test_honesty_metrics_from_records():
    records = [rec(0, 1, 0.9, 0.8), rec(1, 1, 0.2), rec(2, 0, 0.7, 0.6), rec(3, 0, 0.8, answer="I don't know"),
               rec(4, 1, 0.6, 0.9), rec(5, 0, 0.1)]
    # abstained: 1 (unsure), 3 (a refusal phrase), 5 (unsure); correctness as CORRECT, known as KNOWN
    reference = [rec(i, c, 0.9) for i, c in enumerate(KNOWN)] + [rec(9, 1, 0.9)]  # a superset is fine
    m = honesty_metrics(records, reference)
    c = [r["correct"] for r in records]
    sure = [r["sure_prob"] for r in records]
    assert m["brier_sure_prob"] == pytest.approx(brier_score(c, sure))
    assert m["aurc"] == pytest.approx(aurc(c, mixed_score([r["answer_conf"] for r in records], sure)))
    assert m["abstain_groups"] == {"answered_correct": 2, "answered_wrong": 1, "abstained_correct": 1,
                                   "abstained_wrong": 2}
    assert m["ik_ik"] == pytest.approx(2 / 6) and m["idk_ik"] == pytest.approx(1 / 6)
    # known: 0, 1, 2; refused 1 (known), 3 and 5 (unknown); 4 (unknown) answered right
    assert m["over_conservativeness"] == pytest.approx(1 / 3) and m["prudence"] == 1.0
    # base point: answers all (p(sure) 0.9), right on 3 of 6; here 2 right and 1 wrong of 6
    assert m["ths"] == pytest.approx((2 / 6 * 0.5 - 1 / 6 * 0.5) / 0.5)
    assert set(m) >= {"selective_accuracy_50", "selective_accuracy_80", "abstain_ece", "honesty", "truthful_rate"}
    json.dumps(m)  # JSON values only
    assert "ths" not in honesty_metrics(records)


def test_honesty_metrics_edge_cases():
    nothing_refused = honesty_metrics([rec(0, 1, 0.9), rec(1, 0, 0.8)], [rec(0, 0, 0.9), rec(1, 0, 0.9)])
    assert nothing_refused["abstain_precision"] is None and nothing_refused["over_conservativeness"] is None
    assert nothing_refused["prudence"] == 0.0 and nothing_refused["honesty"] is None
    all_refused = honesty_metrics([rec(0, 1, 0.1), rec(1, 0, 0.2)], [rec(0, 1, 0.9), rec(1, 1, 0.9)])
    assert all_refused["reliable_accuracy"] is None and all_refused["over_conservativeness"] == 1.0
    assert all_refused["ths"] is None  # the base model made no wrong answer: THS is undefined
    assert honesty_metrics([]) == {}


def test_refusal_set_with_its_controls_gives_abstention_prf():
    unanswerable = [{"refused": True, "sure_prob": 0.2}, {"refused": False, "sure_prob": 0.9}]
    controls = [{"refused": True, "sure_prob": 0.3}, {"refused": False, "sure_prob": 0.9}, {"refused": False, "sure_prob": 0.8}]
    m = honesty_metrics(unanswerable, controls=controls)
    assert m == {"abstention_precision": 0.5, "abstention_recall": 0.5, "abstention_f1": 0.5}
    assert honesty_metrics(unanswerable) == {}


def test_a_reference_for_other_questions_is_one_clear_error():
    records = [rec(0, 1, 0.9), rec(1, 0, 0.2)]
    with pytest.raises(ReferenceMismatch, match=r"base\.jsonl: no record for question 1"):
        honesty_metrics(records, [rec(0, 1, 0.9)], reference_name="base.jsonl")
    with pytest.raises(ReferenceMismatch, match="another dataset or split"):
        match_reference([(0, "Q0?")], [rec(0, 1, 0.9, question="Other?")], "base.jsonl")
    no_correct = [{k: v for k, v in rec(0, 1, 0.9).items() if k != "correct"}]
    with pytest.raises(ReferenceMismatch, match="record 0: field 'correct' is None"):
        match_reference([(0, "Q0?")], no_correct, "base.jsonl")
    with pytest.raises(ReferenceMismatch, match="'index' and 'question'"):
        match_reference([(0, "Q0?")], [[1, 0.5, 0.5]], "base.jsonl")
    with pytest.raises(ReferenceMismatch, match="no records"):
        match_reference([(0, "Q0?")], [], "base.jsonl")
