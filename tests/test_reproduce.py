"""The study driver's quick preset on a tiny model, the report, and the baselines' pure parts."""

import json
from pathlib import Path

import pytest

from rtuning.reproduce import limit_for, parse_args, pretrain_threshold


def test_pretrain_threshold_separates_training_answers():
    recs = [{"confidence": c, "correct": k} for c, k in [(0.1, 0), (0.2, 0), (0.3, 1), (0.6, 1), (0.7, 1)]]
    assert pretrain_threshold(recs) == 0.2  # refuse <= 0.2: all five decisions right
    assert pretrain_threshold([{"confidence": 0.9, "correct": 0}]) == 0.9
    assert pretrain_threshold([]) == 0.5


def test_limits_per_dataset(capsys):
    a = parse_args(["--limit", "pararel=1200,mmlu=300", "--test_limit", "500"])
    assert (limit_for(a.limit, "pararel"), limit_for(a.limit, "mmlu"), limit_for(a.limit, "fever")) == (1200, 300, None)
    assert limit_for(a.test_limit, "mmlu") == 500 and limit_for(None, "mmlu") is None
    a = parse_args(["--test_limit", "pararel=1000,mmlu:OOD=2000"])  # one test set limited, the other whole
    assert (limit_for(a.test_limit, "mmlu", "OOD"), limit_for(a.test_limit, "mmlu", "ID")) == (2000, None)
    assert limit_for(a.test_limit, "pararel", "OOD") == 1000
    for bad in ("pararel=many", "0", "pararel=0", "=5"):
        with pytest.raises(SystemExit):
            parse_args(["--limit", bad])
    for flag, bad in (("--test_limit", "mmlu:ood=2000"), ("--test_limit", "mmmlu=100"), ("--limit", "pararell=5"),
                      ("--limit", "mmlu:ID=5")):  # a misspelt name must not silently mean "no limit"
        with pytest.raises(SystemExit):
            parse_args([flag, bad])
        assert f"{flag} {bad.partition('=')[0]}:" in capsys.readouterr().err
    for flag in ("--refusal_limit", "--num_try", "--vanilla_c_samples"):  # 0 would mean "all" or "none"
        with pytest.raises(SystemExit):
            parse_args([flag, "0"])
        assert "expected a whole number >= 1" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_study_and_report(tiny_model_dir, data_dir, tmp_path, monkeypatch):
    from rtuning.report import main as report
    from rtuning.reproduce import main as reproduce

    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    out = tmp_path / "study"
    args = ["--model", str(tiny_model_dir), "--quick", "--data_dir", str(data_dir), "--out", str(out),
            "--limit", "6", "--test_limit", "4", "--refusal_limit", "3", "--refusal_sets", "nec",
            "--checkpoint_steps", "1"]
    study = reproduce(args)
    methods = {r["method"] for r in study["results"]}
    assert methods == {"base", "vanilla", "unsure", "uncertain", "unknown"}
    assert {(r["dataset"], r["domain"]) for r in study["results"]} == {("pararel", "ID"), ("pararel", "OOD")}
    vanilla = next(r for r in study["results"] if r["method"] == "vanilla")
    assert "ap_neg_entropy" in vanilla  # Vanilla-C
    assert "pretrain_t_threshold" in next(r for r in study["results"] if r["method"] == "base")
    assert len(study["refusal"]) == 5 * 2
    # each model is evaluated as soon as it is tuned (a study stopped part way reports it)
    steps = [s["step"] for s in study["steps"]]
    assert steps.index("evaluate base on pararel ID") < steps.index("fine-tune pararel vanilla")
    for m in ("vanilla", "unsure", "uncertain", "unknown"):
        assert steps[steps.index(f"fine-tune pararel {m}") + 1] == f"evaluate pararel_{m} on pararel ID"
    models = out / "models"
    assert sorted(p.name for p in models.iterdir()) == ["pararel_uncertain", "pararel_unknown", "pararel_unsure",
                                                         "pararel_vanilla"]
    assert not list(models.glob("*/checkpoint-*"))  # written during training, removed once the model is saved
    # a rerun reuses every finished step: fine-tunes are skipped
    again = reproduce(args)
    tunes = [s for s in again["steps"] if s["step"].startswith("fine-tune")]
    assert len(tunes) == 4 and all(s["reused"] and s["wall_time_s"] == 0 and s["work_s"] > 0 for s in tunes)
    first = {s["step"]: s for s in study["steps"]}
    assert all(s["work_s"] == first[s["step"]]["work_s"] for s in tunes)  # the first run's time, kept
    # so is every probe's and evaluation's: checking that their records are all there is not work
    assert all(s.get("reused") and s["work_s"] == first[s["step"]]["work_s"] for s in again["steps"])
    assert not any(s.get("reused") for s in study["steps"])
    assert again["results"] == study["results"]
    # strict JSON: an undefined metric (here every AP: the tiny model gets nothing right) is null
    json.loads((out / "study.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in study.json"))
    # the study's history: both invocations, the first as it was recorded
    assert [r["complete"] for r in again["invocations"]] == [True, True]
    assert again["invocations"][0] == study["invocations"][0] and again["invocations"][0]["started"]
    page = tmp_path / "docs" / "results.md"
    report([str(out / "study.json"), "--page", str(page)])
    text = page.read_text()
    assert "## AP (%) by method" in text and "R-Tuning-U" in text and "The paper's claims, checked" in text
    # the refusal claims are decided by a paired bootstrap over the same questions
    claims = text.split("The paper's claims, checked")[1].split("## Plots")[0]
    assert "refuses unanswerable questions more than Vanilla (nec)" in claims and "95% CI" in claims
    assert "refuses unanswerable questions more than the answerable controls (nec)" in claims
    assert any(v in claims for v in ("| supported |", "| inconclusive |", "| contradicted |"))
    assert json.loads(page.with_suffix(".json").read_text())["model"] == str(tiny_model_dir)
    provenance = text.split("## Provenance")[1]
    assert provenance.count(f"`{again['git_commit'][:12]}`") >= 2 and "| 2 | 20" in provenance


