"""Methods as declarations (rtuning/methods.py): the paper's four give byte for byte the training
texts and probe records that main gave before they were declarations (PINNED below was written
by that code, for the inputs defined here), and the declaration-only Cor-RAIT (correctness
ratio) runs through the probe, its command line and the study."""

import hashlib
import json

import pytest

from rtuning.backends.base import Answer, Backend
from rtuning.cli import probe_main, probe_parser
from rtuning.matching import MATCHERS
from rtuning.methods import METHODS, correct_share_reaches, get_method, not_in_key
from rtuning.pipeline import TaskRunner, is_correct, mark_certain, probe, training_texts
from rtuning.records import RunStore, read_jsonl
from rtuning.scoring import ScoringRules
from rtuning.tasks import FEVER, HOTPOTQA, MMLU, PARAREL, SURE_QUESTION, WICE, Example, Shots, mmlu_training_task

# short prompts in each dataset's own form (a training text depends only on prompt, gold and separator)
PROMPTS = {
    "pararel": (PARAREL, [("Question: Who wrote Hamlet? Answer:", "Shakespeare"),
                          ("Question: Capital of Peru? Answer:", "Lima"),
                          ("Question: Which river flows through Cairo? Answer:", "Nile"),
                          ("Question: Who painted Guernica? Answer:", "Picasso")]),
    "mmlu": (MMLU, [("Q1?\nA. w\nB. x\nC. y\nD. z\nAnswer:", "A"), ("Q2?\nA. w\nB. x\nC. y\nD. z\nAnswer:", "C"),
                    ("Q3?\nA. w\nB. x\nC. y\nD. z\nAnswer:", "D"), ("Q4?\nA. w\nB. x\nC. y\nD. z\nAnswer:", "B")]),
    "wice": (WICE, [(f"Evidence:E{i}.\nClaim:C{i}.\nQuestion:Does the evidence support the claim?\n"
                     "A:supported.\nB:partially_supported.\nC:not_supported.\nAnswer:", g)
                    for i, g in enumerate("ABCA")]),
    "fever": (FEVER, [(f"Evidence:E{i}.\nClaim:C{i}.\nQuestion:Does the evidence support the claim?\n"
                       "A: SUPPORTS.\nB: REFUTES.\nC: NOT ENOUGH INFO.\nAnswer:", g) for i, g in enumerate("BCAB")]),
    "hotpotqa": (HOTPOTQA, [(f"T{i}:Paragraph {i}.\n\nQuestion: Q{i}?\nAnswer:", g)
                            for i, g in enumerate(["Paris", "1932", "Ada Lovelace", "blue"])]),
}
INDICES = [3, 7, 11, 20]
CORRECT = [1, 0, 0, 1]
ENTROPY = [0.5, 0.0, 1.1, 0.5]  # a tie, broken by question order
SEED = 7
PAPER = ("unsure", "unknown", "uncertain", "vanilla")


def examples(name):
    task, pairs = PROMPTS[name]
    return task, [Example(i, p, p, g) for i, (p, g) in zip(INDICES, pairs)]


def records():
    return [{"index": i, "correct": c, "entropy": e} for i, c, e in zip(INDICES, CORRECT, ENTROPY)]


class FakeBackend(Backend):
    """Deterministic answers from a hash of the tokens (and the sampling seed): no model."""

    name = "fake"

    def __init__(self, tokenizer, words):
        self.tokenizer, self.words = tokenizer, words
        self.eos_ids, self.vocab_size = frozenset({tokenizer.eos_token_id}), len(tokenizer)

    def settings(self):
        return {"name": self.name}

    @staticmethod
    def _hash(*key) -> int:
        return int(hashlib.sha256(repr(key).encode()).hexdigest(), 16)

    def decode(self, seqs, max_new_tokens, *, stop, sampling=None, keep_state=False):
        out = []
        for row, seq in enumerate(seqs):
            h = self._hash(tuple(seq), None if sampling is None else (sampling.seed, sampling.temperature, row))
            word = self.words[h % len(self.words)]
            out.append(Answer(word, [1], [0.5 + (h >> 8) % 50 / 100], "period", raw=" " + word))
        return out, None

    def token_probs(self, seqs, token_ids, *, state=None, keep_state=False):
        rows = []
        for seq in seqs:
            h = self._hash(tuple(seq))
            w = [1 + (h >> (8 * j)) % 7 for j in range(len(token_ids))]
            rows.append([x / sum(w) for x in w])
        return rows, None


