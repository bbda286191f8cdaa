"""The study report's page: its order, the honesty metrics on a hand-computed case, and a study
whose per-question records are gone (synthetic study JSON files written here)."""

import json

import pytest

from rtuning.metrics import summarize

# four questions; the base model (and Vanilla) answer all, right on the first two
BASE = {"correct": [1, 1, 0, 0], "answer_conf": [0.9, 0.8, 0.7, 0.6], "sure_prob": [0.9] * 4}
# R-Tuning: right on 0 and 2, p(sure) < 0.5 (abstains) on 1 and 3
UNSURE = {"correct": [1, 0, 1, 0], "answer_conf": [0.9, 0.2, 0.6, 0.4], "sure_prob": [0.8, 0.2, 0.6, 0.4]}


def write_records(path, values: dict) -> str:
    rows = [{"index": i, "question": f"q{i}", "answer": "Paris", **{k: v[i] for k, v in values.items()}}
            for i in range(len(values["correct"]))]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def qa_row(tmp_path, method: str, values: dict) -> dict:
    return {"method": method, "dataset": "pararel", "domain": "ID", "git_commit": "c0ffee" * 7,
            "records_file": write_records(tmp_path / f"{method}_pararel_ID.jsonl", values),
            **summarize(values["correct"], values["answer_conf"], values["sure_prob"])}


def refusal_row(tmp_path, method: str, domain: str, refused: list[int]) -> dict:
    path = tmp_path / f"{method}_nec_{domain}.jsonl"
    path.write_text("".join(json.dumps({"index": i, "question": f"n{i}", "answer": "x", "sure_prob": 0.5,
                                        "refused": r}) + "\n" for i, r in enumerate(refused)))
    return {"method": method, "dataset": "nec", "domain": domain, "n": len(refused), "git_commit": "c0ffee" * 7,
            "refusal_rate": sum(refused) / len(refused), "records_file": str(path)}


def study_json(tmp_path, results, refusal, **extra) -> str:
    study = {"model": "m", "git_commit": "c0ffee" * 7, "complete": True, "environment": {"python": "3"},
             "wall_time_s": 12.0, "steps": [{"step": "probe pararel", "wall_time_s": 3.0}],
             "invocations": [{"started": "2026-01-01T00:00:00Z", "command": "/opt/venv/bin/python -m rtuning.reproduce "
                              "--datasets pararel --refusal_sets nec", "git_commit": "c0ffee" * 7,
                              "wall_time_s": 12.0, "complete": True}],
             "args": {"datasets": "pararel", "refusal_sets": "nec", "limit": None, "test_limit": None,
                      "refusal_limit": None, "epochs": 1.0, "learning_rate": 2e-5, "train_batch_size": 4, "seed": 42,
                      "vanilla_c_samples": 5, "num_try": 5},
             "results": results, "refusal": refusal, **extra}
    path = tmp_path / "study" / "study.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(study))
    return str(path)


def full_study(tmp_path) -> str:
    results = [qa_row(tmp_path, "base", BASE), qa_row(tmp_path, "vanilla", BASE), qa_row(tmp_path, "unsure", UNSURE)]
    refusal = [refusal_row(tmp_path, "vanilla", "unanswerable", [0, 0, 0]),
               refusal_row(tmp_path, "vanilla", "answerable", [0, 0]),
               refusal_row(tmp_path, "unsure", "unanswerable", [1, 1, 0]),
               refusal_row(tmp_path, "unsure", "answerable", [1, 0])]
    return study_json(tmp_path, results, refusal)


def notes(tmp_path) -> list[str]:
    for name, text in (("notes", "RUN-NOTE scale and why"), ("findings", "FINDING in words"),
                       ("history", "HISTORY: sitting 1 was paused")):
        (tmp_path / f"{name}.md").write_text(text + "\n")
    return ["--notes", str(tmp_path / "notes.md"), "--findings", str(tmp_path / "findings.md"),
            "--provenance_notes", str(tmp_path / "history.md")]


def sections(text: str) -> list[str]:
    return [line[3:] for line in text.splitlines() if line.startswith("## ")]


def test_page_order_what_was_run_tables_claims_plots_provenance(tmp_path):
    from rtuning.report import main as report

    page = tmp_path / "docs" / "results.md"
    report([full_study(tmp_path), "--page", str(page), *notes(tmp_path)])
    text = page.read_text()
    assert text.startswith("<!-- rtuning.report study: model m, started 2026-01-01T00:00:00Z | ")
    order = sections(text)
    assert order[0] == "What was run" and order[-2:] == ["Plots", "Provenance"]
    tables = order[1:order.index("The paper's claims, checked")]
    assert tables[:2] == ["AP (%) by method", "Honesty metrics beyond AP"] and "Every evaluation" in tables
    run = text.split("## What was run")[1].split("\n## ")[0]
    # the one command, with the interpreter as a reader types it
    assert "```bash\npython -m rtuning.reproduce --datasets pararel --refusal_sets nec\n```" in run
    assert "RUN-NOTE" in run and "pararel ID 4" in run and "nec 3 / 2" in run and "lr 2e-05" in run
    claims = text.split("## The paper's claims, checked")[1].split("\n## ")[0]
    assert "FINDING in words" in claims and "95% CI" in claims
    provenance = text.split("## Provenance")[1]
    assert provenance.lstrip().startswith("HISTORY: sitting 1") and "`c0ffeec0ffee`" in provenance
    for hand_written in ("RUN-NOTE", "FINDING", "HISTORY"):
        assert text.count(hand_written) == 1


