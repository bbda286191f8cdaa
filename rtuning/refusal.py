"""Recognising a refusal in a generated answer (the unanswerable-set evaluations)."""

from __future__ import annotations

from .matching import normalize
from .tasks import REFUSAL_PHRASES

# Close variants a model trained on the 16 phrases (or an instruct model) produces; all are
# compared after normalisation, as whole words.
_VARIANTS = (
    "i don t know", "i dont know", "i do not know", "i am not sure", "i m not sure", "not sure",
    "i am unsure", "i m unsure", "answer is not known", "it is unknown", "is unknown", "unanswerable",
    "cannot be answered", "can not be answered", "cannot answer", "can t answer", "impossible to say",
    "no one knows", "nobody knows", "not possible to answer", "no answer", "i have no idea",
)
REFUSAL_PATTERNS = tuple(dict.fromkeys([normalize(p) for p in REFUSAL_PHRASES] + [normalize(v) for v in _VARIANTS]))


def refusal_phrase(answer: str) -> str | None:
    """The refusal pattern the answer contains (normalised, whole words), or None."""
    text = f" {normalize(answer)} "
    for pattern in REFUSAL_PATTERNS:
        if f" {pattern} " in text:
            return pattern
    return None


def is_refusal(answer: str, sure_prob: float | None = None, threshold: float = 0.5) -> tuple[bool, str]:
    """Refused when the model is unsure (sure-probability below threshold) or answers with a refusal.

    Returns (refused, reason) with reason "unsure", "phrase", "both" or "".
    """
    unsure = sure_prob is not None and sure_prob < threshold
    phrase = refusal_phrase(answer) is not None
    reason = "both" if unsure and phrase else "unsure" if unsure else "phrase" if phrase else ""
    return bool(reason), reason


def refusal_summary(records: list[dict], answerable: bool) -> dict:
    """Refusal rate (over-refusal on answerable controls) and how refusals were recognised."""
    n = len(records)
    refused = sum(r["refused"] for r in records)
    by = {k: sum(r["refused_by"] in (k, "both") for r in records) for k in ("unsure", "phrase")}
    rate = refused / n if n else None
    return {
        "n": n,
        "refusal_rate": rate,
        "over_refusal_rate": rate if answerable else None,
        "refused_by_unsure": by["unsure"] / n if n else None,
        "refused_by_phrase": by["phrase"] / n if n else None,
        "mean_sure_prob": sum(r["sure_prob"] for r in records) / n if n else None,
    }
