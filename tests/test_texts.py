"""Every text the project writes, byte for byte against the original's (SPEC.md §2 and §6, and
the original scripts they were read from): probe prompt, evaluation prompt, sure prompt and the
training text of each method, for each dataset. The expected strings are written out by hand;
the records are small ones written here and read through the tasks' own loaders."""

import json

import pytest

from rtuning import methods
from rtuning.cli import evaluate_main, probe_main
from rtuning.scoring import sure_prompt
from rtuning.pipeline import TaskRunner, training_texts
from rtuning.tasks import (FALSEQA, FEVER, HALUEVAL, HOTPOTQA, MMLU, NEC, PARAREL, SELFAWARE, WICE, DataError,
                           Shots)

SURE_Q = " Are you sure you accurately answered the question based on your internal knowledge?"

PARAREL_RECORDS = [["Which country is Rubens Barrichello a citizen of?", "Brazil", "P27"],
                   ["What field does Alan Turing work in?", "logic", "P101"]]
MMLU_RECORD = ["What carries oxygen in the blood?", "Hemoglobin", "Insulin", "Keratin", "Collagen", "A"]
MMLU_SHOTS = [["Which organelle makes most ATP?", "Nucleus", "Mitochondrion", "Ribosome", "Golgi body", "B"],
              ["What do xylem vessels carry?", "Sugar", "Light", "Water", "Pollen", "C"]]
WICE_RECORD = {"claim": "The bridge opened in 1932.", "label": "partially_supported", "supporting_sentences": [],
               "evidence": ["The bridge was built in 1930.", "It opened two years later."]}
FEVER_RECORD = {"claim": "Paris is in Italy.", "evidence": ["Paris is the capital of France."], "label": "REFUTES"}
HOTPOT_RECORD = {"question": "Which city hosts the Louvre?", "answer": "Paris", "type": "bridge",
                 "context": [["Louvre", ["The Louvre is a museum.", " It is in Paris."]],
                             ["Paris", ["Paris is in France."]]]}
HALUEVAL_RECORD = {"knowledge": "The Louvre is in Paris.", "question": "Where is the Louvre?",
                   "right_answer": "Paris", "hallucinated_answer": "Rome"}


@pytest.fixture()
def data(tmp_path):
    """A data folder with one small file per dataset, laid out as R-Tuning-data."""
    files = {
        "pararel/training_data.json": PARAREL_RECORDS, "pararel/ID_test_pararel.json": PARAREL_RECORDS,
        "MMLU/MMLU_ID_train.json": {"high_school_biology": [MMLU_RECORD]},
        "MMLU/MMLU_ID_test.json": {"high_school_biology": [MMLU_RECORD]},
        "MMLU/MMLU_ID_prompt.json": {"high_school_biology": MMLU_SHOTS},
        "WiCE/wice_train.json": [WICE_RECORD], "WiCE/wice_test.json": [WICE_RECORD],
        "FEVER/fever_10k.json": [FEVER_RECORD], "FEVER/fever_10k_test.json": [FEVER_RECORD],
        "HotpotQA/hotpot_10k.json": [HOTPOT_RECORD], "HotpotQA/hotpot_test.json": [HOTPOT_RECORD],
        "HaluEvalQA/HaluEvalQA.json": [HALUEVAL_RECORD],
        "SelfAware/SelfAware.json": {"example": [{"question": "What is the color of a thought?",
                                                  "answerable": False}]},
        "FalseQA/FalseQA_unanswerable.json": [{"prompt": "Why do fish breathe fire?", "label": 1}],
        "NEC/NEC_unanswerable.json": [{"prompt": "Who won the 1995 Grand Prix of Atlantis?", "label": 1}],
    }
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(json.dumps(content))
    return tmp_path


PARAREL_Q = "Question: Which country is Rubens Barrichello a citizen of? Answer:"
MMLU_Q = ("The following are multiple choice questions (with answers) about  high school biology.\n\n"
          "Which organelle makes most ATP?\nA. Nucleus\nB. Mitochondrion\nC. Ribosome\nD. Golgi body\nAnswer:B\n\n"
          "What do xylem vessels carry?\nA. Sugar\nB. Light\nC. Water\nD. Pollen\nAnswer:C\n\n"
          "What carries oxygen in the blood?\nA. Hemoglobin\nB. Insulin\nC. Keratin\nD. Collagen\nAnswer:")
