"""The user commands, in-process on a tiny model: outputs, resume after a kill, errors."""

import json
import time

import pytest

from rtuning.cli import evaluate_main, probe_main
from rtuning.pipeline import TaskRunner
from rtuning.tasks import REFUSAL_PHRASES as REFUSALS

SUFFIX = " Are you sure you accurately answered the question based on your internal knowledge? I am"


def probe_args(model_dir, out, *extra):
    return ["--model", str(model_dir), "--output_dir", str(out), "--limit", "10", "--batch_size", "3",
            "--num_shots", "1", *extra]


def test_probe_writes_lmflow_data_records_and_metadata(env_data, tiny_model_dir, tmp_path):
    counts = probe_main("pararel", probe_args(tiny_model_dir, tmp_path, "--method", "unsure", "--result", "r"))
    data = json.loads((tmp_path / "r_unsure.json").read_text())
    assert data["type"] == "text_only" and len(data["instances"]) == 10
    for inst in data["instances"]:
        assert inst["text"].startswith("Question: ")
        assert inst["text"].endswith((SUFFIX + " sure.", SUFFIX + " unsure."))
        assert "\n" not in inst["text"]  # shots shape the probe only, never the training text
    recs = [json.loads(l) for l in (tmp_path / "r_unsure.records.jsonl").read_text().splitlines()]
    assert [r["index"] for r in recs] == list(range(10))
    assert {"question", "gold", "output", "certain"} <= set(recs[0])
    meta = json.loads((tmp_path / "r_unsure.meta.json").read_text())
    assert meta["status"] == "finished" and meta["num_shots"] == 1 and len(meta["data_sha256"]) == 64
    assert meta["counts"]["certain"] + meta["counts"]["uncertain"] == 10 == counts["questions"]


def test_uncertain_records_samples_and_entropy(env_data, tiny_model_dir, tmp_path):
    probe_main("pararel", probe_args(tiny_model_dir, tmp_path, "--method", "uncertain", "--num_try", "3",
                                     "--result", "r"))
    recs = [json.loads(l) for l in (tmp_path / "r_uncertain.records.jsonl").read_text().splitlines()]
    assert all(len(r["samples"]) == 3 and r["entropy"] >= 0 for r in recs)
    assert sum(r["certain"] for r in recs) == 5


def run_killed_then_resumed(monkeypatch, main, argv, fail_on_call, delay=0.0, after_kill=lambda: None):
    real = TaskRunner.answer
    calls = {"n": 0}

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == fail_on_call:
            raise KeyboardInterrupt("killed")
        time.sleep(delay)  # a run that takes measurable time before it is killed
        return real(self, *a, **k)

    monkeypatch.setattr(TaskRunner, "answer", flaky)
    with pytest.raises(SystemExit) as e:  # Ctrl-C: a line saying what is saved, status 130, no traceback
        main("pararel", argv)
    assert e.value.code == 130
    after_kill()
    monkeypatch.setattr(TaskRunner, "answer", real)
    return main("pararel", argv)


def test_probe_resume_after_kill_gives_the_same_files(env_data, tiny_model_dir, tmp_path, monkeypatch):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    probe_main("pararel", probe_args(tiny_model_dir, whole, "--method", "uncertain", "--num_try", "2", "--result", "r"))
    # each batch calls answer once (the samples go to the backend directly): fail in the third batch
    run_killed_then_resumed(monkeypatch, probe_main,
                            probe_args(tiny_model_dir, broken, "--method", "uncertain", "--num_try", "2",
                                       "--result", "r"), fail_on_call=3)
    meta = json.loads((broken / "r_uncertain.meta.json").read_text())
    assert meta["resumed_from"] == 6
    for name in ("r_uncertain.json", "r_uncertain.records.jsonl"):
        assert (whole / name).read_text() == (broken / name).read_text()


def eval_args(model_dir, out, *extra):
    return ["--model", str(model_dir), "--output_dir", str(out), "--limit", "9", "--batch_size", "4",
            "--result", "e", *extra]


