"""`--compat original`: the original release's scoring rules (SPEC.md §6), rule by rule on a tiny
model whose next tokens are forced, then end to end through the scripts and the study driver."""

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from rtuning.backends.hf import HFBackend
from rtuning.pipeline import TaskRunner, probe
from rtuning.records import RunStore
from rtuning.scoring import RULES, ScoringRules, continuation_token, period_token_ids
from rtuning.tasks import FEVER, MMLU, PARAREL, WICE, Shots, mmlu_training_task

from test_engine import forced_logits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/ is not an installed package


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    """A tiny model without tree-packed prompts, so forced rows are the input rows."""
    import torch

    from rtuning.engine import Engine
    from rtuning.models import load_model, resolve_model

    model, tok = load_model(resolve_model(str(tiny_model_dir)), "cpu", torch.float32)
    return Engine(model, tok, share_prefix=False)


@pytest.fixture(scope="module")
def backend(engine):
    return HFBackend(engine=engine)


@pytest.fixture(scope="module")
def tok(bpe_tokenizer):
    return bpe_tokenizer


def ids(tok, *pieces):
    return [tok.convert_tokens_to_ids(p) for p in pieces]


def runner(backend, task, compat):
    return TaskRunner(backend, task, Shots(task, [], 0, 0), None, ScoringRules.build(backend.tokenizer, compat))


def store(tmp_path, name):
    return RunStore(tmp_path / f"{name}.jsonl", tmp_path / f"{name}.meta.json", {})


def pararel_examples(data_dir, split, n):
    return PARAREL.load(data_dir, split)[:n]


# -- the rules ---------------------------------------------------------------------------------


def test_original_stop_is_the_period_s_first_id_only(tok):
    original, default = ScoringRules.build(tok, "original"), ScoringRules.build(tok, "default")
    assert original.stop_ids == {tok(".").input_ids[0]} == {tok.convert_tokens_to_ids(".")}
    others = period_token_ids(tok) - original.stop_ids
    assert others <= default.stop_ids  # " .", "...", ".)" ... stop ours only (".\n" on other tokenizers)
    assert {" .", "...", ".)"} <= {tok.decode([i]) for i in others}


def test_other_period_tokens_stop_only_the_default_answer(backend, tok):
    spaced = next(i for i in period_token_ids(tok) if tok.decode([i]) == " .")
    paris, rome = ids(tok, "ĠParis", "ĠRome")
    prompts = ["Question: Where? Answer:"]
    texts = {}
    for compat in ("default", "original"):
        with forced_logits(backend.engine, [[paris], [spaced], [rome]]):
            texts[compat] = runner(backend, PARAREL, compat).answer(prompts, 3)[0][0]
    assert (texts["default"].text, texts["default"].stopped_by) == ("Paris", "period")
    assert (texts["original"].text, texts["original"].stopped_by) == ("Paris . Rome", "length")


def test_letters_are_the_bare_letters_first_ids(tok):
    original, default = ScoringRules.build(tok, "original"), ScoringRules.build(tok, "default")
    bare = [tok("A").input_ids[0], tok("B").input_ids[0], tok("C").input_ids[0], tok("D").input_ids[0]]
    assert original.letter_ids(MMLU.choices, MMLU.answer_sep) == bare
    assert original.letter_ids(FEVER.choices, FEVER.answer_sep) == bare[:3]  # whatever the separator
    # on this BPE tokenizer the bare letter is what follows "Answer:", but not "Answer: "
    assert default.letter_ids(MMLU.choices, MMLU.answer_sep) == bare
    assert default.letter_ids(FEVER.choices, FEVER.answer_sep) == ids(tok, "ĠA", "ĠB", "ĠC")


def test_sure_prompt_keeps_the_decoded_leading_space(backend, tok, monkeypatch):
    paris = tok.convert_tokens_to_ids("ĠParis")
    prompts = ["Question: Where is the Louvre? Answer:"]
    seen = {}
    real = backend.token_probs

    def spy(seqs, token_ids, **kw):
        seen["text"] = tok.decode(seqs[0], skip_special_tokens=True)
        return real(seqs, token_ids, **kw)

    monkeypatch.setattr(backend, "token_probs", spy)
    for compat, spaces in (("default", " "), ("original", "  ")):
        r = runner(backend, PARAREL, compat)
        with forced_logits(backend.engine, [[paris], [tok.convert_tokens_to_ids(".")]]):
            answers, state = r.answer(prompts, 5, keep_state=True)
        r.sure(prompts, answers, state)
        assert seen["text"] == f"Question: Where is the Louvre? Answer:{spaces}Paris. Are you sure you accurately " \
                               "answered the question based on your internal knowledge? I am"


def test_probe_text_is_cut_at_the_first_period_character():
    cut = ScoringRules.cut_probe_text
    assert cut(" Paris. It is") == " Paris"
    assert cut(" Washington D.C. is") == " Washington D"  # the character, not a period token
    assert cut(" Paris is big") == " Paris is bi"  # find gives -1: the last character goes
    assert cut(" Paris") == " Pari"
    # ended at the end token: the original decodes it ("</s>") and loses its last character instead
    assert cut(" Paris", ended_by_eos=True) == " Paris"
    assert cut(" Paris. It", ended_by_eos=True) == " Paris"


