"""The sure/unsure ids are the tokens the tokenizer really produces after "I am"."""

import pytest

from rtuning.scoring import ScoringRules, continuation_token
from rtuning.tasks import SURE_QUESTION

CONTEXT = "Question: Who? Answer: Ann." + SURE_QUESTION + " I am"


def sentencepiece_tokenizer():
    """A SentencePiece-style (Unigram, Metaspace "▁") tokenizer, as LLaMA uses, trained in-process."""
    from tokenizers import SentencePieceUnigramTokenizer
    from transformers import PreTrainedTokenizerFast

    corpus = ["Are you sure you accurately answered the question based on your internal knowledge?",
              "I am sure. I am unsure. Question: Who? Answer: Ann. sure unsure surely"] * 50
    sp = SentencePieceUnigramTokenizer()
    sp.train_from_iterator(corpus, vocab_size=120, special_tokens=["<unk>", "<s>", "</s>"], unk_token="<unk>")
    return PreTrainedTokenizerFast(tokenizer_object=sp, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def check(tok, space_mark):
    sure = continuation_token(tok, CONTEXT, " sure")
    unsure = continuation_token(tok, CONTEXT, " unsure")
    assert sure != unsure
    base = tok(CONTEXT, add_special_tokens=False).input_ids
    assert tok(CONTEXT + " sure", add_special_tokens=False).input_ids[len(base)] == sure
    assert tok(CONTEXT + " unsure", add_special_tokens=False).input_ids[len(base)] == unsure
    piece = tok.convert_ids_to_tokens(sure)
    assert piece.startswith(space_mark), piece


def test_bpe_sure_token_carries_the_leading_space(bpe_tokenizer):
    check(bpe_tokenizer, "Ġ")
    sure = continuation_token(bpe_tokenizer, CONTEXT, " sure")
    assert bpe_tokenizer.convert_ids_to_tokens(sure) == "Ġsure"
    # the original's lookup of the bare word is a different token for BPE
    assert bpe_tokenizer("sure", add_special_tokens=False).input_ids[0] != sure


def test_sentencepiece_sure_token_carries_the_word_boundary():
    tok = sentencepiece_tokenizer()
    check(tok, "▁")


def test_scoring_rules_use_the_in_context_ids(bpe_tokenizer):
    for compat in ("default", "original"):  # the original's ids for them are these on LLaMA too
        rules = ScoringRules.build(bpe_tokenizer, compat)
        assert rules.sure_id == continuation_token(bpe_tokenizer, CONTEXT, " sure")
        assert bpe_tokenizer.decode([rules.unsure_id]) == " unsure"