WICE_Q = ("Evidence:The bridge was built in 1930. It opened two years later.\nClaim:The bridge opened in 1932.\n"
          "Question:Does the evidence support the claim?\n"
          "A:supported.\nB:partially_supported.\nC:not_supported.\nAnswer:")
FEVER_Q = ("Evidence:Paris is the capital of France.\nClaim:Paris is in Italy.\n"
           "Question:Does the evidence support the claim?\nA: SUPPORTS.\nB: REFUTES.\nC: NOT ENOUGH INFO.\nAnswer:")
HOTPOT_Q = ("Louvre:The Louvre is a museum.  It is in Paris.\n Paris:Paris is in France.\n"
            "\nQuestion: Which city hosts the Louvre?\nAnswer:")

# dataset -> (task, evaluation prompt, gold, training texts: method -> (certain, uncertain))
# The training texts, from the original's training scripts: ParaRel, FEVER and HotpotQA put a
# space after "Answer:", MMLU and WiCE none, for the answer and R-Tuning-R's refusal alike.
# R-Tuning-U's texts are R-Tuning's (only the split differs). The original has no `vanilla`
# method: its texts are the gold answer of every question, as the paper's baseline.
CASES = {
    "pararel": (PARAREL, PARAREL_Q, "Brazil", {
        "vanilla": (PARAREL_Q + " Brazil.", PARAREL_Q + " Brazil."),
        "unsure": (PARAREL_Q + " Brazil." + SURE_Q + " I am sure.", PARAREL_Q + " Brazil." + SURE_Q + " I am unsure."),
        "unknown": (PARAREL_Q + " Brazil.", PARAREL_Q + " The answer is unknown."),
    }),
    "mmlu": (MMLU, MMLU_Q, "A", {
        "vanilla": (MMLU_Q + "A.", MMLU_Q + "A."),
        "unsure": (MMLU_Q + "A." + SURE_Q + " I am sure.", MMLU_Q + "A." + SURE_Q + " I am unsure."),
        "unknown": (MMLU_Q + "A.", MMLU_Q + "The answer is unknown."),
    }),
    "wice": (WICE, WICE_Q, "B", {
        "vanilla": (WICE_Q + "B.", WICE_Q + "B."),
        "unsure": (WICE_Q + "B." + SURE_Q + " I am sure.", WICE_Q + "B." + SURE_Q + " I am unsure."),
        "unknown": (WICE_Q + "B.", WICE_Q + "The answer is unknown."),
    }),
    "fever": (FEVER, FEVER_Q, "B", {
        "vanilla": (FEVER_Q + " B.", FEVER_Q + " B."),
        "unsure": (FEVER_Q + " B." + SURE_Q + " I am sure.", FEVER_Q + " B." + SURE_Q + " I am unsure."),
        "unknown": (FEVER_Q + " B.", FEVER_Q + " The answer is unknown."),
    }),
    # the original's HotpotQA `unknown` crashes (it indexes the record by position); ours
    # writes it in the format of its `unsure` texts
    "hotpotqa": (HOTPOTQA, HOTPOT_Q, "Paris", {
        "vanilla": (HOTPOT_Q + " Paris.", HOTPOT_Q + " Paris."),
        "unsure": (HOTPOT_Q + " Paris." + SURE_Q + " I am sure.", HOTPOT_Q + " Paris." + SURE_Q + " I am unsure."),
        "unknown": (HOTPOT_Q + " Paris.", HOTPOT_Q + " The answer is unknown."),
    }),
}
CASES_BY_METHOD = [(name, method) for name in CASES for method in ("vanilla", "unsure", "uncertain", "unknown")]


def first(task, data, split):
    return task.load(data, split)[0]


@pytest.mark.parametrize("name", list(CASES))
def test_evaluation_prompt_and_gold(data, name):
    task, prompt, gold, _ = CASES[name]
    for split in task.domains[:1] + ("train",):
        ex = first(task, data, split)
        assert ex.prompt == prompt
        assert ex.gold == gold


@pytest.mark.parametrize("name, method", CASES_BY_METHOD)
def test_training_text(data, name, method, monkeypatch):
    task, _, _, texts = CASES[name]
    ex = first(task, data, "train")
    # the refusal draw fixed: one phrase to draw from
    monkeypatch.setattr(methods, "REFUSAL_PHRASES", ("The answer is unknown.",))
    certain, uncertain = texts["unsure" if method == "uncertain" else method]
    for flag, expected in ((True, certain), (False, uncertain)):
        got = training_texts(task, [ex], [{"index": ex.index, "certain": flag}], method, seed=0)
        assert got == [expected]


