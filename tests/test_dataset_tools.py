"""dataset/validate.py and dataset/prepare.py, run as users run them, on real data and tiny fixtures."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rtuning.tasks import TASKS

REPO = Path(__file__).resolve().parent.parent
MMLU_FILES = ("MMLU_ID_train.json", "MMLU_ID_test.json", "MMLU_OOD_test.json", "MMLU_ID_prompt.json",
              "MMLU_OOD_prompt.json")


def run_script(script: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "dataset" / script), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def write_jsonl(path: Path, records: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# --- validate.py ------------------------------------------------------------------------


def test_validate_real_data(data_dir):
    res = run_script("validate.py", "--data_dir", data_dir)
    assert res.returncode == 0, res.stdout + res.stderr
    row = next(line for line in res.stdout.splitlines() if "pararel/training_data.json" in line)
    assert row.split()[:2] == ["pararel", "train"] and "5,575" in row and row.endswith("ok")
    assert "(28 subjects)" in res.stdout


def test_validate_reports_malformed_record(tmp_path):
    write_json(tmp_path / "pararel/training_data.json", [["Q1?", "A1", "P1"], ["Q2?", 7, "P1"]])
    write_json(tmp_path / "pararel/ID_test_pararel.json", [["Q3?", "A3", "P1"]])
    res = run_script("validate.py", "--data_dir", tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 1
    assert "Traceback" not in out
    assert "training_data.json: record 1: field 'answer'" in out
    id_row = next(line for line in res.stdout.splitlines() if "ID_test_pararel.json" in line)
    assert id_row.endswith("ok")  # the other files are still checked
    # missing files only fail with --strict; here the malformed record already fails
    assert run_script("validate.py", "--data_dir", tmp_path / "pararel").returncode == 0
    assert run_script("validate.py", "--data_dir", tmp_path / "pararel", "--strict").returncode == 1


# --- prepare.py mmlu: rebuild the exact release files from MMLU-style CSVs ----------------


def write_csv(path: Path, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)


def test_prepare_mmlu_reproduces_release(data_dir, tmp_path):
    release = {name: json.loads((data_dir / "MMLU" / name).read_text(encoding="utf-8")) for name in MMLU_FILES}
    source = tmp_path / "mmlu_csv"
    # MMLU's test CSV order is the ID test half followed by the ID train half
    for subject, rows in release["MMLU_ID_train.json"].items():
        write_csv(source / "test" / f"{subject}_test.csv", release["MMLU_ID_test.json"][subject] + rows)
    for subject, rows in release["MMLU_OOD_test.json"].items():
        write_csv(source / "test" / f"{subject}_test.csv", rows)
    for name in ("MMLU_ID_prompt.json", "MMLU_OOD_prompt.json"):
        for subject, rows in release[name].items():
            write_csv(source / "dev" / f"{subject}_dev.csv", rows)

    out = tmp_path / "out"
    res = run_script("prepare.py", "--out_dir", out, "mmlu", "--source", source)
    assert res.returncode == 0, res.stderr
    assert "2,448 records, 28 subjects" in res.stdout
    for name in MMLU_FILES:
        produced = json.loads((out / "MMLU" / name).read_text(encoding="utf-8"))
        assert produced == release[name], name
        assert list(produced) == list(release[name]), name  # subject order too

    (source / "test" / "anatomy_test.csv").unlink()  # 56 subjects
    res = run_script("prepare.py", "--out_dir", tmp_path / "out2", "mmlu", "--source", source)
    assert res.returncode == 1 and "56 MMLU subjects" in res.stderr and "Traceback" not in res.stderr


def test_prepare_mmlu_names_bad_line(tmp_path):
    write_csv(tmp_path / "src/test/a_test.csv", [["q", "1", "2", "3", "4", "A"], ["q", "1", "2", "3", "4", "E"]])
    write_csv(tmp_path / "src/dev/a_dev.csv", [["q", "1", "2", "3", "4", "B"]])
    res = run_script("prepare.py", "--out_dir", tmp_path / "out", "mmlu", "--source", tmp_path / "src",
                     "--allow_any_count")
    assert res.returncode == 1
    assert "a_test.csv: line 2" in res.stderr and "Traceback" not in res.stderr


# --- prepare.py halueval / hotpotqa / wice on hand-written fixtures ----------------------


HALU = [
    {"knowledge": "Paris is the capital of France.", "question": "What is the capital of France?",
     "right_answer": "Paris", "hallucinated_answer": "Lyon"},
    {"knowledge": "Water boils at 100 C at sea level.", "question": "At what temperature does water boil?",
     "right_answer": "100 C", "hallucinated_answer": "90 C"},
]


def test_prepare_halueval(tmp_path):
    src = write_jsonl(tmp_path / "qa_data.json", HALU)
    out = tmp_path / "out"
    res = run_script("prepare.py", "--out_dir", out, "halueval", "--source", src)
    assert res.returncode == 0, res.stderr
    assert "HaluEvalQA.json (2 records)" in res.stdout
    assert json.loads((out / "HaluEvalQA/HaluEvalQA.json").read_text()) == HALU
    examples = TASKS["halueval"].load(out, "OOD")
    assert [ex.gold for ex in examples] == ["Paris", "100 C"]

    write_jsonl(src, [HALU[0], {"knowledge": "k", "question": "q"}])
    res = run_script("prepare.py", "--out_dir", out, "halueval", "--source", src)
    assert res.returncode == 1 and "qa_data.json: line 2" in res.stderr and "Traceback" not in res.stderr


def hotpot_original(i: int) -> dict:
    return {"_id": f"id{i}", "answer": f"answer {i}", "question": f"Question {i}?",
            "supporting_facts": [[f"Title {i}", 0]], "type": "bridge", "level": "easy",
            "context": [[f"Title {i}", [f"Sentence {i}a.", f" Sentence {i}b."]], ["Other", ["Filler."]]]}


def hotpot_hf(i: int) -> dict:
    return {"id": f"hf{i}", "question": f"HF question {i}?", "answer": f"hf answer {i}", "type": "comparison",
            "level": "hard", "supporting_facts": {"title": [f"T{i}", "U"], "sent_id": [0, 1]},
            "context": {"title": [f"T{i}", "U"], "sentences": [[f"T{i} one."], ["U one.", " U two."]]}}


def test_prepare_hotpotqa_both_layouts(tmp_path):
    train = write_json(tmp_path / "train.json", [hotpot_original(i) for i in range(5)])
    dev = write_jsonl(tmp_path / "dev.jsonl", [hotpot_hf(i) for i in range(3)])  # HF export as JSON lines
    out = tmp_path / "out"
    res = run_script("prepare.py", "--out_dir", out, "hotpotqa", "--source", train, "--dev", dev, "--num_train", 4)
    assert res.returncode == 0, res.stderr
    assert "hotpot_10k.json (4 records)" in res.stdout and "hotpot_test.json (3 records)" in res.stdout

    assert json.loads((out / "HotpotQA/hotpot_10k.json").read_text()) == [hotpot_original(i) for i in range(4)]
    converted = json.loads((out / "HotpotQA/hotpot_test.json").read_text())[1]
    assert converted["_id"] == "hf1" and "id" not in converted
    assert converted["context"] == [["T1", ["T1 one."]], ["U", ["U one.", " U two."]]]
    assert converted["supporting_facts"] == [["T1", 0], ["U", 1]]

    train_ex = TASKS["hotpotqa"].load(out, "train")
    test_ex = TASKS["hotpotqa"].load(out, "ID")
    assert [ex.gold for ex in train_ex] == [f"answer {i}" for i in range(4)]
    assert test_ex[1].prompt == "T1:T1 one.\n U:U one.  U two.\n\nQuestion: HF question 1?\nAnswer:"


def test_prepare_hotpotqa_rejects_bad_context(tmp_path):
    bad = hotpot_original(1) | {"context": "not paragraphs"}
    src = write_json(tmp_path / "train.json", [hotpot_original(0), bad])
    res = run_script("prepare.py", "--out_dir", tmp_path / "out", "hotpotqa", "--source", src)
    assert res.returncode == 1
    assert "train.json: record 1: field 'context'" in res.stderr and "Traceback" not in res.stderr


def wice_record(i: int, label: str) -> dict:
    return {"label": label, "supporting_sentences": [[0]], "claim": f"Claim {i}.",
            "evidence": [f"Evidence {i}.", "More."], "meta": {"id": f"x{i}", "claim_title": "T"}}


def test_prepare_wice(tmp_path):
    src = tmp_path / "claim"
    train = [wice_record(0, "supported"), wice_record(1, "not_supported")]
    test = [wice_record(2, "partially_supported")]
    write_jsonl(src / "train.jsonl", train)
    write_jsonl(src / "dev.jsonl", [wice_record(9, "supported")])
    write_jsonl(src / "test.jsonl", test)
    out = tmp_path / "out"
    res = run_script("prepare.py", "--out_dir", out, "wice", "--source", src)
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "WiCE/wice_train.json").read_text()) == train
    assert json.loads((out / "WiCE/wice_test.json").read_text()) == test
    assert [ex.gold for ex in TASKS["wice"].load(out, "train")] == ["A", "C"]
    assert [ex.gold for ex in TASKS["wice"].load(out, "ID")] == ["B"]
    assert run_script("validate.py", "--data_dir", out).returncode == 0

    write_jsonl(src / "test.jsonl", [wice_record(3, "refuted")])
    res = run_script("prepare.py", "--out_dir", out, "wice", "--source", src)
    assert res.returncode == 1 and "test.jsonl: line 1" in res.stderr and "Traceback" not in res.stderr


# --- prepare.py --from_hub: the Hub's column layouts, with load_dataset replaced offline ----


def test_prepare_from_hub_layouts(data_dir, tmp_path, monkeypatch):
    import importlib.util

    import datasets

    spec = importlib.util.spec_from_file_location("prepare", REPO / "dataset" / "prepare.py")
    prepare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prepare)

    def mmlu_rows(*names):
        rows = []
        for name in names:
            for subject, records in json.loads((data_dir / "MMLU" / name).read_text()).items():
                rows += [{"question": r[0], "subject": subject, "choices": r[1:5], "answer": "ABCD".index(r[5])}
                         for r in records]
        return datasets.Dataset.from_list(rows)

    hub_data = {
        prepare.MMLU_HUB: {"test": mmlu_rows("MMLU_ID_test.json", "MMLU_ID_train.json", "MMLU_OOD_test.json"),
                           "dev": mmlu_rows("MMLU_ID_prompt.json", "MMLU_OOD_prompt.json")},
        prepare.HALUEVAL_HUB: {"data": datasets.Dataset.from_list(HALU)},
        prepare.HOTPOT_HUB: {"train": datasets.Dataset.from_list([hotpot_hf(i) for i in range(3)]),
                             "validation": datasets.Dataset.from_list([hotpot_hf(7)])},
    }
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config: datasets.DatasetDict(hub_data[name, config]))

    out = tmp_path / "out"
    for args in (["mmlu"], ["halueval"], ["hotpotqa", "--num_train", "2"]):
        assert prepare.main(["--out_dir", str(out), *args, "--from_hub"]) == 0
    for name in MMLU_FILES:
        assert json.loads((out / "MMLU" / name).read_text()) == json.loads((data_dir / "MMLU" / name).read_text())
    assert json.loads((out / "HaluEvalQA/HaluEvalQA.json").read_text()) == HALU
    assert [ex.gold for ex in TASKS["hotpotqa"].load(out, "train")] == ["hf answer 0", "hf answer 1"]
    assert TASKS["hotpotqa"].load(out, "ID")[0].question == "HF question 7?"


# --- prepare.py: one tiny file per public layout, and what it refuses -------------------


def prepare(tmp_path, *args) -> subprocess.CompletedProcess:
    return run_script("prepare.py", "--out_dir", tmp_path / "out", *args)


def test_prepare_hotpotqa_other_paragraph_layouts(tmp_path):
    objects = hotpot_original(0) | {"context": [{"title": "Title 0", "sentences": ["Sentence 0a.", " Sentence 0b."]},
                                                {"title": "Other", "sentences": ["Filler."]}]}
    texts = hotpot_original(1) | {"context": [["Title 1", "Sentence 1a. Sentence 1b."], ["Other", "Filler."]]}
    fullwiki = hotpot_original(2)  # the fullwiki dev file has the distractor file's layout
    dev = write_jsonl(tmp_path / "dev.json", [objects, texts, fullwiki])
    res = prepare(tmp_path, "hotpotqa", "--dev", dev)
    assert res.returncode == 0, res.stderr
    written = json.loads((tmp_path / "out/HotpotQA/hotpot_test.json").read_text())
    assert written[0]["context"] == hotpot_original(0)["context"]
    assert written[1]["context"] == [["Title 1", ["Sentence 1a. Sentence 1b."]], ["Other", ["Filler."]]]
    assert written[2] == fullwiki
    prompts = [ex.prompt for ex in TASKS["hotpotqa"].load(tmp_path / "out", "ID")]
    assert prompts[1].startswith("Title 1:Sentence 1a. Sentence 1b.\n Other:Filler.\n")


def test_prepare_hotpotqa_refuses_unknown_layouts_and_empty_context(tmp_path):
    src = write_json(tmp_path / "x.json", [{"question": "q", "answer": "a", "paragraphs": []}])
    res = prepare(tmp_path, "hotpotqa", "--source", src)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "x.json: record 0: not a HotpotQA record (no 'context')" in res.stderr
    assert "Hugging Face hotpot_qa layout" in res.stderr and "{title, sentences} objects" in res.stderr
    write_json(src, [hotpot_original(0) | {"context": []}])
    res = prepare(tmp_path, "hotpotqa", "--source", src)
    assert res.returncode == 1 and "no record has any context paragraph" in res.stderr
    test = {k: v for k, v in hotpot_original(0).items() if k != "answer"}
    write_json(src, [test])
    res = prepare(tmp_path, "hotpotqa", "--source", src)
    assert res.returncode == 1 and "record 0: no 'answer'" in res.stderr
    assert not (tmp_path / "out").exists()


def fever1(i: int, label: str, evidence) -> dict:
    return {"id": i, "verifiable": "VERIFIABLE", "label": label, "claim": f"Claim {i}.", "evidence": evidence}


def test_prepare_fever_from_fever1_and_wiki_pages(tmp_path):
    wiki = tmp_path / "wiki-pages"
    write_jsonl(wiki / "wiki-001.jsonl", [
        {"id": "Nikolaj", "text": "x", "lines": "0\tNikolaj is an actor .\tactor\n1\tHe was born in 1970 .\n2\t"},
        {"id": "Unused", "text": "y", "lines": "0\tUnused ."}])
    write_jsonl(wiki / "wiki-002.jsonl", [{"id": "Fox", "text": "z", "lines": "0\tFox is a network ."}])
    train = write_jsonl(tmp_path / "train.jsonl", [
        fever1(1, "SUPPORTS", [[[9, 10, "Nikolaj", 0], [9, 10, "Fox", 0]], [[9, 11, "Nikolaj", 0]]]),
        fever1(2, "NOT ENOUGH INFO", [[[9, None, None, None]]]),
        fever1(3, "REFUTES", [[[9, 12, "Nikolaj", 1]]])])
    release = write_json(tmp_path / "test.json", [{"id": 4, "claim": "C.", "evidence": ["E ."], "label": "SUPPORTS"}])
    res = prepare(tmp_path, "fever", "--source", train, "--test", release, "--wiki_pages", wiki)
    assert res.returncode == 0, res.stderr
    written = json.loads((tmp_path / "out/FEVER/fever_10k.json").read_text())
    assert [r["evidence"] for r in written] == [["Nikolaj is an actor .", "Fox is a network ."], [],
                                                ["He was born in 1970 ."]]
    assert [ex.gold for ex in TASKS["fever"].load(tmp_path / "out", "train")] == ["A", "C", "B"]
    assert json.loads((tmp_path / "out/FEVER/fever_10k_test.json").read_text()) == json.loads(release.read_text())

    res = prepare(tmp_path, "fever", "--source", train)
    assert res.returncode == 1 and "pass --wiki_pages" in res.stderr
    write_jsonl(train, [fever1(5, "SUPPORTS", [[[9, 13, "Fox", 4]]])])
    res = prepare(tmp_path, "fever", "--source", train, "--wiki_pages", wiki)
    assert res.returncode == 1 and "train.jsonl: line 1: sentence 4 of page 'Fox'" in res.stderr
    write_jsonl(train, [{"claim": "c", "verdict": "true"}])
    res = prepare(tmp_path, "fever", "--source", train, "--wiki_pages", wiki)
    assert res.returncode == 1 and "not a FEVER record" in res.stderr and "FEVER 1.0's JSON lines" in res.stderr


@pytest.mark.parametrize("content, words", [
    (b"", "the file is empty (0 bytes)"),
    (b"[]", "no records (an empty list)"),
    ("{\"knowledge\": \"Caf\u00e9\"}".encode("latin-1"), "not UTF-8 (line 1"),
    ("{\"knowledge\": \"k\"}".encode("utf-16"), "the file is UTF-16"),
])
def test_prepare_refuses_empty_and_undecodable_sources_and_writes_nothing(tmp_path, content, words):
    src = tmp_path / "qa_data.json"
    src.write_bytes(content)
    res = prepare(tmp_path, "halueval", "--source", src)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert f"{src}: {words}" in res.stderr
    assert not (tmp_path / "out").exists()


def test_prepare_halueval_names_its_layouts_and_reads_one_line(tmp_path):
    src = write_jsonl(tmp_path / "qa_data.json", [{"ID": 1, "user_query": "hi", "chatgpt_response": "hello"}])
    res = prepare(tmp_path, "halueval", "--source", src)
    assert res.returncode == 1 and "qa_data.json: line 1: expected an object with string fields" in res.stderr
    assert "HaluEval's data/qa_data.json" in res.stderr
    write_jsonl(src, HALU[:1])
    assert prepare(tmp_path, "halueval", "--source", src).returncode == 0
    assert len(TASKS["halueval"].load(tmp_path / "out", "OOD")) == 1


def test_prepare_wice_names_its_layout(tmp_path):
    write_jsonl(tmp_path / "claim/train.jsonl", [{"claim": "c", "evidence": ["e"], "label": "SUPPORTS"}])
    write_jsonl(tmp_path / "claim/test.jsonl", [wice_record(1, "supported")])
    res = prepare(tmp_path, "wice", "--source", tmp_path / "claim")
    assert res.returncode == 1 and "train.jsonl: line 1: expected an object whose 'label'" in res.stderr
    assert "WiCE's claim-level JSON lines" in res.stderr


# --- validate.py: every damaged case is an error with one line ---------------------------


@pytest.mark.parametrize("file, content, words", [
    ("pararel/ID_test_pararel.json", b"", "ID_test_pararel.json: the file is empty (0 bytes)"),
    ("pararel/ID_test_pararel.json", b"[]", "ID_test_pararel.json: no records (an empty list)"),
    ("pararel/ID_test_pararel.json", '[["Caf\u00e9?", "a", "P"]]'.encode("latin-1"), "ID_test_pararel.json: not UTF-8"),
    ("FEVER/fever_10k_test.json", json.dumps([{"claim": "c", "evidence": "e", "label": "SUPPORTS"}]).encode(),
     "fever_10k_test.json: record 0: field 'evidence' should be a list of strings, got one string"),
    ("HotpotQA/hotpot_test.json", json.dumps([{"question": "q", "answer": "a", "context": [["T", "The film."]]}]).encode(),
     "hotpot_test.json: record 0: field 'context': paragraph 0 ('T') should hold a list of sentences"),
    ("HotpotQA/hotpot_test.json", json.dumps([{"question": "q", "answer": "a", "context": []}]).encode(),
     "hotpot_test.json: record 0: field 'context' is empty"),
    ("NEC/NEC_answerable.json", json.dumps({"prompt": " ", "label": 0}).encode(),
     "NEC_answerable.json: record 0: field 'prompt' is empty"),
])
def test_validate_fails_on_each_damaged_case(tmp_path, file, content, words):
    path = tmp_path / file
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    res = run_script("validate.py", "--data_dir", tmp_path)
    assert res.returncode == 1, res.stdout
    assert "Traceback" not in res.stdout + res.stderr
    errors = [line for line in res.stdout.splitlines() if line.startswith("ERROR: ")]
    assert len(errors) == 1 and words in errors[0], res.stdout
    assert "0 ok, " in res.stdout


def test_validate_fails_on_empty_mmlu_option(tmp_path):
    write_json(tmp_path / "MMLU/MMLU_ID_test.json", {"anatomy": [["Q?", "a", "", "c", "d", "A"]]})
    write_json(tmp_path / "MMLU/MMLU_ID_prompt.json", {"anatomy": [["S?", "a", "b", "c", "d", "B"]]})
    res = run_script("validate.py", "--data_dir", tmp_path)
    assert res.returncode == 1 and "MMLU_ID_test.json (subject anatomy, item 0): record 0: field 'B' is empty" in res.stdout