def fake_probe(tokenizer, data_dir, tmp_path, name, method, **kw):
    """probe() over FakeBackend on 7 training questions ("-original": under --compat original)."""
    task = mmlu_training_task() if name == "mmlu" else PARAREL
    exs = task.load(data_dir, "train")[:7]
    backend = FakeBackend(tokenizer, [e.gold for e in exs[:3]] + ["nothing"])  # some answers right
    rules = ScoringRules.build(tokenizer, "original" if name.endswith("original") else "default")
    runner = TaskRunner(backend, task, Shots(task, [], 0, 0), None, rules)
    store = RunStore(tmp_path / f"{name}_{method}.jsonl", tmp_path / f"{name}_{method}.meta.json", {})
    return task, exs, probe(runner, exs, store, method=method, batch_size=3, seed=3, **kw)


# -- the paper's four: unchanged ---------------------------------------------------------------

@pytest.mark.parametrize("name", PROMPTS)
@pytest.mark.parametrize("method", PAPER)
def test_training_texts_are_main_s_byte_for_byte(name, method):
    task, exs = examples(name)
    marked = mark_certain(records(), method)
    pinned = PINNED["texts"][f"{name} {method}"]
    assert [r["certain"] for r in marked] == pinned["certain"]
    assert training_texts(task, exs, marked, method, SEED) == pinned["texts"]  # in file order


@pytest.mark.parametrize("name", ["pararel", "mmlu", "pararel-original"])
def test_uncertain_probe_records_are_main_s(bpe_tokenizer, data_dir, tmp_path, name):
    _, _, recs = fake_probe(bpe_tokenizer, data_dir, tmp_path, name, "uncertain", num_try=4, temperature=0.7)
    # (pararel-original's samples are read as the original reads its sampled probe answers: cut at
    # the first "." (none here: the last character goes), with the decoded leading space)
    # through JSON, as the records file holds them (key order included)
    assert [json.dumps(r) for r in json.loads(json.dumps(recs))] == [json.dumps(r) for r in PINNED["probes"][name]]


def test_one_declaration_per_method_in_one_order():
    assert list(METHODS) == ["vanilla", "unsure", "uncertain", "unknown", "correctness"]
    assert [m.display for m in METHODS.values()] == ["Vanilla", "R-Tuning", "R-Tuning-U", "R-Tuning-R", "Cor-RAIT"]
    from rtuning import reproduce, report

    assert reproduce.METHODS == ("vanilla", "unsure", "uncertain", "unknown")  # the study's default: the paper's
    assert report.label("correctness") == "Cor-RAIT" and report.ORDER.index("correctness") > report.ORDER.index("unknown")
    assert report.ORDER[:4] == ["pretrain_t", "base", "vanilla", "vanilla_c"]


# -- Cor-RAIT: the share of correct samples ---------------------------------------------------

def test_correct_share_rule_counts_the_boundary_as_certain():
    recs = [{"samples_correct": s} for s in ([1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1])]
    assert correct_share_reaches(recs, {"min_correct_ratio": 0.5}) == [True, False, True, False, True]
    assert correct_share_reaches(recs, {"min_correct_ratio": 0.75}) == [False, False, True, False, True]
    assert correct_share_reaches(recs, {"min_correct_ratio": 0.0}) == [True] * 5
    # 2 of 3 reaches 2/3 however the threshold rounds
    assert correct_share_reaches([{"samples_correct": [1, 1, 0]}], {"min_correct_ratio": 2 / 3}) == [True]


def test_correctness_probe_scores_each_sample_with_the_task_s_rule(bpe_tokenizer, data_dir, tmp_path):
    for name in ("pararel", "mmlu"):
        task, exs, recs = fake_probe(bpe_tokenizer, data_dir, tmp_path, name, "correctness", num_try=4,
                                     temperature=0.7, settings={"min_correct_ratio": 0.5})
        by_index = {ex.index: ex for ex in exs}
        for r in recs:
            assert r["samples_correct"] == [is_correct(task, MATCHERS["substring"], by_index[r["index"]], s)
                                            for s in r["samples"]]
            assert r["correct_ratio"] == sum(r["samples_correct"]) / 4
            assert r["certain"] == (r["correct_ratio"] >= 0.5)
        assert {r["correct_ratio"] for r in recs} > {0.0}  # the fake gets some right: the rule is exercised
        # the same sampling step as R-Tuning-U: the same seeded draws
        _, _, sampled = fake_probe(bpe_tokenizer, data_dir, tmp_path, name, "uncertain", num_try=4)
        assert [r["samples"] for r in recs] == [r["samples"] for r in sampled]


