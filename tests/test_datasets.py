"""Every dataset declaration: prompts byte for byte as SPEC.md, gold labels, errors, kinds."""

import json

import pytest

from rtuning.pipeline import TaskRunner
from rtuning.refusal import is_refusal, refusal_phrase
from rtuning.tasks import FEVER, HALUEVAL, HOTPOTQA, MMLU, NEC, SELFAWARE, TASKS, WICE, DataError, Example, Shots
from rtuning.tasks import FALSEQA, REFUSAL_PHRASES, mmlu_training_task


def test_mmlu_prompt_and_gold_letter(data_dir):
    ex = MMLU.load(data_dir, "train")[0]
    shots = json.loads((data_dir / "MMLU" / "MMLU_ID_prompt.json").read_text())["abstract_algebra"]
    record = json.loads((data_dir / "MMLU" / "MMLU_ID_train.json").read_text())["abstract_algebra"][0]

    def block(r):
        return f"{r[0]}\nA. {r[1]}\nB. {r[2]}\nC. {r[3]}\nD. {r[4]}\nAnswer:"

    # two spaces after "about", as the original's subject formatter writes it
    expected = ("The following are multiple choice questions (with answers) about  abstract algebra.\n\n"
                + "".join(block(s) + s[5] + "\n\n" for s in shots) + block(record))
    assert ex.prompt == expected
    assert ex.gold == record[5] == "D"  # the letter, not an option's text (the original's bug)
    assert ex.meta["subject"] == "abstract_algebra"
    assert MMLU.solved(ex).endswith("\nAnswer:D.")


def test_mmlu_sizes_and_prompt_domain(data_dir):
    assert len(MMLU.load(data_dir, "train")) == 2448
    assert len(MMLU.load(data_dir, "ID")) == 2439
    ood_shots = mmlu_training_task("MMLU_ID_train", "OOD")
    with pytest.raises(DataError, match="MMLU_OOD_prompt.json: no shots for subject 'abstract_algebra'"):
        ood_shots.load(data_dir, "train")


def test_fever_prompt(data_dir):
    rec = json.loads((data_dir / "FEVER" / "fever_10k.json").read_text())[0]
    ex = FEVER.load(data_dir, "train")[0]
    assert ex.prompt == (f"Evidence:{' '.join(rec['evidence'])}\nClaim:{rec['claim']}\n"
                         "Question:Does the evidence support the claim?\n"
                         "A: SUPPORTS.\nB: REFUTES.\nC: NOT ENOUGH INFO.\nAnswer:")
    assert ex.gold == {"SUPPORTS": "A", "REFUTES": "B", "NOT ENOUGH INFO": "C"}[rec["label"]]
    assert ex.prompt[: ex.context_end] == f"Evidence:{' '.join(rec['evidence'])}"


def test_wice_prompt(data_dir):
    rec = json.loads((data_dir / "WiCE" / "wice_train.json").read_text())[0]
    ex = WICE.load(data_dir, "train")[0]
    assert ex.prompt == (f"Evidence:{' '.join(rec['evidence'])}\nClaim:{rec['claim']}\n"
                         "Question:Does the evidence support the claim?\n"
                         "A:supported.\nB:partially_supported.\nC:not_supported.\nAnswer:")
    assert ex.gold == {"supported": "A", "partially_supported": "B", "not_supported": "C"}[rec["label"]]


def test_hotpotqa_prompt():
    rec = {"question": "Q?", "answer": "yes", "context": [["T1", ["a.", " b."]], ["T2", ["c."]]]}
    ex = HOTPOTQA.parse(rec, 0, "f")
    assert ex.prompt == "T1:a.  b.\n T2:c.\n\nQuestion: Q?\nAnswer:"
    assert ex.gold == "yes" and ex.prompt[: ex.context_end] == "T1:a.  b.\n T2:c.\n"


def test_halueval_prompt(data_dir):
    rec = json.loads((data_dir / "HaluEvalQA" / "HaluEvalQA.json").read_text())[0]
    ex = HALUEVAL.load(data_dir, "OOD")[0]
    assert ex.prompt == f"Knowledge: {rec['knowledge']}\nQuestion: {rec['question']}\nAnswer:"
    assert ex.gold == rec["right_answer"]


