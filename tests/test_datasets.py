"""Every dataset declaration: prompts byte for byte as SPEC.md, gold labels, errors, kinds."""

import json

import pytest

from rtuning.engine import Engine
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


def test_letter_scoring_through_the_task_runner(tiny_engine, data_dir):
    from test_engine import forced_logits

    runner = TaskRunner(tiny_engine, FEVER, Shots(FEVER, [], 0, 0))
    prompts = [ex.prompt for ex in FEVER.load(data_dir, "ID")[:2]]
    with forced_logits(tiny_engine, [[runner.letter_ids[2], runner.letter_ids[0]]]):
        scored = runner.answer(prompts, 1)
    assert [s.text for s in scored] == ["C", "A"]
    assert scored[0].confidence == pytest.approx(scored[0].option_probs[2]) and scored[0].confidence > 0.99
    # " C" after "Answer:" is the token that really follows, as in "Answer: C"
    assert tiny_engine.tokenizer.decode([runner.letter_ids[2]]) == " C"
    mmlu_runner = TaskRunner(tiny_engine, MMLU, Shots(MMLU, [], 0, 0))
    assert tiny_engine.tokenizer.decode([mmlu_runner.letter_ids[1]]) == "B"  # "Answer:B" in MMLU's shots


def test_long_context_is_cut_from_the_left_and_the_question_kept(tiny_engine):
    context = "Paragraph: " + " ".join(f"word{i}" for i in range(400))
    prompt = f"{context}\nQuestion: Who wins?\nAnswer:"
    ex = Example(3, "Who wins?", prompt, "x", context_end=len(context))
    runner = TaskRunner(tiny_engine, HOTPOTQA, Shots(HOTPOTQA, [], 0, 0), max_prompt_tokens=64)
    cut = runner.prompt(ex)
    assert len(tiny_engine.encode([cut])[0]) <= 64
    assert cut.endswith("word399\nQuestion: Who wins?\nAnswer:")
    assert runner.truncated[3] > 300
    short = Example(4, "q", "Question: q\nAnswer:", "x", context_end=0)
    assert runner.prompt(short) == short.prompt and 4 not in runner.truncated
    tiny = TaskRunner(tiny_engine, HOTPOTQA, Shots(HOTPOTQA, [], 0, 0), max_prompt_tokens=3)
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