def test_pararel_probe_reads_15_tokens_cut_at_the_first_period(backend, tok, data_dir, tmp_path):
    ex = pararel_examples(data_dir, "train", 1)
    period, paris, rome, eos = *ids(tok, ".", "ĠParis", "ĠRome"), tok.eos_token_id

    def output(compat, tokens):
        with forced_logits(backend.engine, [[t] for t in tokens]):
            recs = probe(runner(backend, PARAREL, compat), ex, store(tmp_path, f"{compat}{len(tokens)}{tokens[1]}"),
                         method="unsure", batch_size=1, seed=0)
        return recs[0]["output"]

    rome14 = " Rome" * 14
    for tokens, default, original in (
            ([paris, period] + [rome] * 13, "Paris", "Paris"),  # cut at the period either way
            ([paris] + [rome] * 14, "Paris" + rome14, "Paris" + rome14[:-1]),  # no period: the original drops a character
            ([paris, eos], "Paris", "Paris")):  # the end token: the original drops one of "</s>"
        assert output("default", tokens) == default
        assert output("original", tokens) == original


def test_the_original_probe_prompt_has_no_space_after_question(data_dir):
    ex = pararel_examples(data_dir, "train", 1)[0]
    assert PARAREL.probing(ex).prompt == f"Question:{ex.question} Answer:"


def test_mmlu_probe_scores_the_original_letter_ids(backend, tok, data_dir, tmp_path):
    task = mmlu_training_task()
    exs = task.load(data_dir, "train")[:6]
    r = runner(backend, task, "original")
    with forced_logits(backend.engine, [[r.letter_ids[1]] * 6]):  # every answer: B
        recs = probe(r, exs, store(tmp_path, "mmlu"), method="unsure", batch_size=6, seed=0)
    gold = {ex.index: ex.gold for ex in exs}
    assert [x["output"] for x in recs] == ["B"] * 6
    assert [x["certain"] for x in recs] == [gold[x["index"]] == "B" for x in recs]
    assert 0 < sum(x["certain"] for x in recs) < 6
    # a letter token of ours that is not the original's ("ĠA") scores nothing under its rules
    assert continuation_token(tok, "Answer:", " A") not in r.letter_ids


def test_mmlu_r_tuning_u_samples_from_the_whole_vocabulary(backend, tok, data_dir, tmp_path):
    task = mmlu_training_task()
    exs = task.load(data_dir, "train")[:3]
    the = tok.convert_tokens_to_ids("Ġthe")
    samples = {}
    for compat in ("default", "original"):
        with forced_logits(backend.engine, [[the] * 15]):
            recs = probe(runner(backend, task, compat), exs, store(tmp_path, compat), method="uncertain",
                         batch_size=3, seed=0, num_try=4)
        samples[compat] = [x["samples"] for x in recs]
    assert samples["original"] == [[" the"] * 4] * 3  # the forced token itself, as decoded
    assert all(s in task.choices for row in samples["default"] for s in row)  # ours: only letters


def test_wice_known_rule_counts_every_supported_question(backend, data_dir, tmp_path):
    exs = WICE.load(data_dir, "train")
    picked = [next(ex for ex in exs if ex.gold == g) for g in "ABC"]  # supported, partially_, not_supported
    labels = {}
    for compat in ("default", "original"):
        r = runner(backend, WICE, compat)
        c = r.letter_ids[2]  # every answer: C (not_supported)
        with forced_logits(backend.engine, [[c, c, c]]):
            recs = probe(r, picked, store(tmp_path, compat), method="unsure", batch_size=3, seed=0)
        assert [x["output"] for x in recs] == ["C", "C", "C"]
        by_index = {x["index"]: x["certain"] for x in recs}
        labels[compat] = [by_index[ex.index] for ex in picked]
    assert labels["default"] == [False, False, True]
    # 'supported' in 'not_supported': known whatever the model chose
    assert labels["original"] == [True, False, True]


def test_rules_mix_one_at_a_time(tok):
    default, original = ScoringRules.build(tok, "default"), ScoringRules.build(tok, "original")
    for name, fields in RULES.items():
        mixed = default.with_rules(original, name)
        assert mixed.settings() == {"compat": f"default+{name}"}
        for field in ("stop_ids", "first_id_letters", "decoded_answer", "probe_cut", "vocab_samples",
                      "label_word_known"):
            expected = original if field in fields else default
            assert getattr(mixed, field) == getattr(expected, field), (name, field)
    assert default.with_rules(original, *RULES) == replace(original, compat="default+" + "+".join(RULES))
    with pytest.raises(ValueError, match="unknown scoring rule"):
        default.with_rules(original, "spacing")


# -- end to end --------------------------------------------------------------------------------


