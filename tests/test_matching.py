from rtuning.matching import normalize, normalized_match, substring_match


def test_substring_is_the_original_case_sensitive_rule():
    assert substring_match("Paris", "Paris, France")
    assert not substring_match("paris", "Paris")
    assert substring_match("philosoph", "philosopher")


def test_normalized_ignores_case_punctuation_and_articles_but_needs_whole_words():
    assert normalize("The  U.S. Army!") == "u s army"
    assert normalized_match("paris", "PARIS.")
    assert normalized_match("The Beatles", "beatles")
    assert not normalized_match("philosophy", "philosopher")
    assert not normalized_match("", "anything")