@pytest.mark.parametrize("task, sep", [(PARAREL, " "), (MMLU, ""), (WICE, ""), (FEVER, " "), (HOTPOTQA, " ")])
def test_refusal_follows_the_prompt_as_the_answer_does(data, task, sep):
    ex = first(task, data, "train")
    assert task.refused(ex, "I'm not sure.") == ex.prompt + sep + "I'm not sure."


def test_refusal_drawn_with_the_seed_is_one_of_the_sixteen(data):
    ex = first(WICE, data, "train")
    got = training_texts(WICE, [ex], [{"index": ex.index, "certain": False}], "unknown", seed=0)
    assert len(got) == 1 and got[0].startswith(WICE_Q)
    assert got[0][len(WICE_Q):] in methods.REFUSAL_PHRASES  # directly after "Answer:"
    assert got == training_texts(WICE, [ex], [{"index": ex.index, "certain": False}], "unknown", seed=0)


@pytest.mark.parametrize("name", list(CASES))
def test_probe_prompt(data, name):
    task, prompt, _, _ = CASES[name]
    ex = first(task, data, "train")
    # ParaRel probes without the space after "Question:"; the others probe with the evaluation prompt
    expected = "Question:Which country is Rubens Barrichello a citizen of? Answer:" if name == "pararel" else prompt
    assert task.probing(ex).prompt == expected
    assert task.probing(ex).gold == ex.gold and task.probing(ex).index == ex.index


def test_probe_shots_take_the_probe_format(data):
    a, b = PARAREL.load(data, "train")
    shots = Shots(PARAREL, [a, b], 1, seed=0)
    # the question's own prompt decides which questions are "known", as in the original; shots
    # (our addition, for instruct models) show the format of the question that follows them
    assert shots.prompt(PARAREL.probing(a)) == ("Question:What field does Alan Turing work in? Answer: logic.\n\n"
                                                "Question:Which country is Rubens Barrichello a citizen of? Answer:")
    assert shots.prompt(a) == ("Question: What field does Alan Turing work in? Answer: logic.\n\n"
                               "Question: Which country is Rubens Barrichello a citizen of? Answer:")


# dataset -> (task, answer, sure prompt), from the original evaluation scripts' checksure calls
SURE = {
    "pararel": (PARAREL, "Brazil", PARAREL_Q + " Brazil." + SURE_Q + " I am"),
    "mmlu": (MMLU, "A", MMLU_Q + "A." + SURE_Q + " I am"),
    # WiCE's evaluation has the space its training texts lack
    "wice": (WICE, "B", WICE_Q + " B." + SURE_Q + " I am"),
    "fever": (FEVER, "B", FEVER_Q + " B." + SURE_Q + " I am"),
    "hotpotqa": (HOTPOTQA, "Paris", HOTPOT_Q + " Paris." + SURE_Q + " I am"),
    "halueval": (HALUEVAL, "Paris", "Knowledge: The Louvre is in Paris.\nQuestion: Where is the Louvre?\nAnswer: Paris."
                 + SURE_Q + " I am"),
}


@pytest.mark.parametrize("name", list(SURE))
def test_sure_prompt_format(data, name):
    task, answer, expected = SURE[name]
    ex = first(task, data, task.domains[0])
    assert sure_prompt(ex.prompt, answer, task.sure_sep) == expected


@pytest.mark.parametrize("name", list(SURE))
def test_sure_prompt_through_the_runner(data, name, tiny_backend, monkeypatch):
    from rtuning.pipeline import Scored

    task, answer, expected = SURE[name]
    ex = first(task, data, task.domains[0])
    runner = TaskRunner(tiny_backend, task, Shots(task, [], 0, 0))
    seen = []
    monkeypatch.setattr(runner, "encode", lambda texts: seen.extend(texts) or [[0]] * len(texts))
    monkeypatch.setattr(tiny_backend, "token_probs", lambda seqs, ids, state=None: ([[0.5, 0.5]] * len(seqs), None))
    runner.sure([ex.prompt], [Scored(answer, 1.0, raw=" " + answer)])
    assert seen == [expected]


def test_evaluation_prompts_of_the_other_sets(data):
    assert first(HALUEVAL, data, "OOD").prompt == ("Knowledge: The Louvre is in Paris.\nQuestion: Where is the Louvre?"
                                                  "\nAnswer:")
    # the original release has no script for the refusal sets; they share ParaRel's evaluation prompt
    assert first(SELFAWARE, data, "unanswerable").prompt == "Question: What is the color of a thought? Answer:"
    assert first(FALSEQA, data, "unanswerable").prompt == "Question: Why do fish breathe fire? Answer:"
    assert first(NEC, data, "unanswerable").prompt == "Question: Who won the 1995 Grand Prix of Atlantis? Answer:"


