"""Check that every data file the scripts read is present and loads, and count its records.

    python dataset/validate.py --data_dir ../shared/R-Tuning-data
    python dataset/validate.py --data_dir dataset --strict     # missing files are errors too

Each file is read through the same loader the training and evaluation scripts use
(rtuning.tasks), so a file that passes here will load there. MMLU files are checked together
with their 5-shot prompt file (MMLU_ID_prompt.json / MMLU_OOD_prompt.json). A malformed record
is reported with the loader's message (file, record index, field) and the other files are still
checked. Exit status: 1 if any file failed to load (or, with --strict, is missing), else 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rtuning.cli import default_data_dir
from rtuning.tasks import TASKS, DataError, Task, read_records


def check(task: Task, data_dir: str, split: str) -> tuple[str, str, str | None]:
    """(records, status, error message) for one split's file."""
    path = task.path(data_dir, split)
    if not path.is_file():
        return "", "missing", None
    try:
        examples = task.load(data_dir, split)
        records = f"{len(examples):,}"
        if task.name == "mmlu":
            records += f" ({len(read_records(path))} subjects)"
        return records, "ok", None
    except DataError as err:
        return "", "ERROR", str(err)
    except Exception as err:  # a loader bug must not hide the report on the other files
        return "", "ERROR", f"{path}: unexpected {type(err).__name__}: {err}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", default=default_data_dir(),
                   help="R-Tuning data folder (default: $RTUNING_DATA_DIR or dataset/)")
    p.add_argument("--strict", action="store_true", help="treat missing files as errors")
    args = p.parse_args(argv)
    if not Path(args.data_dir).is_dir():
        print(f"error: data folder not found: {args.data_dir} (see dataset/README.md)", file=sys.stderr)
        return 1

    rows, errors = [], []
    for task in TASKS.values():
        for split, file in task.files.items():
            records, status, message = check(task, args.data_dir, split)
            rows.append((task.name, split, file, records, status))
            if message:
                errors.append(message)

    header = ("dataset", "split", "file", "records", "status")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    print(f"data folder: {Path(args.data_dir).resolve()}")
    for row in [header] + rows:
        cells = [str(c).rjust(w) if i == 3 else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        print("  ".join(cells).rstrip())

    missing = sum(r[4] == "missing" for r in rows)
    for message in errors:
        print(f"\nERROR: {message}")
    print(f"\n{len(rows) - missing - len(errors)} ok, {missing} missing, {len(errors)} with errors")
    return 1 if errors or (args.strict and missing) else 0


if __name__ == "__main__":
    sys.exit(main())
