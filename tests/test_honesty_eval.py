"""The honesty metrics in the evaluation: summary, table, --reference and its errors, refusal pairs."""

import json

import pytest

from conftest import save_tiny_llama
from rtuning.cli import evaluate_main
from rtuning.metrics import honesty_metrics


def args(model_dir, out, result, *extra):
    return ["--model", str(model_dir), "--output_dir", str(out), "--limit", "9", "--batch_size", "4",
            "--result", result, *extra]


def records(path):
    return [json.loads(l) for l in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def tuned_model_dir(tmp_path_factory, bpe_tokenizer):
    """Another tiny model (other weights) standing in for a tuned one."""
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-tuned"), bpe_tokenizer, seed=1)


def test_summary_and_table_carry_the_new_metrics(env_data, tiny_model_dir, tmp_path, capsys):
    summary = evaluate_main("pararel", args(tiny_model_dir, tmp_path, "base", "--domain", "OOD"))
    table = capsys.readouterr().out
    assert "Brier" in table and "AURC" in table and "eff.rel." in table and "THS" not in table
    saved = json.loads((tmp_path / "base_OOD.summary.json").read_text())
    expected = honesty_metrics(records(tmp_path / "base_OOD.jsonl"))
    for key in ("brier_sure_prob", "aurc", "selective_accuracy_50", "selective_accuracy_80", "reliable_accuracy",
                "effective_reliability", "abstain_accuracy", "abstain_precision", "abstain_recall", "abstain_ece"):
        assert key in saved and saved[key] == expected[key] == summary[key]
    assert "honesty" not in saved and "ths" not in saved  # no reference, no quadrants


def test_reference_adds_the_quadrant_metrics(env_data, tiny_model_dir, tuned_model_dir, tmp_path, capsys):
    evaluate_main("pararel", args(tiny_model_dir, tmp_path, "base", "--domain", "OOD"))
    ref = tmp_path / "base_OOD.jsonl"
    capsys.readouterr()
    summary = evaluate_main("pararel", args(tuned_model_dir, tmp_path, "tuned", "--domain", "OOD",
                                            "--reference", str(ref)))
    assert "THS" in capsys.readouterr().out
    saved = json.loads((tmp_path / "tuned_OOD.summary.json").read_text())
    expected = honesty_metrics(records(tmp_path / "tuned_OOD.jsonl"), records(ref))
    for key in ("ik_ik", "ik_idk", "idk_ik", "idk_idk", "truthful_rate", "over_conservativeness", "prudence",
                "honesty", "ths", "knowledge_cells"):
        assert key in saved and saved[key] == expected[key]
    assert sum(saved["knowledge_cells"].values()) == 9 and saved["reference_records"] == str(ref)
    # against itself the base model gains nothing
    itself = evaluate_main("pararel", args(tiny_model_dir, tmp_path, "base", "--domain", "OOD", "--reference", str(ref)))
    assert itself["ths"] in (None, pytest.approx(0.0))


def fails(capsys, argv, task="pararel"):
    with pytest.raises(SystemExit) as e:
        evaluate_main(task, argv)
    assert e.value.code == 2
    # (the model's loading messages come before it; the error is one line)
    errors = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error: ")]
    assert len(errors) == 1
    return errors[0]


def test_a_bad_reference_is_one_clear_line(env_data, tiny_model_dir, tmp_path, capsys):
    evaluate_main("pararel", args(tiny_model_dir, tmp_path, "base", "--domain", "ID"))
    evaluate_main("nec", args(tiny_model_dir, tmp_path, "nec", "--domain", "unanswerable"))
    capsys.readouterr()
    ood = args(tiny_model_dir, tmp_path / "out", "t", "--domain", "OOD", "--reference")
    # the ID split's records: other questions under the same indices
    err = fails(capsys, ood + [str(tmp_path / "base_ID.jsonl")])
    assert "base_ID.jsonl" in err and "another dataset or split" in err
    # a refusal set's records have no correctness
    err = fails(capsys, ood + [str(tmp_path / "nec_unanswerable.jsonl")])
    assert "nec_unanswerable.jsonl" in err and "'correct'" in err
    # the results list, not the records
    err = fails(capsys, ood + [str(tmp_path / "base_ID.json")])
    assert "base_ID.json" in err and "records" in err
    err = fails(capsys, ood + [str(tmp_path / "missing.jsonl")])
    assert "missing.jsonl" in err
    # fewer questions than evaluated (a --limit 3 reference)
    short = tmp_path / "short.jsonl"
    short.write_text("".join(l + "\n" for l in (tmp_path / "base_ID.jsonl").read_text().splitlines()[:3]))
    err = fails(capsys, args(tiny_model_dir, tmp_path / "out", "t", "--reference", str(short)))
    assert "short.jsonl: no record for question 3" in err
    err = fails(capsys, args(tiny_model_dir, tmp_path / "out", "t", "--domain", "answerable", "--reference",
                             str(tmp_path / "base_ID.jsonl")), task="nec")
    assert "refusal set" in err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.summary.json"))


def test_refusal_pair_gives_abstention_precision_recall_f1(env_data, tiny_model_dir, tmp_path, capsys):
    first = evaluate_main("nec", args(tiny_model_dir, tmp_path, "e", "--domain", "unanswerable"))
    assert "abstention_f1" not in first  # the controls are not evaluated yet
    second = evaluate_main("nec", args(tiny_model_dir, tmp_path, "e", "--domain", "answerable"))
    assert "abst.F1" in capsys.readouterr().out
    expected = honesty_metrics(records(tmp_path / "e_unanswerable.jsonl"),
                               controls=records(tmp_path / "e_answerable.jsonl"))
    for key in ("abstention_precision", "abstention_recall", "abstention_f1"):
        assert second[key] == expected[key]
    unanswerable = records(tmp_path / "e_unanswerable.jsonl")
    controls = records(tmp_path / "e_answerable.jsonl")
    refused_right = sum(r["refused"] for r in unanswerable)
    refused = refused_right + sum(r["refused"] for r in controls)
    assert second["abstention_recall"] == refused_right / 9
    assert second["abstention_precision"] == (refused_right / refused if refused else None)