def test_unanswerable_sets(data_dir):
    assert len(SELFAWARE.load(data_dir, "unanswerable")) == 1032
    assert len(SELFAWARE.load(data_dir, "answerable")) == 2337
    first = FALSEQA.load(data_dir, "unanswerable")[0]
    assert first.prompt == "Question: List the reason why mice can catch cats? Answer:"
    assert NEC.load(data_dir, "unanswerable")[0].meta["category"] == "animals"


@pytest.mark.parametrize("task, record, field", [
    (FEVER, {"claim": "c", "evidence": ["e"], "label": "MAYBE"}, "label"),
    (FEVER, {"claim": "c", "evidence": "e", "label": "SUPPORTS"}, "evidence"),
    (WICE, {"evidence": ["e"], "label": "supported"}, "claim"),
    (HOTPOTQA, {"question": "q", "answer": "a", "context": [["t"]]}, "context"),
    (HALUEVAL, {"knowledge": "k", "question": "q"}, "right_answer"),
    (NEC, {"label": 1}, "prompt"),
])
def test_malformed_records_name_file_index_field(task, record, field):
    with pytest.raises(DataError) as err:
        task.parse(record, 7, "data.json")
    assert "data.json" in str(err.value) and "record 7" in str(err.value) and field in str(err.value)


def test_every_task_declares_kind_and_domains():
    for name, task in TASKS.items():
        assert task.kind in ("qa", "choice", "refusal"), name
        assert task.domains, name
        if task.kind == "choice":
            assert task.choices, name


# --- with a model -----------------------------------------------------------------------


def test_letter_scoring_through_the_task_runner(tiny_engine, tiny_backend, data_dir):
    from test_engine import forced_logits

    runner = TaskRunner(tiny_backend, FEVER, Shots(FEVER, [], 0, 0))
    prompts = [ex.prompt for ex in FEVER.load(data_dir, "ID")[:2]]
    with forced_logits(tiny_engine, [[runner.letter_ids[2], runner.letter_ids[0]]]):
        scored, _ = runner.answer(prompts, 1)
    assert [s.text for s in scored] == ["C", "A"]
    assert scored[0].confidence == pytest.approx(scored[0].option_probs[2]) and scored[0].confidence > 0.99
    # " C" after "Answer:" is the token that really follows, as in "Answer: C"
    assert tiny_engine.tokenizer.decode([runner.letter_ids[2]]) == " C"
    mmlu_runner = TaskRunner(tiny_backend, MMLU, Shots(MMLU, [], 0, 0))
    assert tiny_engine.tokenizer.decode([mmlu_runner.letter_ids[1]]) == "B"  # "Answer:B" in MMLU's shots


def test_long_context_is_cut_from_the_left_and_the_question_kept(tiny_engine, tiny_backend):
    context = "Paragraph: " + " ".join(f"word{i}" for i in range(400))
    prompt = f"{context}\nQuestion: Who wins?\nAnswer:"
    ex = Example(3, "Who wins?", prompt, "x", context_end=len(context))
    runner = TaskRunner(tiny_backend, HOTPOTQA, Shots(HOTPOTQA, [], 0, 0), max_prompt_tokens=64)
    cut = runner.prompt(ex)
    assert len(tiny_engine.encode([cut])[0]) <= 64
    assert cut.endswith("word399\nQuestion: Who wins?\nAnswer:")
    assert runner.truncated[3] > 300
    short = Example(4, "q", "Question: q\nAnswer:", "x", context_end=0)
    assert runner.prompt(short) == short.prompt and 4 not in runner.truncated
    tiny = TaskRunner(tiny_backend, HOTPOTQA, Shots(HOTPOTQA, [], 0, 0), max_prompt_tokens=3)
    with pytest.raises(DataError, match="question part alone"):
        tiny.prompt(ex)


# --- refusal detection ------------------------------------------------------------------


@pytest.mark.parametrize("answer", list(REFUSAL_PHRASES) + [
    "the answer is unknown", "I don't know", "Honestly, I do not know the answer", "I'm not sure",
    "It is impossible to know", "THERE IS NO RIGHT ANSWER!", "No one knows",
])
def test_refusal_phrases_and_variants_are_recognised(answer):
    assert refusal_phrase(answer) is not None


@pytest.mark.parametrize("answer", ["Paris", "known for his work", "the unknown soldier's tomb is in Arlington",
                                    "sure", "Nobody", ""])
def test_ordinary_answers_are_not_refusals(answer):
    assert refusal_phrase(answer) is None