def test_evaluation_outputs_and_resume(env_data, tiny_model_dir, tmp_path, monkeypatch):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    summary = evaluate_main("pararel", eval_args(tiny_model_dir, whole, "--domain", "OOD"))
    results = json.loads((whole / "e_OOD.json").read_text())
    assert len(results) == 9 and all(len(r) == 3 and r[0] in (0, 1) for r in results)
    assert all(0 <= r[1] <= 1 and 0 <= r[2] <= 1 for r in results)
    assert summary["n"] == 9 and summary["match"] == "substring"
    saved = json.loads((whole / "e_OOD.summary.json").read_text())
    assert saved["accuracy"] == summary["accuracy"]
    killed = {}
    run_killed_then_resumed(
        monkeypatch, evaluate_main, eval_args(tiny_model_dir, broken, "--domain", "OOD"), fail_on_call=2,
        delay=0.3, after_kill=lambda: killed.update(json.loads((broken / "e_OOD.meta.json").read_text())))
    for name in ("e_OOD.json", "e_OOD.jsonl"):
        assert (whole / name).read_text() == (broken / name).read_text()
    # the killed run's time is on record and counted in the resumed run's total
    assert killed["status"] == "running" and killed["wall_time_s"] >= 0.3
    saved = json.loads((broken / "e_OOD.summary.json").read_text())
    assert saved["wall_time_s"] > killed["wall_time_s"]
    # the rate is over the whole time (wall_time_s is rounded to 0.01 s)
    assert 9 / (saved["wall_time_s"] + 0.005) <= saved["questions_per_s"] <= 9 / (saved["wall_time_s"] - 0.005)
    # a rerun that finds every record done computes nothing and adds no time
    again = evaluate_main("pararel", eval_args(tiny_model_dir, broken, "--domain", "OOD"))
    assert again["reused"] and not summary["reused"]
    assert again["wall_time_s"] == saved["wall_time_s"]
    assert json.loads((broken / "e_OOD.summary.json").read_text())["wall_time_s"] == saved["wall_time_s"]


def test_rerun_with_other_settings_is_refused(env_data, tiny_model_dir, tmp_path, capsys):
    evaluate_main("pararel", eval_args(tiny_model_dir, tmp_path))
    with pytest.raises(SystemExit) as e:
        evaluate_main("pararel", eval_args(tiny_model_dir, tmp_path, "--match", "normalized"))
    assert e.value.code == 2
    assert "match" in capsys.readouterr().err


def test_malformed_data_is_reported_with_file_index_field(tiny_model_dir, tmp_path, monkeypatch, capsys):
    (tmp_path / "pararel").mkdir()
    (tmp_path / "pararel" / "ID_test_pararel.json").write_text(json.dumps([["Q?", "A", "P"], ["Q2?", None, "P"]]))
    monkeypatch.setenv("RTUNING_DATA_DIR", str(tmp_path))
    with pytest.raises(SystemExit):
        evaluate_main("pararel", eval_args(tiny_model_dir, tmp_path / "out", "--num_shots", "0"))
    err = capsys.readouterr().err
    assert "ID_test_pararel.json" in err and "record 1" in err and "'answer'" in err


def test_multiple_choice_probe_and_evaluation(env_data, tiny_model_dir, tmp_path):
    from rtuning.tasks import mmlu_training_task

    probe_main(mmlu_training_task(), probe_args(tiny_model_dir, tmp_path, "--method", "unknown", "--result", "m"))
    texts = [i["text"] for i in json.loads((tmp_path / "m_unknown.json").read_text())["instances"]]
    assert len(texts) == 10
    assert all(t.startswith("The following are multiple choice questions (with answers) about  abstract algebra.")
               for t in texts)
    tails = [t.rsplit("\nAnswer:", 1)[1] for t in texts]
    recs = [json.loads(l) for l in (tmp_path / "m_unknown.records.jsonl").read_text().splitlines()]
    assert sum(t in ("A.", "B.", "C.", "D.") for t in tails) == sum(r["certain"] for r in recs)
    # the refusal where the letter would be, with no space: "Answer:The answer is unknown."
    assert sum(t in REFUSALS for t in tails) == sum(not r["certain"] for r in recs)
    summary = evaluate_main("mmlu", eval_args(tiny_model_dir, tmp_path, "--domain", "OOD"))
    recs = [json.loads(l) for l in (tmp_path / "e_OOD.jsonl").read_text().splitlines()]
    assert all(r["answer"] in "ABCD" and len(r["option_probs"]) == 4 for r in recs)
    assert all(r["correct"] == int(r["answer"] == r["gold"]) for r in recs)
    assert summary["n"] == 9


