"""evaluation/calculate_ap.py on our files, the original's and forks' (extra fields), and wrong inputs."""

import json
import subprocess
import sys

import pytest
from sklearn.metrics import average_precision_score

from conftest import REPO

sys.path.insert(0, str(REPO / "evaluation"))
from calculate_ap import main  # noqa: E402

from rtuning.metrics import aurc, brier_score, mixed_score  # noqa: E402

ROWS = [[1, 0.9, 0.8], [0, 0.2, 0.7], [1, 0.4, 0.3], [0, 0.6, 0.1], [1, 0.7, 0.9]]


def write(tmp_path, name, obj):
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return str(path)


def test_table_has_acc_at_answered_and_the_new_metrics(tmp_path, capsys):
    row = main(["--result", write(tmp_path, "r.json", ROWS)])
    out = capsys.readouterr().out
    for header in ("AP%", "acc@ans%", "Brier", "AURC", "eff.rel."):
        assert header in out
    correct, conf, sure = zip(*ROWS)
    assert row["ap"] == pytest.approx(average_precision_score(correct, mixed_score(conf, sure)))
    # answered (p(sure) > 0.5): rows 0, 1, 4, two of them right
    assert row["accuracy_answered"] == pytest.approx(2 / 3) and f"{100 * 2 / 3:.2f}" in out
    assert row["brier_sure_prob"] == pytest.approx(brier_score(correct, sure))
    assert row["aurc"] == pytest.approx(aurc(correct, mixed_score(conf, sure)))
    # abstained (p(sure) < 0.5): rows 2 (right) and 3 (wrong); answered: 2 right, 1 wrong
    assert row["effective_reliability"] == pytest.approx((2 - 1) / 5)
    assert f"{row['brier_sure_prob']:.3f}" in out and f"{row['aurc']:.3f}" in out


def test_rows_with_extra_fields_read_their_first_three(tmp_path, capsys):
    plain = main(["--result", write(tmp_path, "plain.json", ROWS)])
    fork = main(["--result", write(tmp_path, "fork.json", [r + ["Paris", 0.5, {"x": 1}] for r in ROWS])])
    assert {k: v for k, v in fork.items() if k != "file"} == {k: v for k, v in plain.items() if k != "file"}


def test_full_precision_prints_the_ap_digit_for_digit(tmp_path, capsys):
    a, b = write(tmp_path, "a.json", ROWS), write(tmp_path, "b.json", [[0, 0.3, 0.6], [1, 0.2, 0.1], [0, 0.9, 0.2]])
    main(["--precision", "full", "--result", a, b])
    lines = capsys.readouterr().out.splitlines()
    expected = [average_precision_score([r[0] for r in rows], [0.5 * r[1] + 0.5 * r[2] for r in rows])
                for rows in (ROWS, [[0, 0.3, 0.6], [1, 0.2, 0.1], [0, 0.9, 0.2]])]
    assert lines == [repr(x) for x in expected]  # what print(ap) shows after sklearn


def test_no_correct_answer_prints_the_originals_zero_with_a_note(tmp_path, capsys):
    path = write(tmp_path, "none.json", [[0, 0.3, 0.6], [0, 0.8, 0.2]])
    row = main(["--precision", "full", "--result", path])
    captured = capsys.readouterr()
    assert captured.out == "0.0\n"
    assert "no correct answer" in captured.err and "0.0" in captured.err
    assert row["ap"] is None  # undefined in what it returns, 0.0 only where printed
    main(["--result", path])
    captured = capsys.readouterr()
    assert "0.00" in captured.out.splitlines()[2] and "no correct answer" in captured.err


def fails(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    return str(e.value.code)


def test_an_lmflow_training_file_is_named_as_such(tmp_path, capsys):
    path = write(tmp_path, "train.json", {"type": "text_only", "instances": [{"text": "Question: ..."}]})
    msg = fails(["--result", path], capsys)
    assert msg.startswith("error: ") and "this is an LMFlow training file" in msg and "not a results file" in msg


def test_other_wrong_inputs_are_one_line(tmp_path, capsys):
    short = fails(["--result", write(tmp_path, "short.json", [[1, 0.5]])], capsys)
    assert "record 0" in short and "short.json" in short
    assert "got a dict" in fails(["--result", write(tmp_path, "summary.json", {"ap": 0.5})], capsys)
    records = tmp_path / "r.jsonl"
    records.write_text('{"index": 0}\n{"index": 1}\n')
    assert ".json results file" in fails(["--result", str(records)], capsys)
    assert "missing.json" in fails(["--result", str(tmp_path / "missing.json")], capsys)


def test_script_runs_from_the_command_line(tmp_path):
    out = subprocess.run([sys.executable, "evaluation/calculate_ap.py", "--result", write(tmp_path, "r.json", ROWS)],
                         cwd=REPO, capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0 and "AURC" in out.stdout, out.stderr