def test_refused_when_unsure_or_by_phrase():
    assert is_refusal("Paris", 0.2) == (True, "unsure")
    assert is_refusal("I do not know the answer", 0.9) == (True, "phrase")
    assert is_refusal("The answer is unknown", 0.1) == (True, "both")
    assert is_refusal("Paris", 0.9) == (False, "")


# --- foreign and damaged files: one clear DataError each (file, record, field, the fix) ---


def write_data(tmp_path, task, split, content) -> str:
    path = task.path(tmp_path, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return str(path)


def load_error(tmp_path, task, split, content) -> tuple[str, str]:
    file = write_data(tmp_path, task, split, content)
    with pytest.raises(DataError) as err:
        task.load(tmp_path, split)
    return str(err.value), file


def hotpot(**context) -> dict:
    return {"question": "Q?", "answer": "a", **context}


@pytest.mark.parametrize("context, words, converts", [
    ([["Film", "The film was made in 1999."]], ["paragraph 0 ('Film')", "got one string", "one text"], True),
    ([{"title": "Film", "sentences": ["The film."]}], ["paragraph 0", "{title, sentences} objects"], True),
    ({"title": ["Film"], "sentences": [["The film."]]}, ["got an object", "Hugging Face hotpot_qa"], True),
    ("The film was made.", ["list of [title, [sentence, ...]] pairs, got str"], False),
    ([["Film", ["ok.", 3]]], ["paragraph 0 ('Film')", "list of sentences"], False),
])
def test_hotpot_context_in_other_layouts_is_refused(tmp_path, context, words, converts):
    msg, file = load_error(tmp_path, HOTPOTQA, "ID", [hotpot(context=[["T", ["s."]]]), hotpot(context=context)])
    assert msg.startswith(f"{file}: record 1: field 'context'")
    assert all(w in msg for w in words), msg
    # the layouts prepare.py converts name its command, with the file (the test split's is --dev)
    assert (f"python dataset/prepare.py hotpotqa --dev {file}" in msg) == converts


def test_hotpot_without_any_context_is_refused_and_a_few_are_named(tmp_path, capsys):
    msg, file = load_error(tmp_path, HOTPOTQA, "train", [hotpot(context=[]), hotpot(context=[])])
    assert msg.startswith(f"{file}: record 0: field 'context' is empty") and "every other record" in msg
    write_data(tmp_path, HOTPOTQA, "train", [hotpot(context=[["T", ["s."]]]), hotpot(context=[])])
    assert len(HOTPOTQA.load(tmp_path, "train")) == 2
    assert "1 of 2 records have an empty 'context' (records 1)" in capsys.readouterr().err


@pytest.mark.parametrize("content, words", [
    (b"", ["the file is empty (0 bytes)"]),
    (b"  \n\n", ["the file is empty (4 bytes, whitespace only)"]),
    (b"[]", ["no records (an empty list)", "[question, answer, relation]"]),
    ('[["Caf\u00e9?", "Paris", "P1"]]'.encode("latin-1"), ["not UTF-8 (line 1", "0xe9", "iconv -f LATIN1"]),
    ('[["Q?", "A", "P1"]]'.encode("utf-16"), ["UTF-16", "byte-order mark", "iconv -f UTF-16 -t UTF-8"]),
    (b'"just a string"', ["expected a list of records, got str"]),
])
def test_damaged_files_are_refused_with_one_line(tmp_path, content, words):
    from rtuning.tasks import PARAREL

    msg, file = load_error(tmp_path, PARAREL, "ID", content)
    assert msg.startswith(file) and "\n" not in msg
    assert all(w in msg for w in words), msg


def test_utf8_bom_and_one_line_json_lines(tmp_path):
    from rtuning.tasks import PARAREL

    write_data(tmp_path, PARAREL, "ID", b"\xef\xbb\xbf" + json.dumps([["Q?", "A", "P1"]]).encode())
    assert [ex.question for ex in PARAREL.load(tmp_path, "ID")] == ["Q?"]
    # a JSON-lines file with one line is a single JSON object: one record, not "got dict"
    write_data(tmp_path, NEC, "unanswerable", json.dumps({"prompt": "What is a glorbix?", "label": 1}) + "\n")
    assert [ex.question for ex in NEC.load(tmp_path, "unanswerable")] == ["What is a glorbix?"]
    write_data(tmp_path, HALUEVAL, "OOD", json.dumps({"knowledge": "k", "question": "q", "right_answer": "a"}))
    assert len(HALUEVAL.load(tmp_path, "OOD")) == 1


@pytest.mark.parametrize("task, record, words", [
    (FEVER, {"claim": "c", "evidence": "The film was made.", "label": "SUPPORTS"},
     ["field 'evidence' should be a list of strings, got one string"]),
    (FEVER, {"claim": "c", "evidence": [[[1, 2, "Page", 0]]], "label": "SUPPORTS"},
     ["field 'evidence': item 0 should be a string", "FEVER 1.0's own layout", "python dataset/prepare.py fever"]),
    (WICE, {"claim": "c", "evidence": ["e", {"text": "x"}], "label": "supported"}, ["'evidence': item 1"]),
    (WICE, {"claim": "  ", "evidence": ["e"], "label": "supported"}, ["field 'claim' is empty"]),
    (HALUEVAL, {"ID": 1, "user_query": "hi", "chatgpt_response": "hello"},
     ["HaluEval's general set", "python dataset/prepare.py halueval"]),
    (NEC, {"prompt": "", "label": 1}, ["field 'prompt' is empty"]),
])
def test_claim_and_prompt_records_check_their_field_types(tmp_path, task, record, words):
    split = task.domains[0]
    msg, file = load_error(tmp_path, task, split, [record])
    assert msg.startswith(f"{file}: record 0: ")
    assert all(w in msg for w in words), msg


def write_mmlu(tmp_path, records, shots=None) -> str:
    """An MMLU ID test file with its prompt (shots) file; returns the test file's path."""
    shots = shots if shots is not None else {"anatomy": [["S?", "a", "b", "c", "d", "A"]]}
    (tmp_path / "MMLU").mkdir(exist_ok=True)
    (tmp_path / "MMLU" / "MMLU_ID_prompt.json").write_text(json.dumps(shots))
    return write_data(tmp_path, MMLU, "ID", {"anatomy": records})


@pytest.mark.parametrize("record, field", [
    (["", "a", "b", "c", "d", "A"], "'question' is empty"),
    (["Q?", "a", " ", "c", "d", "A"], "'B' is empty"),
    (["Q?", "a", "b", ["c"], "d", "A"], "'C' should be a string, got list"),
    (["Q?", "a", "b", "c", "A"], "got a list of 5"),
])
def test_mmlu_refuses_empty_questions_and_options(tmp_path, record, field):
    file = write_mmlu(tmp_path, [["Q1?", "a", "b", "c", "d", "B"], record])
    with pytest.raises(DataError) as err:
        MMLU.load(tmp_path, "ID")
    assert f"{file} (subject anatomy, item 1): record 1: " in str(err.value) and field in str(err.value)


def test_mmlu_refuses_other_layouts_and_empty_files(tmp_path):
    file = write_mmlu(tmp_path, [])
    with pytest.raises(DataError, match="no records .every subject's list is empty"):
        MMLU.load(tmp_path, "ID")
    write_mmlu(tmp_path, [["Q?", "a", "b", "c", "d", "A"]], shots={"anatomy": []})
    with pytest.raises(DataError, match="MMLU_ID_prompt.json: subject 'anatomy': expected a non-empty list"):
        MMLU.load(tmp_path, "ID")
    write_mmlu(tmp_path, [])
    write_data(tmp_path, MMLU, "ID", [{"question": "Q?", "subject": "anatomy", "choices": ["a"] * 4, "answer": 0}])
    with pytest.raises(DataError) as err:
        MMLU.load(tmp_path, "ID")
    assert str(err.value).startswith(f"{file}: expected an object mapping subject") and "prepare.py mmlu" in str(err.value)
    write_data(tmp_path, MMLU, "ID", {"anatomy": [{"question": "Q?", "choices": ["a"] * 4, "answer": 0}]})
    with pytest.raises(DataError, match="record 0: .*cais/mmlu layout.*prepare.py mmlu"):
        MMLU.load(tmp_path, "ID")


def test_selfaware_needs_its_example_list(tmp_path):
    msg, file = load_error(tmp_path, SELFAWARE, "answerable", [{"question": "q", "answerable": True}])
    assert msg.startswith(f"{file}: expected an object with a list of records under 'example', got list")
    msg, _ = load_error(tmp_path, SELFAWARE, "answerable", {"example": []})
    assert "no records (an empty list)" in msg
    msg, _ = load_error(tmp_path, SELFAWARE, "answerable", {"example": [{"question": "q", "answerable": False}]})
    assert "none of its 1 records belongs to the 'answerable' split" in msg