def args(model_dir, out, *extra):
    return ["--model", str(model_dir), "--output_dir", str(out), "--limit", "3", "--batch_size", "3",
            "--num_shots", "0", *extra]


@pytest.mark.parametrize("name", ["pararel", "mmlu"])
def test_scripts_run_under_compat_original_and_refuse_the_other_mode(env_data, tiny_model_dir, tmp_path, capsys,
                                                                     name):
    from rtuning.cli import evaluate_main, probe_main

    train = mmlu_training_task() if name == "mmlu" else name
    for method in ("unsure", "uncertain"):
        counts = probe_main(train, args(tiny_model_dir, tmp_path / "data", "--method", method, "--compat", "original",
                                        "--num_try", "2"))
        assert counts["questions"] == 3
    metas = sorted((tmp_path / "data").glob("*.meta.json"))
    assert len(metas) == 2
    for m in metas:
        meta = json.loads(m.read_text())
        assert meta["config"]["compat"] == "original" and meta["compat"] == "original"
    summary = evaluate_main(name, args(tiny_model_dir, tmp_path / "eval", "--compat", "original"))
    assert summary["n"] == 3
    records = [json.loads(line) for line in Path(summary["records_file"]).read_text().splitlines()]
    assert len(records) == 3 and all(0 <= r["sure_prob"] <= 1 for r in records)
    capsys.readouterr()
    # the mode is in the resume key: the same outputs under the other mode are refused
    with pytest.raises(SystemExit):
        evaluate_main(name, args(tiny_model_dir, tmp_path / "eval", "--compat", "default"))
    assert "compat" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        probe_main(train, args(tiny_model_dir, tmp_path / "data", "--method", "unsure", "--num_try", "2"))
    assert "compat" in capsys.readouterr().err


def test_study_passes_compat_to_every_probe_and_evaluation(env_data, tmp_path, monkeypatch):
    import rtuning.cli
    from rtuning.reproduce import Study, parse_args

    calls = []

    def fake_probe(task, argv):
        calls.append(("probe", argv))
        out = Path(argv[argv.index("--output_dir") + 1])
        out.mkdir(parents=True, exist_ok=True)
        (out / "pararel_unsure.records.jsonl").write_text(
            json.dumps({"index": 0, "correct": True, "confidence": 0.9, "certain": True}) + "\n")
        return {"wall_time_s": 0.0}

    def fake_evaluate(task, argv):
        calls.append(("evaluate", argv))
        return {"n": 1, "wall_time_s": 0.0}

    monkeypatch.setattr(rtuning.cli, "probe_main", fake_probe)
    monkeypatch.setattr(rtuning.cli, "evaluate_main", fake_evaluate)
    a = parse_args(["--compat", "original", "--data_dir", str(env_data), "--out", str(tmp_path / "study"),
                    "--methods", "unsure,uncertain"])
    study = Study(a, [])
    study.probe("pararel")
    study.evaluate("some-model", "base", "pararel", "ID", 5)
    assert [kind for kind, _ in calls] == ["probe", "probe", "evaluate"]
    for _, argv in calls:
        assert argv[argv.index("--compat") + 1] == "original"
    assert study.write([], [], {}, 0.0)["compat"] == "original"
    assert parse_args([]).compat == "default"


def test_compat_effects_benchmark_runs_on_the_tiny_model(tiny_model_dir, data_dir, tmp_path):
    from benchmarks.compat_effects import main

    out = tmp_path / "effects.json"
    result = main(["--model", str(tiny_model_dir), "--data_dir", str(data_dir), "--pararel", "4", "--mmlu", "3",
                   "--fever", "2", "--wice", "3", "--num_try", "2", "--device", "cpu", "--batch_size", "4",
                   "--output", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    rows = {r["deviation"]: r for r in result["rows"]}
    # MMLU's letters are the same ids under both rules here, so its evaluations are not run twice
    assert "MMLU evaluation, all rules" not in rows
    assert len(rows) == 9 and all(r["effect"] and r["original"] and r["default"] for r in rows.values())
    assert result["complete"] and not list(tmp_path.glob("compat_effects_*"))
    for r in rows.values():
        for key in ("labels_changed", "answers_changed"):
            if key in r:
                assert 0 <= r[key] <= 1
    # facts of this tokenizer, whatever the model says: MMLU's letters agree, FEVER's (after a space) do not
    assert rows["Option letter ids (MMLU, WiCE: no space before the letter)"]["letters_changed"] == 0
    assert rows["Option letter ids (FEVER: a space before the letter)"]["letters_changed"] == 3
    # the same answers under the spacing rule: only p(sure) moves
    assert rows["Sure-prompt spacing"]["answers_changed"] == 0
    wice = rows["WiCE known rule"]
    assert wice["uncertain_to_certain"] <= round(wice["supported_share"] * wice["n"])  # only supported ones flip up
    assert wice["certain_to_uncertain"] == 0
    assert result["load_average"] and result["sizes"]["pararel"] == 4