def test_option_letters_are_scored_as_they_follow_answer_in_the_training_texts(tiny_backend):
    decode = tiny_backend.tokenizer.decode
    for task, letters in ((MMLU, ["A", "B", "C", "D"]), (WICE, ["A", "B", "C"]), (FEVER, [" A", " B", " C"])):
        runner = TaskRunner(tiny_backend, task, Shots(task, [], 0, 0))
        assert [decode([i]) for i in runner.letter_ids] == letters


def test_the_probe_command_sends_the_probe_prompt(data, tiny_model_dir, tmp_path, monkeypatch):
    seen = []
    answer = TaskRunner.answer

    def spy(self, prompts, *args, **kwargs):
        seen.extend(prompts)
        return answer(self, prompts, *args, **kwargs)

    monkeypatch.setattr(TaskRunner, "answer", spy)
    probe_main("pararel", ["--model", str(tiny_model_dir), "--data_dir", str(data), "--output_dir",
                           str(tmp_path / "out"), "--num_shots", "0", "--batch_size", "2", "--method", "unknown"])
    assert sorted(seen) == ["Question:What field does Alan Turing work in? Answer:",
                            "Question:Which country is Rubens Barrichello a citizen of? Answer:"]
    texts = json.loads(next((tmp_path / "out").glob("*_unknown.json")).read_text())["instances"]
    assert all(t["text"].startswith("Question: ") for t in texts)  # training texts keep the space


# --- --dataset and result names ---------------------------------------------------------


def test_dataset_stem_selects_the_file_in_the_datasets_folder(data):
    assert WICE.with_dataset("ID", "wice_train").path(data, "ID") == data / "WiCE" / "wice_train.json"
    assert [e.prompt for e in WICE.with_dataset("ID", "wice_train").load(data, "ID")] == [WICE_Q]
    assert HOTPOTQA.with_dataset("train", "hotpot_test").files["train"] == "HotpotQA/hotpot_test.json"
    assert WICE.with_dataset("ID", "x").files["train"] == WICE.files["train"]  # only that split
    for bad in ("WiCE/wice_test", "wice_test.json", "..", ""):
        with pytest.raises(DataError, match="--dataset"):
            WICE.with_dataset("ID", bad)
    with pytest.raises(DataError, match="data file not found: .*WiCE/nope.json"):
        WICE.with_dataset("ID", "nope").load(data, "ID")


def test_mmlu_dataset_keeps_the_prompt_domains_shots(data):
    # the original's run_MMLU.py: --dataset picks the file, --prompt_domain the shots
    from rtuning.tasks import mmlu_training_task

    task = mmlu_training_task(prompt_domain="ID").with_dataset("train", "MMLU_ID_test")
    assert task.path(data, "train") == data / "MMLU" / "MMLU_ID_test.json"
    assert [e.prompt for e in task.load(data, "train")] == [MMLU_Q]


def test_result_names_as_the_original():
    assert PARAREL.result_name("r", "ID") == "r_ID" and MMLU.result_name("r", "OOD") == "r_OOD"
    for task in (WICE, FEVER, HOTPOTQA, HALUEVAL):  # one test set: results/{result}.json
        assert task.result_name("r", task.domains[0]) == "r"
    assert NEC.result_name("r", "answerable") == "r_answerable"


def test_evaluation_with_dataset_writes_the_originals_name(data, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    summary = evaluate_main("wice", ["--model", str(tiny_model_dir), "--data_dir", str(data), "--output_dir",
                                     str(out), "--dataset", "wice_train", "--result", "wice", "--batch_size", "1"])
    assert sorted(p.name for p in out.iterdir()) == ["wice.json", "wice.jsonl", "wice.meta.json", "wice.summary.json"]
    assert summary["records_file"] == str(out / "wice.jsonl") and summary["n"] == 1
    meta = json.loads((out / "wice.meta.json").read_text())
    assert meta["data_file"] == str(data / "WiCE" / "wice_train.json")
    with pytest.raises(SystemExit):
        evaluate_main("wice", ["--model", str(tiny_model_dir), "--data_dir", str(data), "--output_dir", str(out),
                               "--dataset", "WiCE/wice_test"])
    assert "--dataset 'WiCE/wice_test': give the data file's stem" in capsys.readouterr().err
