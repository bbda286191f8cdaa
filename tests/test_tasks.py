import json

import pytest

from rtuning.tasks import PARAREL, DataError, Shots


def test_pararel_prompt_and_solved_text(data_dir):
    ex = PARAREL.load(data_dir, "train")[0]
    assert ex.prompt == "Question: What field does Alan Turing work in? Answer:"
    assert ex.gold == "logic"
    assert PARAREL.solved(ex) == "Question: What field does Alan Turing work in? Answer: logic."


def test_split_sizes_match_the_release(data_dir):
    assert len(PARAREL.load(data_dir, "train")) == 5575
    assert len(PARAREL.load(data_dir, "ID")) == 5584


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(DataError, match=r"(?s)pararel/training_data.json.*--data_dir"):
        PARAREL.load(tmp_path, "train")


@pytest.mark.parametrize("record, field", [
    (["What?", "", "P1"], "answer"),
    (["", "x", "P1"], "question"),
    (["What?"], "answer"),
    (["What?", 3, "P1"], "answer"),
])
def test_malformed_record_names_file_index_and_field(tmp_path, record, field):
    (tmp_path / "pararel").mkdir()
    f = tmp_path / "pararel" / "training_data.json"
    f.write_text(json.dumps([["Fine?", "yes", "P1"], record]))
    with pytest.raises(DataError) as err:
        PARAREL.load(tmp_path, "train")
    msg = str(err.value)
    assert str(f) in msg and "record 1" in msg and field in msg


def test_shots_never_include_the_question_and_are_fixed_by_seed(data_dir):
    pool = PARAREL.load(data_dir, "train")[:50]
    shots = Shots(PARAREL, pool, 2, seed=7)
    again = Shots(PARAREL, pool, 2, seed=7)
    assert [s.index for s in shots.pool] == [s.index for s in again.pool]
    for ex in shots.pool:  # a shot's own question gets the spare instead
        prefix = shots.prefix(ex)
        assert ex.question not in prefix
        assert prefix.count("Answer:") == 2
    other = pool[0] if pool[0] not in shots.pool else pool[1]
    assert shots.prompt(other).endswith(other.prompt)
    assert Shots(PARAREL, pool, 0, seed=7).prompt(other) == other.prompt