def test_history_of_a_study_written_before_invocations_were_kept(tmp_path, capsys):
    from rtuning.reproduce import previous_invocations

    path = tmp_path / "study.json"
    assert previous_invocations(path) == []
    path.write_text(json.dumps({"command": "python -m rtuning.reproduce --datasets pararel", "git_commit": "abc",
                                "wall_time_s": 12.5, "complete": False, "results": []}))
    assert previous_invocations(path) == [{"started": None, "command": "python -m rtuning.reproduce --datasets "
                                           "pararel", "git_commit": "abc", "wall_time_s": 12.5, "complete": False}]
    path.write_text('{"command": ')  # unreadable: warned about, the new study goes on
    assert previous_invocations(path) == []
    assert "study.json is unreadable" in capsys.readouterr().err


def test_a_terminated_study_records_how_far_it_got(tiny_model_dir, data_dir, tmp_path, monkeypatch):
    import os
    import signal
    import time

    import rtuning.cli as cli
    from rtuning.reproduce import Terminated
    from rtuning.reproduce import main as reproduce

    real, calls = cli.evaluate_main, []

    def killed_on_second(*a, **k):
        calls.append(a)
        if len(calls) == 2:
            time.sleep(0.5)
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*a, **k)

    monkeypatch.setattr(cli, "evaluate_main", killed_on_second)
    out = tmp_path / "study"
    before = signal.getsignal(signal.SIGTERM)
    argv = ["--model", str(tiny_model_dir), "--data_dir", str(data_dir), "--out", str(out), "--methods",
            "vanilla", "--limit", "4", "--test_limit", "3", "--refusal_sets", ""]
    with pytest.raises(Terminated):
        reproduce(argv)
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is the study's only while it runs
    study = json.loads((out / "study.json").read_text())
    assert [(r["method"], r["domain"]) for r in study["results"]] == [("base", "ID")]
    last = study["invocations"][-1]
    assert last["complete"] is False and last["stopped"] == "Terminated" and last["wall_time_s"] >= 0.5
    # the recorded command is the study's own arguments, quoted so that it reruns as it ran
    import shlex
    assert shlex.split(last["command"])[1:] == ["-m", "rtuning.reproduce", *argv] and "--refusal_sets ''" in last["command"]
    from rtuning.report import main as report

    page = tmp_path / "results.md"
    report([str(out / "study.json"), "--page", str(page)])
    text = page.read_text()
    assert "| no (Terminated) |" in text.split("## Provenance")[1]
    # no refusal sets asked for: the page says so instead of printing empty refusal tables
    refusal = text.split("## Refusal on unanswerable questions")[1].split("## The paper's claims")[0]
    assert "named no set" in refusal and "refused% / over-refused%" not in refusal
    assert "paper (LLaMA-13B)" not in refusal
    # only the paper's numbers for the study's datasets; no claim without both models of a pair
    paper = text.split("## The paper's numbers beside ours")[1].split("## The paper's claims")[0]
    assert "| pararel | ID |" in paper and "| mmlu |" not in paper
    checked = text.split("## The paper's claims, checked")[1].split("## Plots")[0]
    assert "has not evaluated both models of any such pair" in checked and "| claim |" not in checked
    assert "Data files (SHA-256):\n\n- `pararel ID`" in text