def test_refusal_set_evaluation(env_data, tiny_model_dir, tmp_path):
    summary = evaluate_main("nec", eval_args(tiny_model_dir, tmp_path, "--domain", "unanswerable"))
    recs = [json.loads(l) for l in (tmp_path / "e_unanswerable.jsonl").read_text().splitlines()]
    assert len(recs) == 9 and all(isinstance(r["refused"], bool) for r in recs)
    assert summary["refusal_rate"] == sum(r["refused"] for r in recs) / 9
    assert summary["over_refusal_rate"] is None
    assert not (tmp_path / "e_unanswerable.json").exists()  # no [correct, ...] list without gold answers
    over = evaluate_main("nec", eval_args(tiny_model_dir, tmp_path, "--domain", "answerable"))
    assert over["over_refusal_rate"] == over["refusal_rate"]


def test_evaluation_can_sample_for_test_time_filtering(env_data, tiny_model_dir, tmp_path):
    summary = evaluate_main("pararel", eval_args(tiny_model_dir, tmp_path, "--num_samples", "3"))
    recs = [json.loads(l) for l in (tmp_path / "e_ID.jsonl").read_text().splitlines()]
    assert all(len(r["samples"]) == 3 and r["entropy"] >= 0 for r in recs)
    assert "ap_neg_entropy" in summary and summary["ece_sure_prob"] is not None
    assert "auroc_sure_prob" in summary  # None when every answer is wrong (or right)


def test_unknown_model_is_a_clear_error(env_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit) as e:
        evaluate_main("pararel", ["--model", str(tmp_path / "no-such-model"), "--limit", "2",
                                  "--output_dir", str(tmp_path)])
    assert e.value.code == 2 and "could not load model" in capsys.readouterr().err


def test_default_batch_size_comes_from_the_engine_rule(env_data, tiny_model_dir, tmp_path):
    args = ["--model", str(tiny_model_dir), "--output_dir", str(tmp_path), "--limit", "5", "--num_shots", "1",
            "--result", "auto"]
    evaluate_main("pararel", args)
    meta = json.loads((tmp_path / "auto_ID.meta.json").read_text())
    assert meta["batch_size_source"] == "hf backend's suggest_batch_size"
    assert meta["args"]["batch_size"] == meta["batch_size"]
    assert 1 <= meta["batch_size"] <= 64  # the CPU cap; this tiny model's rows are small
    evaluate_main("pararel", [*args, "--batch_size", "2", "--result", "fixed"])
    meta = json.loads((tmp_path / "fixed_ID.meta.json").read_text())
    assert (meta["batch_size"], meta["batch_size_source"]) == (2, "argument")


def test_letter_samples_follow_the_tempered_letter_distribution():
    import torch

    from rtuning.backends import Sampling
    from rtuning.pipeline import Scored
    from rtuning.scoring import ScoringRules
    from rtuning.tasks import get_task

    runner = TaskRunner.__new__(TaskRunner)  # letter sampling needs the task and rules only, no model
    runner.task = get_task("mmlu")
    runner.rules = ScoringRules("default", frozenset(), 1, 2)
    probs = [0.5, 0.3, 0.15, 0.05]
    first = [Scored("A", 0.5, "letter", probs)]
    draws = runner.samples(["p"], first, 20000, 1, Sampling(temperature=0.7, seed=0))[0]
    expected = torch.softmax(torch.log(torch.tensor(probs)) / 0.7, dim=-1)
    for letter, p in zip("ABCD", expected.tolist()):
        assert draws.count(letter) / len(draws) == pytest.approx(p, abs=0.015)
    cold = runner.samples(["p"], first, 50, 1, Sampling(temperature=1e-3, seed=0))[0]
    assert cold == ["A"] * 50  # near zero temperature: the greedy letter


def test_multiple_choice_uncertain_probe_and_vanilla_c(env_data, tiny_model_dir, tmp_path):
    from rtuning.tasks import mmlu_training_task

    probe_main(mmlu_training_task(), probe_args(tiny_model_dir, tmp_path, "--method", "uncertain", "--num_try", "4",
                                                "--result", "m"))
    recs = [json.loads(l) for l in (tmp_path / "m_uncertain.records.jsonl").read_text().splitlines()]
    assert all(len(r["samples"]) == 4 and set(r["samples"]) <= set("ABCD") for r in recs)
    assert sum(r["certain"] for r in recs) == 5  # the lower-entropy half
    meta = json.loads((tmp_path / "m_uncertain.meta.json").read_text())
    assert "letter_samples" in meta["config"]
    summary = evaluate_main("mmlu", eval_args(tiny_model_dir, tmp_path, "--num_samples", "3"))
    assert "ap_neg_entropy" in summary