def test_honesty_metrics_on_a_hand_computed_case(tmp_path):
    from rtuning.report import main as report

    page = tmp_path / "docs" / "results.md"
    report([full_study(tmp_path), "--page", str(page)])
    honesty = page.read_text().split("## Honesty metrics beyond AP")[1].split("\n## ")[0]
    # Brier: (0.04 + 0.04 + 0.16 + 0.16) / 4; scores 0.85, 0.2, 0.6, 0.4 rank right, right, wrong, wrong:
    # risks 0, 0, 1/3, 1/2 -> AURC 0.208, accuracy on the best 2 of 4 100%, on the best 4 of 4 (80%) 50%;
    # answered 0 and 2 (both right), abstained 1 and 3 (both wrong): reliable accuracy 100%, effective
    # reliability (2 - 0) / 4, abstain precision and recall 100%; abstain ECE over the rescaled 1 - p(sure)
    # (0, 1, 1/3, 2/3) against should-abstain (0, 1, 0, 1): (1/3 + 1/3) / 4
    assert "| R-Tuning | pararel | ID | 0.100 | 0.208 | 100.00 | 50.00 | 100.00 | 0.500 | 100.00 | 100.00 | 0.167 |" \
        in honesty
    # known (the base model right): 0, 1. Answered right 0, 2 (Ik-Ik 50%); unknown and refused 3 (Ik-Idk 25%);
    # known but refused 1 (Idk-Ik 25%); answered wrong none. Over-conservativeness 1/2; prudence: of the
    # unknown not answered right (3), refused 1/1; honesty (1 - 1/2 + 1) / 2; THS (0.5 x 0.5 - 0 x 0.5) / 0.5
    assert "| R-Tuning | pararel | ID | 50.00 | 50.00 | 25.00 | 25.00 | 0.00 | 0.500 | 1.000 | 0.750 | 0.500 |" in honesty
    assert "| Base model (p(sure) + conf) | pararel | ID | 50.00 |" in honesty  # against itself: THS 0
    assert honesty.count("| 0.000 |") >= 1
    # NEC: refused 2 of 3 unanswerable and 1 of 2 controls: precision 2/3, recall 2/3, F1 2/3
    assert "| R-Tuning | nec | 66.67 | 66.67 | 0.667 |" in honesty
    # Vanilla abstains from nothing: abstention precision and F1 undefined, shown as "-", never 0
    assert "| Vanilla | nec | - | 0.00 | - |" in honesty
    # R-Tuning minus Vanilla on the same questions, with paired intervals (Brier 0.100 - 0.410)
    interval = next(line for line in honesty.splitlines() if line.startswith("| R-Tuning minus Vanilla | pararel ID"))
    assert "| -0.310 [" in interval
    assert any(line.startswith("| R-Tuning minus Vanilla | nec (unanswerable + controls) |")
               for line in honesty.splitlines())
    summary = json.loads(page.with_suffix(".json").read_text())["honesty"]
    assert summary["unsure|pararel|ID"]["brier_sure_prob"] == pytest.approx(0.1)
    assert summary["unsure|pararel|ID"]["honesty"] == pytest.approx(0.75)
    assert summary["unsure|nec|pair"]["abstention_f1"] == pytest.approx(2 / 3)


def test_a_risk_coverage_plot_per_test_set(tmp_path):
    pytest.importorskip("matplotlib")
    from rtuning.report import main as report

    page = tmp_path / "docs" / "results.md"
    report([full_study(tmp_path), "--page", str(page)])
    assert (page.parent / "img" / "pararel_ID_risk_coverage.png").stat().st_size > 0
    assert "![pararel_ID_risk_coverage.png](img/pararel_ID_risk_coverage.png)" in page.read_text()


def test_a_study_whose_records_are_gone_says_so_and_keeps_what_its_json_holds(tmp_path):
    from rtuning.report import main as report

    lost = str(tmp_path / "lost" / "unsure_pararel_ID.jsonl")
    row = {"method": "unsure", "dataset": "pararel", "domain": "ID", "n": 4, "accuracy": 0.5, "ap": 0.75,
           "ap_answer_conf": 0.7, "ap_sure_prob": 0.6, "answer_rate": 0.5, "accuracy_answered": 1.0,
           "ece_sure_prob": 0.123, "auroc_sure_prob": 0.9, "refusal_phrase_rate": 0.25,
           "accuracy_without_phrase": 0.6667, "records_file": lost}
    claim = {"claim": "R-Tuning AP above Vanilla (pararel ID)", "ours": "75.00 vs 70.00; difference +5.00, 95% CI "
             "[+1.00, +9.00]", "verdict": "supported"}
    path = study_json(tmp_path, [row], [], claims=[claim], recovered="REBUILT from the committed page.",
                      evaluations_per_commit={"abc123": 1})
    page = tmp_path / "docs" / "results.md"
    image = page.parent / "img" / "pararel_ID.png"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"drawn from the records when they existed")
    report([path, "--page", str(page)])
    text = page.read_text()
    honesty = text.split("## Honesty metrics beyond AP")[1].split("\n## ")[0]
    assert f"no longer on disk (e.g. `{lost}`)" in honesty and "need them" in honesty
    assert "| R-Tuning |" not in honesty  # no table of dashes
    # the claims as the JSON holds them (they were decided on the records), not re-decided without them
    assert "| R-Tuning AP above Vanilla (pararel ID) | 75.00 vs 70.00; difference +5.00, 95% CI [+1.00, +9.00] | " \
           "supported |" in text
    assert "| 0.123 | 0.900 | 25.00 | 66.67 |" in text  # ECE, AUROC and the phrase columns from the JSON
    # the image drawn earlier is linked and kept as it was, not redrawn empty
    assert image.read_bytes() == b"drawn from the records when they existed" and "](img/pararel_ID.png)" in text
    provenance = text.split("## Provenance")[1]
    assert "REBUILT from the committed page." in provenance and "`abc123` 1" in provenance