def test_correctness_through_the_probe_command(env_data, tiny_model_dir, tmp_path):
    common = ["--model", str(tiny_model_dir), "--output_dir", str(tmp_path), "--limit", "10", "--batch_size", "3",
              "--method", "correctness", "--num_try", "4"]
    for ratio, result in (("0.5", "half"), ("0.75", "most")):
        counts = probe_main(mmlu_training_task(), [*common, "--min_correct_ratio", ratio, "--result", result])
        recs = read_jsonl(tmp_path / f"{result}_correctness.records.jsonl")
        assert all(len(r["samples"]) == 4 and set(r["samples"]) <= set("ABCD") for r in recs)
        assert all(r["samples_correct"] == [s == r["gold"] for s in r["samples"]] for r in recs)
        assert [r["certain"] for r in recs] == [sum(r["samples_correct"]) >= float(ratio) * 4 for r in recs]
        assert counts["certain"] == sum(r["certain"] for r in recs)
        texts = [i["text"] for i in json.loads((tmp_path / f"{result}_correctness.json").read_text())["instances"]]
        assert sum(t.endswith(SURE_QUESTION + " I am sure.") for t in texts) == counts["certain"]
        assert sum(t.endswith(SURE_QUESTION + " I am unsure.") for t in texts) == 10 - counts["certain"]
        config = json.loads((tmp_path / f"{result}_correctness.meta.json").read_text())["config"]
        assert config["min_correct_ratio"] == float(ratio) and "letter_samples" in config
    # the letters and their scores are the tiny model's (about 1 in 4 right): both sides of the rule occur
    half = read_jsonl(tmp_path / "half_correctness.records.jsonl")
    assert 0 < sum(r["certain"] for r in half) < 10
    # the threshold changes the labels only, never the samples
    most = read_jsonl(tmp_path / "most_correctness.records.jsonl")
    assert [r["samples"] for r in most] == [r["samples"] for r in half]


def test_a_method_s_own_flag_stays_out_of_the_other_methods_resume_keys():
    assert not_in_key(get_method("unsure")) == {"min_correct_ratio"}
    assert not_in_key(get_method("correctness")) == set()
    # num_try and temperature were in every probe's key before methods were declarations: kept
    assert not {"num_try", "temperature"} & not_in_key(get_method("vanilla"))