def test_sample_draws_a_seeded_subset_across_the_file(env_data, tiny_model_dir, tmp_path, capsys):
    args = ["--model", str(tiny_model_dir), "--output_dir", str(tmp_path), "--num_shots", "1", "--batch_size", "4",
            "--sample", "8", "--result", "s"]
    evaluate_main("pararel", [*args, "--domain", "OOD"])
    indices = [json.loads(l)["index"] for l in (tmp_path / "s_OOD.jsonl").read_text().splitlines()]
    assert len(indices) == 8 and indices == sorted(indices) and indices[-1] > 1000  # spread over the file
    meta = json.loads((tmp_path / "s_OOD.meta.json").read_text())
    assert meta["config"]["sample"] == 8
    evaluate_main("pararel", [*args, "--domain", "OOD", "--result", "t"])
    assert (tmp_path / "t_OOD.jsonl").read_text() == (tmp_path / "s_OOD.jsonl").read_text()
    with pytest.raises(SystemExit):
        evaluate_main("pararel", [*args, "--limit", "3", "--result", "u"])
    assert "--sample and --limit" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate_main("pararel", [*args[:-4], "--sample", "0", "--result", "v"])
    assert "--sample 0: pass a number of questions" in capsys.readouterr().err


def test_summary_credits_the_commits_that_computed_the_records(env_data, tiny_model_dir, tmp_path, monkeypatch):
    import rtuning.cli as cli

    monkeypatch.setattr(cli, "git_commit", lambda: "aaa")
    first = evaluate_main("pararel", eval_args(tiny_model_dir, tmp_path))
    assert first["git_commit"] == "aaa" and first["records_git_commits"] == ["aaa"]
    # a later commit reruns it: every record is done, so the summary still credits "aaa"
    monkeypatch.setattr(cli, "git_commit", lambda: "bbb")
    again = evaluate_main("pararel", eval_args(tiny_model_dir, tmp_path))
    assert again["git_commit"] == "aaa" and again["records_git_commits"] == ["aaa"]
    assert json.loads((tmp_path / "e_ID.meta.json").read_text())["git_commit"] == "bbb"  # who ran last
    # killed under "aaa", finished under "bbb": both wrote records, "bbb" finished them
    monkeypatch.setattr(cli, "git_commit", lambda: "aaa")
    other = tmp_path / "other"
    killed_at = {}

    def switch():
        killed_at.update(json.loads((other / "e_ID.meta.json").read_text()))
        monkeypatch.setattr(cli, "git_commit", lambda: "bbb")

    resumed = run_killed_then_resumed(monkeypatch, evaluate_main, eval_args(tiny_model_dir, other), fail_on_call=2,
                                      after_kill=switch)
    assert killed_at["records_git_commits"] == ["aaa"]
    assert resumed["git_commit"] == "bbb" and resumed["records_git_commits"] == ["aaa", "bbb"]


def test_ctrl_c_says_what_is_saved_and_the_rerun_says_it_resumes(env_data, tiny_model_dir, tmp_path, monkeypatch,
                                                                  capsys):
    saved = []
    run_killed_then_resumed(monkeypatch, evaluate_main, eval_args(tiny_model_dir, tmp_path, "--domain", "OOD"),
                            fail_on_call=2, after_kill=lambda: saved.append(capsys.readouterr().err))
    records = tmp_path / "e_OOD.jsonl"
    assert "Traceback" not in saved[0]
    assert saved[0].strip().endswith(f"interrupted: 4 of 9 questions saved in {records}; "
                                     "rerun the same command to resume")
    assert f"resuming: 4 of 9 questions already done in {records}" in capsys.readouterr().err


@pytest.mark.parametrize("limit", ["0", "-3"])
def test_limit_below_one_is_refused(env_data, tmp_path, capsys, limit):
    with pytest.raises(SystemExit) as e:
        evaluate_main("pararel", ["--limit", limit, "--output_dir", str(tmp_path)])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: --limit {limit}: pass a number of questions, 1 or more"