def test_report_orders_datasets_as_the_study_names_them():
    from rtuning.report import in_study_order

    pairs = [("mmlu", "ID"), ("pararel", "OOD"), ("pararel", "ID"), ("mmlu", "OOD"), ("mmlu", "ID")]
    assert in_study_order({"args": {"datasets": "pararel,mmlu"}}, pairs) == [
        ("pararel", "ID"), ("pararel", "OOD"), ("mmlu", "ID"), ("mmlu", "OOD")]


def test_report_orders_refusal_sets_as_the_study_names_them():
    from rtuning.report import refusal_sets_in_order

    study = {"args": {"refusal_sets": "selfaware,falseqa,nec"},
             "refusal": [{"dataset": s} for s in ("nec", "falseqa", "selfaware", "falseqa")]}
    assert refusal_sets_in_order(study) == ["selfaware", "falseqa", "nec"]


def test_calibration_claim_shows_discrimination_beside_ece(tmp_path):
    """A p(sure) at the base rate everywhere wins on ECE while ranking nothing: the claim says so."""
    from rtuning.report import claims, sure_auroc

    correct = [1, 0, 0, 0] * 25

    def row(method, sure, with_auroc):
        path = tmp_path / f"{method}.jsonl"
        path.write_text("".join(json.dumps({"index": i, "correct": c, "answer_conf": 0.5, "sure_prob": p}) + "\n"
                                for i, (c, p) in enumerate(zip(correct, sure))))
        r = {"method": method, "dataset": "mmlu", "domain": "ID", "records_file": str(path),
             "ece_sure_prob": 0.0 if method == "unsure" else 0.7}
        return {**r, "auroc_sure_prob": 0.5} if with_auroc else r  # older summaries lack it

    unsure = row("unsure", [0.25] * 100, with_auroc=False)
    vanilla = row("vanilla", [0.9 if c else 0.95 for c in correct], with_auroc=True)
    assert sure_auroc(unsure) == pytest.approx(0.5) and sure_auroc(vanilla) == 0.5
    assert sure_auroc(row("x", [0.9 if c else 0.1 for c in correct], with_auroc=False)) == pytest.approx(1.0)
    study = {"args": {"datasets": "mmlu"}, "results": [unsure, vanilla], "refusal": []}
    ece = [c for c in claims(study, {}) if "ECE (mmlu ID)" in c[0]]
    assert len(ece) == 1 and "AUROC of p(sure) 0.500 vs 0.500" in ece[0][1] and ece[0][2] == "supported"


def test_report_without_the_papers_numbers_for_the_study_datasets(tmp_path):
    """A study of datasets the paper's quoted AP table does not cover says so instead of a table of dashes."""
    from rtuning.report import render

    study = {"model": "m", "results": [], "refusal": [], "steps": [], "environment": {}, "wall_time_s": 0.0,
             "out": str(tmp_path), "args": {"datasets": "wice,fever", "limit": None, "test_limit": None,
                                             "refusal_limit": None, "epochs": 1.0, "learning_rate": 2e-5,
                                             "train_batch_size": 4, "seed": 42, "vanilla_c_samples": 5}}
    text = render(study, tmp_path / "results.md")
    paper = text.split("## The paper's numbers beside ours")[1].split("## The paper's claims")[0]
    assert "cover none of this study's datasets (wice, fever)" in paper and "| paper model |" not in paper


