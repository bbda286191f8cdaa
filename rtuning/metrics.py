"""Metrics as pure functions over arrays: AP, accuracy, answer rate, calibration, AUROC, entropy."""

from __future__ import annotations

import math
from collections import Counter
from typing import Iterable, Sequence

import numpy as np


def average_precision(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Step-wise average precision (no interpolation), equal to sklearn's average_precision_score.

    Sum over distinct score thresholds (high to low) of (R_n - R_{n-1}) * P_n; tied scores
    form one threshold. NaN when there is no positive label.
    """
    y = np.asarray(labels, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError("labels and scores must be 1-D and of equal length")
    positives = y.sum()
    if y.size == 0 or positives == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    # last index of each run of tied scores
    ends = np.r_[np.nonzero(np.diff(s))[0], y.size - 1]
    tp = np.cumsum(y)[ends]
    precision = tp / (ends + 1)
    recall = tp / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def paired_bootstrap_diff(labels_a: Sequence[int], scores_a: Sequence[float], labels_b: Sequence[int],
                          scores_b: Sequence[float], metric=None, resamples: int = 1000, seed: int = 0,
                          level: float = 0.95) -> dict:
    """metric(a) - metric(b) on the same questions, with a paired bootstrap confidence interval.

    Both systems answered the same questions in the same order; each resample draws questions
    with replacement and scores both systems on that draw (AP by default). Returns the
    difference on the full set, the interval's bounds and the share of resamples where a wins.
    """
    metric = metric or average_precision
    ya, sa = np.asarray(labels_a, dtype=np.float64), np.asarray(scores_a, dtype=np.float64)
    yb, sb = np.asarray(labels_b, dtype=np.float64), np.asarray(scores_b, dtype=np.float64)
    if not (ya.shape == sa.shape == yb.shape == sb.shape) or ya.ndim != 1:
        raise ValueError("paired bootstrap needs four 1-D arrays over the same questions")
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(resamples):
        i = rng.integers(0, ya.size, ya.size)
        d = metric(ya[i], sa[i]) - metric(yb[i], sb[i])
        if not math.isnan(d):
            diffs.append(d)
    d = np.array(diffs)
    tail = (1 - level) / 2
    return {"diff": metric(ya, sa) - metric(yb, sb),
            "low": float(np.quantile(d, tail)) if d.size else float("nan"),
            "high": float(np.quantile(d, 1 - tail)) if d.size else float("nan"),
            "share_a_better": float((d > 0).mean()) if d.size else float("nan"), "resamples": int(d.size)}


def bootstrap_rate_diff(a: Sequence[int], b: Sequence[int], resamples: int = 1000, seed: int = 0,
                        level: float = 0.95) -> dict:
    """mean(a) - mean(b) for two independent samples of 0/1 outcomes (different questions, e.g.
    refusals on unanswerable questions and on their answerable controls), with a bootstrap
    interval that resamples each sample on its own. Same keys as paired_bootstrap_diff."""
    xa, xb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if xa.ndim != 1 or xb.ndim != 1 or not xa.size or not xb.size:
        raise ValueError("bootstrap_rate_diff needs two non-empty 1-D arrays")
    rng = np.random.default_rng(seed)
    d = (xa[rng.integers(0, xa.size, (resamples, xa.size))].mean(axis=1)
         - xb[rng.integers(0, xb.size, (resamples, xb.size))].mean(axis=1))
    tail = (1 - level) / 2
    return {"diff": float(xa.mean() - xb.mean()), "low": float(np.quantile(d, tail)),
            "high": float(np.quantile(d, 1 - tail)), "share_a_better": float((d > 0).mean()),
            "resamples": resamples}


def mixed_score(answer_conf: Sequence[float], sure_prob: Sequence[float], weight: float = 0.5) -> np.ndarray:
    """The paper's ranking score: weight * answer confidence + (1 - weight) * sure-probability."""
    return weight * np.asarray(answer_conf, dtype=np.float64) + (1 - weight) * np.asarray(sure_prob, dtype=np.float64)


def nan_to_none(x: float) -> float | None:
    """None for an undefined metric (NaN): JSON has no NaN, and tables show None as "-"."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def summarize(correct: Sequence[int], answer_conf: Sequence[float], sure_prob: Sequence[float],
              threshold: float = 0.5) -> dict:
    """The evaluation summary: accuracy, the three APs, answer rate and accuracy when answering."""
    c = np.asarray(correct, dtype=np.float64)
    conf = np.asarray(answer_conf, dtype=np.float64)
    sure = np.asarray(sure_prob, dtype=np.float64)
    n = int(c.size)
    answered = sure > threshold
    out = {
        "n": n,
        "accuracy": float(c.mean()) if n else float("nan"),
        "ap": average_precision(c, mixed_score(conf, sure)),
        "ap_answer_conf": average_precision(c, conf),
        "ap_sure_prob": average_precision(c, sure),
        "answer_rate": float(answered.mean()) if n else float("nan"),
        "accuracy_answered": float(c[answered].mean()) if answered.any() else float("nan"),
        "mean_answer_conf": float(conf.mean()) if n else float("nan"),
        "mean_sure_prob": float(sure.mean()) if n else float("nan"),
    }
    return {k: nan_to_none(v) for k, v in out.items()}


def expected_calibration_error(labels: Sequence[int], probs: Sequence[float], bins: int = 15) -> float | None:
    """ECE with equal-width bins over [0, 1]: sum over bins of |accuracy - mean confidence| x share."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    if y.size == 0:
        return None
    which = np.minimum((p * bins).astype(int), bins - 1)  # p == 1.0 falls in the last bin
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.mean() * abs(y[inside].mean() - p[inside].mean())
    return float(total)


def auroc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    """Area under the ROC curve: the chance that a random positive outscores a random negative
    (ties count one half), from average ranks. None when either class is missing.

    Beside ECE it tells discrimination from calibration: a score equal to the base rate
    everywhere has a small ECE and an AUROC of 0.5.
    """
    y = np.asarray(labels, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError("labels and scores must be 1-D and of equal length")
    positives = int(y.sum())
    negatives = int(y.size - positives)
    if positives == 0 or negatives == 0:
        return None
    # rank of each distinct score (1-based, ascending); tied scores share the mean of their ranks
    _, which, counts = np.unique(s, return_inverse=True, return_counts=True)
    before = np.cumsum(counts) - counts
    ranks = (before + (counts + 1) / 2)[which]
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def answer_entropy(answers: Iterable[str]) -> float:
    """Entropy (nats) of the empirical distribution of sampled answers."""
    counts = Counter(answers)
    total = sum(counts.values())
    if not total:
        return 0.0
    return float(-sum((c / total) * math.log(c / total) for c in counts.values()))


def format_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """A plain-text table; columns are (key, header, format) with format like '.4f' or 'd'."""
    def cell(row, key, fmt):
        v = row.get(key)
        if v is None:
            return "-"
        if fmt.endswith("%"):
            return f"{100 * v:{fmt[:-1]}f}"
        return f"{v:{fmt}}" if fmt else str(v)

    header = [h for _, h, _ in columns]
    body = [[cell(r, k, f) for k, _, f in columns] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *body)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(x.rjust(w) for x, w in zip(r, widths)) for r in body]
    return "\n".join(lines)