def test_unknown_method_names_the_known_ones(capsys):
    with pytest.raises(SystemExit):
        probe_parser(None).parse_args(["--method", "corectness"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "invalid choice: 'corectness'" in err and all(m in err for m in METHODS)
    with pytest.raises(ValueError, match="unknown method 'x'; choose from vanilla, unsure, uncertain, unknown, "
                                         "correctness"):
        get_method("x")
    for bad in ("1.5", "-0.1", "half"):
        with pytest.raises(SystemExit):
            probe_parser(None).parse_args(["--min_correct_ratio", bad])
        assert "expected a share between 0 and 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        probe_parser(None).parse_args(["--num_try", "0"])
    assert "expected a whole number >= 1" in capsys.readouterr().err


def test_the_study_probes_a_sampled_method_with_its_flags(data_dir, tmp_path, monkeypatch, capsys):
    """The study's data step for Cor-RAIT, without a model: the greedy probe's methods are derived
    from its records, a sampled method gets its own probe with the flags it reads."""
    import rtuning.cli as cli
    from rtuning.reproduce import Study, parse_args

    calls = []

    def fake_probe_main(task, argv):
        calls.append(argv)
        out = tmp_path / "s" / "data"
        if argv[argv.index("--method") + 1] == "unsure":
            out.mkdir(parents=True, exist_ok=True)
            (out / "pararel_unsure.records.jsonl").write_text(
                "".join(json.dumps({"index": i, "correct": i % 2}) + "\n" for i in range(4)))
        return {}

    monkeypatch.setattr(cli, "probe_main", fake_probe_main)
    args = parse_args(["--out", str(tmp_path / "s"), "--data_dir", str(data_dir), "--methods",
                       "unknown,correctness", "--num_try", "3", "--min_correct_ratio", "0.6"])
    files = Study(args, []).probe("pararel")
    assert list(files) == ["unknown", "correctness"]
    assert [c[c.index("--method") + 1:] for c in calls] == [
        ["unsure"], ["correctness", "--num_try", "3", "--temperature", "0.7", "--min_correct_ratio", "0.6"]]
    texts = json.loads(files["unknown"].read_text())["instances"]
    assert len(texts) == 4 and files["correctness"].name == "pararel_correctness.json"
    with pytest.raises(SystemExit):
        parse_args(["--methods", "unsure,cor-rait"])
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "error: --methods 'cor-rait': unknown method; choose from vanilla, unsure, uncertain, unknown, correctness")


PINNED = json.loads(r"""
{
 "texts": {
  "pararel unsure": {"certain": [true, false, false, true], "texts": [
   "Question: Who painted Guernica? Answer: Picasso. Are you sure you accurately answered the question based on your internal knowledge? I am sure.",
   "Question: Capital of Peru? Answer: Lima. Are you sure you accurately answered the question based on your internal knowledge? I am unsure.",
   "Question: Who wrote Hamlet? Answer: Shakespeare. Are you sure you accurately answered the question based on your internal knowledge? I am sure.",
   "Question: Which river flows through Cairo? Answer: Nile. Are you sure you accurately answered the question based on your internal knowledge? I am unsure."
  ]},
  "pararel unknown": {"certain": [true, false, false, true], "texts": [
   "Question: Capital of Peru? Answer: There is no known case.",
   "Question: Who wrote Hamlet? Answer: Shakespeare.",
   "Question: Which river flows through Cairo? Answer: I do not know the answer.",
   "Question: Who painted Guernica? Answer: Picasso."
  ]},
  "pararel uncertain": {"certain": [true, true, false, false], "texts": [
   "Question: Who painted Guernica? Answer: Picasso. Are you sure you accurately answered the question based on your internal knowledge? I am unsure.",
   "Question: Capital of Peru? Answer: Lima. Are you sure you accurately answered the question based on your internal knowledge? I am sure.",
   "Question: Who wrote Hamlet? Answer: Shakespeare. Are you sure you accurately answered the question based on your internal knowledge? I am sure.",
   "Question: Which river flows through Cairo? Answer: Nile. Are you sure you accurately answered the question based on your internal knowledge? I am unsure."
  ]},
  "pararel vanilla": {"certain": [true, false, false, true], "texts": [
   "Question: Who painted Guernica? Answer: Picasso.",
   "Question: Capital of Peru? Answer: Lima.",
   "Question: Who wrote Hamlet? Answer: Shakespeare.",
   "Question: Which river flows through Cairo? Answer: Nile."
  ]},
  "mmlu unsure": {"certain": [true, false, false, true], "texts": [
   "Q4?\nA. w\nB. x\nC. y\nD. z\nAnswer:B. Are you sure you accurately answered the question based on your internal knowledge? I am sure.",
   "Q2?\nA. w\nB. x\nC. y\nD. z\nAnswer:C. Are you sure you accurately answered the question based on your internal knowledge? I am unsure.",
   "Q1?\nA. w\nB. x\nC. y\nD. z\nAnswer:A. Are you sure you accurately answered the question based on your internal knowledge? I am sure.",
   "Q3?\nA. w\nB. x\nC. y\nD. z\nAnswer:D. Are you sure you accurately answered the question based on your internal knowledge? I am unsure."
  ]},
  "mmlu unknown": {"certain": [true, false, false, true], "texts": [
   "Q2?\nA. w\nB. x\nC. y\nD. z\nAnswer:There is no known case.",
   "Q1?\nA. w\nB. x\nC. y\nD. z\nAnswer:A.",
   "Q3?\nA. w\nB. x\nC. y\nD. z\nAnswer:I do not know the answer.",
   "Q4?\nA. w\nB. x\nC. y\nD. z\nAnswer:B."
  ]},
  "mmlu uncertain": {"certain": [true, true, false, false], "texts": [
   "Q4?\nA. w\nB. x\nC. y\nD. z\nAnswer:B. Are you sure you accurately answered the question based on your internal knowledge? I am unsure.",
   "Q2?\nA. w\nB. x\nC. y\nD. z\nAnswer:C. Are you sure you accurately answered the question based on your internal knowledge? I am sure.",
   "Q1?\nA. w\nB. x\nC. y\nD. z\nAnswer:A. Are you sure you accurately answered the question based on your internal knowledge? I am sure.",
   "Q3?\nA. w\nB. x\nC. y\nD. z\nAnswer:D. Are you sure you accurately answered the question based on your internal knowledge? I am unsure."
  ]},
  "mmlu vanilla": {"certain": [true, false, false, true], "texts": [
   "Q4?\nA. w\nB. x\nC. y\nD. z\nAnswer:B.",
   "Q2?\nA. w\nB. x\nC. y\nD. z\nAnswer:C.",
   "Q1?\nA. w\nB. x\nC. y\nD. z\nAnswer:A.",
   "Q3?\nA. w\nB. x\nC. y\nD. z\nAnswer:D."
  ]},
  "wice unsure": {"certain": [true, false, false, true], "texts": [
   "Evidence:E3.\nClaim:C3.\nQuestion:Does the evidence support the claim?\nA:supported.\nB:partially_supported.\nC:not_supported.\nAnswer:A. Are you sure you accurately answered the question based on your internal knowledge? I am sure.",
   "Evidence:E1.\nClaim:C1.\nQuestion:Does the evidence support the claim?\nA:supported.\nB:partially_supported.\nC:not_supported.\nAnswer:B. Are you sure you accurately answered the question based on your internal knowledge? I am unsure.",
   "Evidence:E0.\nClaim:C0.\nQuestion:Does the evidence support the claim?\nA:supported.\nB:partially_supported.\nC:not_supported.\nAnswer:A. Are you sure you accurately answered the question based on your internal knowledge? I am sure.",
   "Evidence:E2.\nClaim:C2.\nQuestion:Does the evidence support the claim?\nA:supported.\nB:partially_supported.\nC:not_supported.\nAnswer:C. Are you sure you accurately answered the question based on your internal knowledge? I am unsure."
  ]},
  "wice unknown": {"certain": [true, false, false, true], "texts": [
   "Evidence:E1.\nClaim:C1.\nQuestion:Does the evidence support the claim?\nA:supported.\nB:partially_supported.\nC:not_supported.\nAnswer:There is no known case.",
   "Evidence:E0.\nClaim:C0.\nQuestion:Does the evidence support the claim?\nA:supported.\nB:partially_supported.\nC:not_supported.\nAnswer:A.",
   "Evidence:E2.\nClaim:C2.\nQuestion:Does the evidence support the claim?\nA:supported.\nB:partially_supported.\nC:not_supported.\nAnswer:I do not know the answer.",
   "Evidence:E3.\nClaim:C3.\nQuestion:Does the evidence support the claim?\nA:supported.\nB:partially_supported.\nC:not_supported.\nAnswer:A."
  ]},
  "wice uncertain": {"certain": [true, true, false, false], "texts": [
   "Evidence:E3.\nClaim:C3.\nQuestion:Does the evidence support the claim?\nA:supported.\nB:partially_supported.\nC:not_supported.\nAnswer:A. Are you sure you accurately answered the question based on your internal knowledge? I am unsure.",
   "Evidence:E1.\nClaim:C1.\nQuestion:Does the evidence support the claim?\nA:supported.\nB:partially_supported.\nC:not_supported.\nAnswer:B. Are you sure you accurately answered the question based on your internal knowledge? I am sure.",
   "Evidence:E0.\nClaim:C0.\nQuestion:Does the evidence support the claim?\nA:supported.\nB:partially_supported.\nC:not_supported.\nAnswer:A. Are you sure you accurately answered the question based on your internal knowledge? I am sure.",
   "Evidence:E2.\nClaim:C2.\nQuestion:Does the evidence support the claim?\nA:supported.\nB:partially_supported.\nC:not_supported.\nAnswer:C. Are you sure you accurately answered the question based on your internal knowledge? I am unsure."
  ]},
  "wice vanilla": {"certain": [true, false, false, true], "texts": [
   "Evidence:E3.\nClaim:C3.\nQuestion:Does the evidence support the claim?\nA:supported.\nB:partially_supported.\nC:not_supported.\nAnswer:A.",
   "Evidence:E1.\nClaim:C1.\nQuestion:Does the evidence support the claim?\nA:supported.\nB:partially_supported.\nC:not_supported.\nAnswer:B.",
   "Evidence:E0.\nClaim:C0.\nQuestion:Does the evidence support the claim?\nA:supported.\nB:partially_supported.\nC:not_supported.\nAnswer:A.",
   "Evidence:E2.\nClaim:C2.\nQuestion:Does the evidence support the claim?\nA:supported.\nB:partially_supported.\nC:not_supported.\nAnswer:C."
  ]},
  "fever unsure": {"certain": [true, false, false, true], "texts": [
   "Evidence:E3.\nClaim:C3.\nQuestion:Does the evidence support the claim?\nA: SUPPORTS.\nB: REFUTES.\nC: NOT ENOUGH INFO.\nAnswer: B. Are you sure you accurately answered the question based on your internal knowledge? I am sure.",
   "Evidence:E1.\nClaim:C1.\nQuestion:Does the evidence support the claim?\nA: SUPPORTS.\nB: REFUTES.\nC: NOT ENOUGH INFO.\nAnswer: C. Are you sure you accurately answered the question based on your internal knowledge? I am unsure.",
   "Evidence:E0.\nClaim:C0.\nQuestion:Does the evidence support the claim?\nA: SUPPORTS.\nB: REFUTES.\nC: NOT ENOUGH INFO.\nAnswer: B. Are you sure you accurately answered the question based on your internal knowledge? I am sure.",
   "Evidence:E2.\nClaim:C2.\nQuestion:Does the evidence support the claim?\nA: SUPPORTS.\nB: REFUTES.\nC: NOT ENOUGH INFO.\nAnswer: A. Are you sure you accurately answered the question based on your internal knowledge? I am unsure."
  ]},
  "fever unknown": {"certain": [true, false, false, true], "texts": [
   "Evidence:E1.\nClaim:C1.\nQuestion:Does the evidence support the claim?\nA: SUPPORTS.\nB: REFUTES.\nC: NOT ENOUGH INFO.\nAnswer: There is no known case.",
   "Evidence:E0.\nClaim:C0.\nQuestion:Does the evidence support the claim?\nA: SUPPORTS.\nB: REFUTES.\nC: NOT ENOUGH INFO.\nAnswer: B.",
   "Evidence:E2.\nClaim:C2.\nQuestion:Does the evidence support the claim?\nA: SUPPORTS.\nB: REFUTES.\nC: NOT ENOUGH INFO.\nAnswer: I do not know the answer.",
   "Evidence:E3.\nClaim:C3.\nQuestion:Does the evidence support the claim?\nA: SUPPORTS.\nB: REFUTES.\nC: NOT ENOUGH INFO.\nAnswer: B."
  ]},
  "fever uncertain": {"certain": [true, true, false, false], "texts": [
   "Evidence:E3.\nClaim:C3.\nQuestion:Does the evidence support the claim?\nA: SUPPORTS.\nB: REFUTES.\nC: NOT ENOUGH INFO.\nAnswer: B. Are you sure you accurately answered the question based on your internal knowledge? I am unsure.",
   "Evidence:E1.\nClaim:C1.\nQuestion:Does the evidence support the claim?\nA: SUPPORTS.\nB: REFUTES.\nC: NOT ENOUGH INFO.\nAnswer: C. Are you sure you accurately answered the question based on your internal knowledge? I am sure.",
   "Evidence:E0.\nClaim:C0.\nQuestion:Does the evidence support the claim?\nA: SUPPORTS.\nB: REFUTES.\nC: NOT ENOUGH INFO.\nAnswer: B. Are you sure you accurately answered the question based on your internal knowledge? I am sure.",
   "Evidence:E2.\nClaim:C2.\nQuestion:Does the evidence support the claim?\nA: SUPPORTS.\nB: REFUTES.\nC: NOT ENOUGH INFO.\nAnswer: A. Are you sure you accurately answered the question based on your internal knowledge? I am unsure."
  ]},
  "fever vanilla": {"certain": [true, false, false, true], "texts": [
   "Evidence:E3.\nClaim:C3.\nQuestion:Does the evidence support the claim?\nA: SUPPORTS.\nB: REFUTES.\nC: NOT ENOUGH INFO.\nAnswer: B.",
   "Evidence:E1.\nClaim:C1.\nQuestion:Does the evidence support the claim?\nA: SUPPORTS.\nB: REFUTES.\nC: NOT ENOUGH INFO.\nAnswer: C.",
   "Evidence:E0.\nClaim:C0.\nQuestion:Does the evidence support the claim?\nA: SUPPORTS.\nB: REFUTES.\nC: NOT ENOUGH INFO.\nAnswer: B.",
   "Evidence:E2.\nClaim:C2.\nQuestion:Does the evidence support the claim?\nA: SUPPORTS.\nB: REFUTES.\nC: NOT ENOUGH INFO.\nAnswer: A."
  ]},
  "hotpotqa unsure": {"certain": [true, false, false, true], "texts": [
   "T3:Paragraph 3.\n\nQuestion: Q3?\nAnswer: blue. Are you sure you accurately answered the question based on your internal knowledge? I am sure.",
   "T1:Paragraph 1.\n\nQuestion: Q1?\nAnswer: 1932. Are you sure you accurately answered the question based on your internal knowledge? I am unsure.",
   "T0:Paragraph 0.\n\nQuestion: Q0?\nAnswer: Paris. Are you sure you accurately answered the question based on your internal knowledge? I am sure.",
   "T2:Paragraph 2.\n\nQuestion: Q2?\nAnswer: Ada Lovelace. Are you sure you accurately answered the question based on your internal knowledge? I am unsure."
  ]},
  "hotpotqa unknown": {"certain": [true, false, false, true], "texts": [
   "T1:Paragraph 1.\n\nQuestion: Q1?\nAnswer: There is no known case.",
   "T0:Paragraph 0.\n\nQuestion: Q0?\nAnswer: Paris.",
   "T2:Paragraph 2.\n\nQuestion: Q2?\nAnswer: I do not know the answer.",
   "T3:Paragraph 3.\n\nQuestion: Q3?\nAnswer: blue."
  ]},
  "hotpotqa uncertain": {"certain": [true, true, false, false], "texts": [
   "T3:Paragraph 3.\n\nQuestion: Q3?\nAnswer: blue. Are you sure you accurately answered the question based on your internal knowledge? I am unsure.",
   "T1:Paragraph 1.\n\nQuestion: Q1?\nAnswer: 1932. Are you sure you accurately answered the question based on your internal knowledge? I am sure.",
   "T0:Paragraph 0.\n\nQuestion: Q0?\nAnswer: Paris. Are you sure you accurately answered the question based on your internal knowledge? I am sure.",
   "T2:Paragraph 2.\n\nQuestion: Q2?\nAnswer: Ada Lovelace. Are you sure you accurately answered the question based on your internal knowledge? I am unsure."
  ]},
  "hotpotqa vanilla": {"certain": [true, false, false, true], "texts": [
   "T3:Paragraph 3.\n\nQuestion: Q3?\nAnswer: blue.",
   "T1:Paragraph 1.\n\nQuestion: Q1?\nAnswer: 1932.",
   "T0:Paragraph 0.\n\nQuestion: Q0?\nAnswer: Paris.",
   "T2:Paragraph 2.\n\nQuestion: Q2?\nAnswer: Ada Lovelace."
  ]}
 },
 "probes": {
  "pararel": [
   {"index": 0, "question": "What field does Alan Turing work in?", "gold": "logic", "output": "mathematics", "confidence": 0.9299999999999999, "correct": false, "truncated_tokens": 0, "samples": ["mathematics", "logic", "anthropology", "nothing"], "entropy": 1.3862943611198906, "certain": false},
   {"index": 1, "question": "What field does John Vincent Atanasoff work in?", "gold": "mathematics", "output": "logic", "confidence": 0.8300000000000001, "correct": false, "truncated_tokens": 0, "samples": ["mathematics", "anthropology", "mathematics", "logic"], "entropy": 1.0397207708399179, "certain": true},
   {"index": 2, "question": "What field does Edward Burnett Tylor work in?", "gold": "anthropology", "output": "nothing", "confidence": 0.5700000000000001, "correct": false, "truncated_tokens": 0, "samples": ["anthropology", "mathematics", "mathematics", "logic"], "entropy": 1.0397207708399179, "certain": true},
   {"index": 3, "question": "In what field does Anaxagoras work?", "gold": "philosophy", "output": "logic", "confidence": 0.5, "correct": false, "truncated_tokens": 0, "samples": ["mathematics", "mathematics", "mathematics", "anthropology"], "entropy": 0.5623351446188083, "certain": true},
   {"index": 4, "question": "What field does Robert Bunsen work in?", "gold": "chemistry", "output": "nothing", "confidence": 0.75, "correct": false, "truncated_tokens": 0, "samples": ["anthropology", "nothing", "mathematics", "mathematics"], "entropy": 1.0397207708399179, "certain": false},
   {"index": 5, "question": "What field does Adam Carolla work in?", "gold": "comedy", "output": "logic", "confidence": 0.77, "correct": false, "truncated_tokens": 0, "samples": ["mathematics", "nothing", "logic", "nothing"], "entropy": 1.0397207708399179, "certain": false},
   {"index": 6, "question": "What field does Al Capp work in?", "gold": "cartoonist", "output": "logic", "confidence": 0.72, "correct": false, "truncated_tokens": 0, "samples": ["anthropology", "anthropology", "nothing", "logic"], "entropy": 1.0397207708399179, "certain": false}
  ],
  "mmlu": [
   {"index": 0, "question": "Statement 1 | Every solvable group is of prime-power order. Statement 2 | Every group of prime-power order is solvable.", "gold": "D", "output": "A", "confidence": 0.38461538461538464, "correct": false, "truncated_tokens": 0, "samples": ["C", "D", "B", "B"], "entropy": 1.0397207708399179, "certain": true},
   {"index": 1, "question": "Find all c in Z_3 such that Z_3[x]/(x^3 + cx^2 + 1) is a field.", "gold": "B", "output": "A", "confidence": 0.3181818181818182, "correct": false, "truncated_tokens": 0, "samples": ["B", "B", "C", "A"], "entropy": 1.0397207708399179, "certain": false},
   {"index": 2, "question": "In the group G = {2, 4, 6, 8) under multiplication modulo 10, the identity element is", "gold": "A", "output": "A", "confidence": 0.35, "correct": true, "truncated_tokens": 0, "samples": ["A", "B", "B", "A"], "entropy": 0.6931471805599453, "certain": true},
   {"index": 3, "question": "Statement 1 | If G, H and K are groups of order 4, at least two of them are isomorphic. Statement 2 | If Z_r + Z_s is isomorphic to a subgroup Z_m + Z_n, then r divides m and s divides n.", "gold": "C", "output": "A", "confidence": 0.3125, "correct": false, "truncated_tokens": 0, "samples": ["A", "B", "D", "C"], "entropy": 1.3862943611198906, "certain": false},
   {"index": 4, "question": "Find the degree for the given field extension Q(sqrt(2)) over Q.", "gold": "B", "output": "D", "confidence": 0.4117647058823529, "correct": false, "truncated_tokens": 0, "samples": ["A", "D", "A", "C"], "entropy": 1.0397207708399179, "certain": false},
   {"index": 5, "question": "Statement 1 | Every free abelian group is torsion free. Statement 2 | Every finitely generated torsion-free abelian group is a free abelian group.", "gold": "A", "output": "C", "confidence": 0.35294117647058826, "correct": false, "truncated_tokens": 0, "samples": ["B", "B", "C", "B"], "entropy": 0.5623351446188083, "certain": true},
   {"index": 6, "question": "Statement 1 | 4x - 2 is irreducible over Z. Statement 2 | 4x - 2 is irreducible over Q.", "gold": "D", "output": "D", "confidence": 0.3333333333333333, "correct": true, "truncated_tokens": 0, "samples": ["B", "D", "A", "C"], "entropy": 1.3862943611198906, "certain": false}
  ],
  "pararel-original": [
   {"index": 0, "question": "What field does Alan Turing work in?", "gold": "logic", "output": "mathematic", "confidence": 0.9299999999999999, "correct": false, "truncated_tokens": 0, "samples": [" mathematic", " logi", " anthropolog", " nothin"], "entropy": 1.3862943611198906, "certain": false},
   {"index": 1, "question": "What field does John Vincent Atanasoff work in?", "gold": "mathematics", "output": "logi", "confidence": 0.8300000000000001, "correct": false, "truncated_tokens": 0, "samples": [" mathematic", " anthropolog", " mathematic", " logi"], "entropy": 1.0397207708399179, "certain": true},
   {"index": 2, "question": "What field does Edward Burnett Tylor work in?", "gold": "anthropology", "output": "nothin", "confidence": 0.5700000000000001, "correct": false, "truncated_tokens": 0, "samples": [" anthropolog", " mathematic", " mathematic", " logi"], "entropy": 1.0397207708399179, "certain": true},
   {"index": 3, "question": "In what field does Anaxagoras work?", "gold": "philosophy", "output": "logi", "confidence": 0.5, "correct": false, "truncated_tokens": 0, "samples": [" mathematic", " mathematic", " mathematic", " anthropolog"], "entropy": 0.5623351446188083, "certain": true},
   {"index": 4, "question": "What field does Robert Bunsen work in?", "gold": "chemistry", "output": "nothin", "confidence": 0.75, "correct": false, "truncated_tokens": 0, "samples": [" anthropolog", " nothin", " mathematic", " mathematic"], "entropy": 1.0397207708399179, "certain": false},
   {"index": 5, "question": "What field does Adam Carolla work in?", "gold": "comedy", "output": "logi", "confidence": 0.77, "correct": false, "truncated_tokens": 0, "samples": [" mathematic", " nothin", " logi", " nothin"], "entropy": 1.0397207708399179, "certain": false},
   {"index": 6, "question": "What field does Al Capp work in?", "gold": "cartoonist", "output": "logi", "confidence": 0.72, "correct": false, "truncated_tokens": 0, "samples": [" anthropolog", " anthropolog", " nothin", " logi"], "entropy": 1.0397207708399179, "certain": false}
  ]
 }
}
""")
