"""Answer correctness rules."""

from __future__ import annotations

import re
import string

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation})


def normalize(text: str) -> str:
    """Lower case, punctuation and English articles removed, whitespace collapsed."""
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCT))
    return " ".join(text.split())


def substring_match(gold: str, answer: str) -> bool:
    """The original rule: the gold string occurs in the answer, case-sensitive."""
    return gold in answer


def normalized_match(gold: str, answer: str) -> bool:
    """Gold occurs in the answer as whole words after normalisation ("philosophy" != "philosopher")."""
    g, a = normalize(gold), normalize(answer)
    return bool(g) and f" {g} " in f" {a} "


MATCHERS = {"substring": substring_match, "normalized": normalized_match}