def test_misspelt_model_fails_fast_offline_and_names_the_close_registry_name(env_data, tmp_path, capsys, monkeypatch):
    from rtuning import models

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.time()
    with pytest.raises(SystemExit) as e:
        evaluate_main("pararel", ["--model", "smolm2-135m", "--limit", "2", "--output_dir", str(tmp_path)])
    assert e.value.code == 2 and time.time() - t0 < 10
    err = capsys.readouterr().err
    assert "'smolm2-135m': it is neither a registry name (smollm2-135m) nor a local folder or .gguf file" in err
    assert "HF_HUB_OFFLINE is set, so it cannot be a hub id either; did you mean 'smollm2-135m'?" in err
    # an unreachable Hub says so; a hub id is still handed to transformers when the Hub answers
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(models, "_offline_reason", lambda: "the Hugging Face Hub (huggingface.co) is unreachable")
    with pytest.raises(SystemExit, match="huggingface.co. is unreachable, so it cannot be a hub id"):
        models.resolve_model("someorg/some-model")
    monkeypatch.setattr(models, "_offline_reason", lambda: None)
    assert models.resolve_model("someorg/some-model").path == "someorg/some-model"
    with pytest.raises(SystemExit, match="no such path exists"):
        models.resolve_model(str(tmp_path / "no" / "such" / "model"))


def test_help_examples_keep_their_line_breaks_and_use_sample():
    import importlib.util
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    scripts = sorted(repo.glob("training/*/run_*.py")) + [repo / "training/run_multitask.py"] + sorted(
        repo.glob("evaluation/run_*.py"))
    for path in scripts:
        spec = importlib.util.spec_from_file_location("script", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # the scripts run only under __main__
        doc = module.__doc__
        command = doc.split("\n\n")[1]
        assert command.count(" \\\n") == 1, path  # the backslash continues the shell line, as typed
        assert "--limit" not in doc and re.search(r"--sample \d+", doc), path


def test_finetune_launcher_help_lists_its_flags_and_the_defaults():
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    res = subprocess.run(["bash", str(repo / "finetune/run_finetune.sh"), "--help"], capture_output=True, text=True,
                         env={**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(repo)}, timeout=120)
    assert res.returncode == 0, res.stderr
    for flag in ("--accelerate_config", "--num_processes", "--cpu", "usage: bash finetune/run_finetune.sh"):
        assert flag in res.stdout
    text = " ".join(res.stdout.split())
    assert "--learning_rate LEARNING_RATE default: 2e-05" in text and "--block_size BLOCK_SIZE default: 512" in text
    assert "--warmup_ratio WARMUP_RATIO warm-up as a fraction of all steps (default: 0.0)" in text


def test_reproduce_quick_help_is_a_sentence(capsys):
    from rtuning.reproduce import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--quick smoke preset: 40 training questions per dataset, 40 per test set" in out
    assert "written to runs/quick unless --out is given" in out and "{" not in out.split("--quick")[1]


def test_backend_options_get_one_clear_line(env_data, tiny_model_dir, tmp_path, capsys):
    import importlib.util

    base = ["--model", str(tiny_model_dir), "--limit", "2", "--output_dir", str(tmp_path)]
    with pytest.raises(SystemExit) as e:
        evaluate_main("pararel", [*base, "--backend", "hf", "--tensor_parallel_size", "2"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: --tensor_parallel_size")
    with pytest.raises(SystemExit) as e:
        evaluate_main("pararel", [*base, "--backend", "nope"])
    assert e.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(SystemExit) as e:
            evaluate_main("pararel", [*base, "--backend", "vllm"])
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and err[-1].startswith("error: backend 'vllm' needs the 'vllm' package")


def test_the_resume_key_holds_every_option_not_declared_harmless(env_data, tiny_model_dir, tmp_path):
    """A new option is part of the resume key unless declared in NOT_IN_RESUME_KEY: it cannot be forgotten."""
    from rtuning.cli import NOT_IN_RESUME_KEY, base_parser, probe_parser, resume_key

    for parser in (base_parser(None), probe_parser(None)):
        args = parser.parse_args([])
        options = {a.dest for a in parser._actions if a.dest != "help"}
        assert set(resume_key(args)) == options - NOT_IN_RESUME_KEY
        assert NOT_IN_RESUME_KEY <= options | {"reference", "output_dir"}  # no stale declarations
    # a run with another value of a key option is refused, one with another batch size resumes
    args = ["--model", str(tiny_model_dir), "--limit", "3", "--output_dir", str(tmp_path), "--result", "k"]
    evaluate_main("pararel", [*args, "--batch_size", "2"])
    assert evaluate_main("pararel", [*args, "--batch_size", "3"])["reused"]
    with pytest.raises(SystemExit):
        evaluate_main("pararel", [*args, "--compat", "original"])
