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