def test_a_fine_tune_resumes_only_checkpoints_of_its_own_settings(tmp_path, monkeypatch, capsys):
    import subprocess

    import rtuning.reproduce as rep

    data = tmp_path / "train.json"
    data.write_text(json.dumps({"type": "text_only", "instances": [{"text": "Q A. I am sure."}]}))
    seen = []

    def launcher(cmd, check, env):  # notes what the fine-tune would find to resume from
        out = Path(cmd[cmd.index("--output_model_path") + 1])
        seen.append(sorted(c.name for c in out.glob("checkpoint-*")))
        (out / "finetune_args.json").write_text(json.dumps({"wall_time_s": 1.0}))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(rep.subprocess, "run", launcher)
    study = lambda dtype: rep.Study(rep.parse_args(["--out", str(tmp_path / "s"), "--finetune_dtype", dtype,
                                                    "--checkpoint_steps", "50"]), [])
    target, _, bf16_key = study("bf16").finetune_plan("pararel", "vanilla", data)

    def killed_at_step_50(key):
        (target / "checkpoint-50").mkdir(parents=True)
        (target / "study_key_started.txt").write_text(key)
        (target / "study_key.txt").unlink(missing_ok=True)

    killed_at_step_50(bf16_key)
    study("bf16").finetune("pararel", "vanilla", data)  # the same settings: resumed at step 50
    assert seen[-1] == ["checkpoint-50"] and "other settings" not in capsys.readouterr().err
    killed_at_step_50(bf16_key)
    study("fp32").finetune("pararel", "vanilla", data)  # another precision: not bf16's checkpoint
    assert seen[-1] == [] and "checkpoint-50 in" in capsys.readouterr().err
    assert (target / "study_key_started.txt").read_text() == study("fp32").finetune_plan("pararel", "vanilla", data)[2]
    # a folder from before the settings were recorded: its checkpoints are trusted, as they were
    (target / "study_key.txt").unlink()
    (target / "study_key_started.txt").unlink()
    (target / "checkpoint-100").mkdir()
    study("fp32").finetune("pararel", "vanilla", data)
    assert seen[-1] == ["checkpoint-100"]


def test_quick_studies_get_their_own_folder():
    from rtuning.reproduce import parse_args

    assert parse_args(["--quick"]).out == "runs/quick"
    assert parse_args([]).out == "runs/study"
    assert parse_args(["--quick", "--out", "runs/x"]).out == "runs/x"


def empty_study(tmp_path, name: str, started: str) -> Path:
    study = {"model": "m", "results": [], "refusal": [], "steps": [], "environment": {}, "wall_time_s": 0.0,
             "git_commit": "c0ffee", "invocations": [{"started": started, "command": "x", "complete": True}],
             "args": {"datasets": "wice", "limit": None, "test_limit": None, "refusal_limit": None, "epochs": 1.0,
                      "learning_rate": 2e-5, "train_batch_size": 4, "seed": 42, "vanilla_c_samples": 5}}
    path = tmp_path / name / "study.json"
    path.parent.mkdir()
    path.write_text(json.dumps(study))
    return path


def test_report_refuses_to_overwrite_a_page_made_from_another_study(tmp_path, capsys):
    from rtuning.report import main as report

    full, quick = empty_study(tmp_path, "study", "2026-01-01T00:00:00Z"), empty_study(tmp_path, "quick", "2026-02-02T00:00:00Z")
    page = tmp_path / "docs" / "results.md"
    report([str(full), "--page", str(page)])
    first = page.read_text()
    assert first.startswith(f"<!-- rtuning.report study: model m, started 2026-01-01T00:00:00Z | {full} -->\n# Results")
    report([str(full), "--page", str(page)])  # the same study, reported again: fine
    with pytest.raises(SystemExit) as e:
        report([str(quick), "--page", str(page)])
    assert e.value.code == 1 and page.read_text() == first
    err = capsys.readouterr().err
    assert f"error: {page} was made from another study (model m, started 2026-01-01T00:00:00Z), not from {quick}" in err
    assert "pass --overwrite to replace it" in err
    report([str(quick), "--page", str(page), "--overwrite"])
    assert "started 2026-02-02T00:00:00Z" in page.read_text().splitlines()[0]
    # a page from before the stamps is recognised by the JSON summary beside it
    page.write_text(page.read_text().split("\n", 1)[1])
    report([str(quick), "--page", str(page)])
    page.with_suffix(".json").unlink()
    page.write_text("# my own notes\n")
    with pytest.raises(SystemExit):
        report([str(quick), "--page", str(page)])
    assert "no study this report knows" in capsys.readouterr().err and page.read_text() == "# my own notes\n"
