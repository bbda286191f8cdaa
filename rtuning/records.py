"""Run trail and resume: per-example JSONL appended as computed, plus a metadata JSON."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable

REPO_ROOT = Path(__file__).resolve().parent.parent


class RunConflict(Exception):
    """Existing outputs were made with different settings; we refuse to mix them."""


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_commit() -> str | None:
    """HEAD of the project checkout, with '-dirty' when it has uncommitted changes."""
    try:
        head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def environment() -> dict:
    import torch
    import transformers

    return {"python": sys.version.split()[0], "torch": torch.__version__,
            "transformers": transformers.__version__, "platform": platform.platform()}


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_json(path: Path, obj) -> None:
    """Write atomically: a crash never leaves a half-written file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


def write_jsonl(path: Path, records: Iterable[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSONL file; a torn last line (a killed write) is dropped."""
    out = []
    if not path.is_file():
        return out
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise RunConflict(f"{path}: line {i + 1} is not valid JSON; delete the file or pass --overwrite")
    return out


class RunStore:
    """Per-example results of one run, keyed by example index, resumable.

    `config` holds every setting that changes the results; a rerun with the same config
    continues from the records already on disk, a different one is refused. In a
    data-parallel run each process appends to its own part file (`{records}.rank{r}`); every
    process sees the records of all parts, and the main process merges them at the end.
    """

    def __init__(self, records_path: Path, meta_path: Path, config: dict, overwrite: bool = False,
                 rank: int = 0, world: int = 1):
        self.records_path, self.meta_path = Path(records_path), Path(meta_path)
        self.config = json.loads(json.dumps(config))  # normalise tuples etc. as stored
        self.rank, self.world = rank, world
        if overwrite:
            for p in (self.records_path, self.meta_path, *self._parts()):
                p.unlink(missing_ok=True)
        self.meta: dict = {}
        if self.meta_path.is_file():
            self.meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
            old = self.meta.get("config", {})
            if old != self.config:
                diff = sorted(k for k in set(old) | set(self.config) if old.get(k) != self.config.get(k))
                raise RunConflict(
                    f"{self.meta_path} was written with different settings ({', '.join(diff)}); "
                    "pass --overwrite to start over, or another --result name to keep both"
                )
        elif self.records_path.is_file() or self._parts():
            raise RunConflict(f"{self.records_path} exists without {self.meta_path.name}; pass --overwrite")
        self.append_path = (self.records_path if world == 1
                            else self.records_path.with_name(f"{self.records_path.name}.rank{rank}"))
        self.records_path.parent.mkdir(parents=True, exist_ok=True)
        if self.append_path.is_file():
            # Drop a torn last line (a killed write) before appending after it.
            write_jsonl(self.append_path, read_jsonl(self.append_path))
        self.refresh()
        self.resumed = len(self.done)
        # time spent by earlier runs of this store, finished or killed part way (the main
        # process records the running total after every batch)
        self._before = float(self.meta.get("wall_time_s") or 0) if self.resumed else 0.0
        self._t0 = time.time()

    def _parts(self) -> list[Path]:
        return sorted(self.records_path.parent.glob(self.records_path.name + ".rank*"))

    def refresh(self) -> None:
        """Reload the records of every process from disk."""
        self.done: dict[int, dict] = {}
        for path in [self.records_path, *self._parts()]:
            for r in read_jsonl(path):
                self.done[r["index"]] = r

    def start(self, **info) -> None:
        if self.rank != 0:
            return
        earlier = self.meta.get("git_commit")
        self.meta = {**self.meta, **info, "config": self.config, "status": "running"}
        if self.resumed and "records_git_commits" not in self.meta:
            # a store from before this list was kept: its records came from the last commit it recorded
            self.meta["records_git_commits"] = [earlier]
        self.meta.setdefault("records_git_commits", [])
        self.meta.setdefault("started", now())
        self.meta["resumed_from"] = self.resumed
        self.meta["processes"] = self.world
        self._t0 = time.time()
        write_json(self.meta_path, self.meta)

    @property
    def reused(self) -> bool:
        """True for a rerun that found every record done and computed none (so far)."""
        return bool(self.resumed) and len(self.done) == self.resumed

    def elapsed(self) -> float:
        """Wall time of this run plus that of the earlier runs it resumed; a rerun that computes
        no record (it found them all done) adds nothing: loading the model to check is not work."""
        return self._before + (0.0 if self.reused else time.time() - self._t0)

    def append(self, records: list[dict]) -> None:
        with open(self.append_path, "a", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
            f.flush()
        for r in records:
            self.done[r["index"]] = r
        if self.rank == 0 and self.meta:
            self.meta["wall_time_s"] = round(self.elapsed(), 2)
            commits = self.meta.setdefault("records_git_commits", [])
            if records and (not commits or commits[-1] != self.meta.get("git_commit")):
                commits.append(self.meta.get("git_commit"))  # in order of writing: the last one finished
            write_json(self.meta_path, self.meta)

    def records_commits(self) -> list:
        """The commits whose runs wrote this store's records, oldest first: a rerun that finds
        every record done and only rewrites the summary adds none."""
        return list(self.meta.get("records_git_commits") or [self.meta.get("git_commit")])

    def ordered(self) -> list[dict]:
        return [self.done[i] for i in sorted(self.done)]

    def write_merged(self, records: list[dict]) -> None:
        """The final records in question order, in one file; the part files go."""
        write_jsonl(self.records_path, records)
        for p in self._parts():
            p.unlink(missing_ok=True)

    def finish(self, **info) -> None:
        self.meta.update(info)
        self.meta["status"] = "finished"
        self.meta["finished"] = now()
        write_json(self.meta_path, self.meta)


def read_json(path: Path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)
