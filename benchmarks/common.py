"""Shared parts of the benchmarks: the run setup, timing, peak memory, FLOP accounting, machine facts."""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python benchmarks/bench_*.py` from anywhere
    sys.path.insert(0, str(ROOT))

FLOPS_RULE = ("useful FLOPs = 2 x (parameters a token is multiplied by: all but the input embedding) x "
              "(real, non-padding tokens the model processed; a prefix shared by a batch counts once) "
              "+ 2 x (vocab x hidden) x (rows of vocabulary logits computed); attention score FLOPs "
              "are left out. useful_flops_2x_all_params is the simpler 2 x all parameters x tokens.")


# -- setup ------------------------------------------------------------------------------


def bench_parser(doc: str | None, domain_default: str) -> argparse.ArgumentParser:
    """The evaluation scripts' own arguments (model, data, shots, batching, device) plus the bench's."""
    from rtuning.cli import base_parser

    p = base_parser(doc)
    p.add_argument("--domain", default=domain_default, help="ParaRel split: train, ID or OOD")
    p.add_argument("--output", required=True, help="JSON file for the results")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--skip_reference", action="store_true", help="time the engine only (no comparison)")
    p.add_argument("--matmul_seconds", type=float, default=1.5, help="time spent measuring the matmul rate")
    p.add_argument("--repeat", type=int, default=1,
                   help="time the engine this many times and report the median run (noisy machines)")
    p.add_argument("--matmul_size", type=int, default=None, help="n of the n x n matmul (default 2048, 8192 on GPU)")
    p.set_defaults(limit=128)
    return p


def setup(args, split: str):
    """The run exactly as the evaluation scripts assemble it (rtuning.cli.Setup): prompts, shots, model."""
    from rtuning.cli import Setup
    from rtuning.tasks import PARAREL

    if args.threads:
        torch.set_num_threads(args.threads)
    return Setup(args, PARAREL, split)


# -- measurement ------------------------------------------------------------------------


def _vm_status(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _rss() -> int:
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:
        return _vm_status("VmRSS") or 0


def _children_rss() -> int:
    try:
        import psutil

        total = 0
        for child in psutil.Process().children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total
    except ImportError:
        return 0


def _trim() -> None:
    gc.collect()
    try:  # give freed heap pages back, so one phase's garbage does not hide the next one's growth
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class Phase:
    """Wall time, CPU use and peak memory of a block of work: the process's peak (weights and
    everything else held, `total_peak_mb`) and its growth during the block (`peak_mb`).

    Memory on CPU: resident set size (RSS). The kernel's high-water mark (VmHWM) is reset at the
    start by writing 5 to /proc/self/clear_refs where allowed; a thread also samples RSS every
    2 ms (psutil, else /proc/self/status). peak_mb = max(VmHWM, sampled max) - RSS at the start,
    after a gc.collect() and malloc_trim(0). On CUDA: torch.cuda.max_memory_allocated minus the
    allocation at the start.
    """

    def __init__(self, device: torch.device, children: bool = False):
        # children: the work runs in child processes too (vLLM's engine): count their memory,
        # on a GPU as the device's memory in use
        self.device, self.children = device, children

    def __enter__(self):
        _trim()
        self.cuda = self.device.type == "cuda"
        if self.cuda and self.children:
            self.base = self._device_used()
            self.samples = [self.base]
            self.stop = threading.Event()
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        elif self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")
                self.hwm_reset = True
            except OSError:
                self.hwm_reset = False
            self.base = self._measure()
            self.samples = [self.base]
            self.stop = threading.Event()
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        self.cpu0 = _cpu_times()
        self.t0 = time.perf_counter()
        return self

    def _device_used(self) -> int:
        free, total = torch.cuda.mem_get_info(self.device)
        return total - free

    def _measure(self) -> int:
        if self.cuda:
            return self._device_used()
        return _rss() + (_children_rss() if self.children else 0)

    def _sample(self):
        while not self.stop.wait(0.002):
            self.samples.append(self._measure())

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize(self.device)
        self.wall = time.perf_counter() - self.t0
        cpu1 = _cpu_times()
        if self.cuda and self.children:
            self.stop.set()
            self.thread.join()
            self.peak_bytes = max(self.samples) - self.base
            self.memory_method = "the device's memory in use (torch.cuda.mem_get_info), sampled every 2 ms"
        elif self.cuda:
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self.base
            self.memory_method = "torch.cuda.max_memory_allocated"
        else:
            self.stop.set()
            self.thread.join()
            peak = max(self.samples)
            hwm = _vm_status("VmHWM") if self.hwm_reset and not self.children else None
            if hwm:
                peak = max(peak, hwm)
            self.peak_bytes = peak - self.base
            self.memory_method = "RSS" + (" with child processes" if self.children else "") + ": " + (
                "VmHWM reset via /proc/self/clear_refs + " if hwm else "") + "psutil sampling every 2 ms"
        ncpu = os.cpu_count() or 1
        own = cpu1["own"] - self.cpu0["own"]
        busy = cpu1["busy"] - self.cpu0["busy"]
        # how much of the machine this process used, and how much others took meanwhile
        self.cpu_s = own
        self.own_cpu_share = own / (self.wall * ncpu) if self.wall else 0.0
        self.other_cpu_share = max(0.0, busy - own) / (self.wall * ncpu) if busy and self.wall else None
        return False

    @property
    def peak_mb(self) -> float:
        """Growth over the start: the block's own working set."""
        return self.peak_bytes / 2**20

    @property
    def total_peak_mb(self) -> float:
        """The peak itself: RSS (CPU) or allocated memory (CUDA), model weights included."""
        return (self.base + self.peak_bytes) / 2**20


def _cpu_times() -> dict:
    t = os.times()
    out = {"own": t.user + t.system, "busy": None}
    try:
        import psutil

        s = psutil.cpu_times()
        out["busy"] = s.user + s.system + getattr(s, "nice", 0) + getattr(s, "irq", 0) + getattr(s, "softirq", 0)
    except ImportError:
        pass
    return out


def matmul_rate(dtype: torch.dtype, device: torch.device, n: int | None = None, seconds: float = 1.5) -> dict:
    """Dense matmul FLOP/s: an n x n by n x n torch.matmul, median over repeated calls."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 5:
        t = time.perf_counter()
        a @ b
        sync()
        times.append(time.perf_counter() - t)
    return {"n": n, "calls": len(times), "flops_per_s": 2 * n**3 / statistics.median(times),
            "best_flops_per_s": 2 * n**3 / min(times)}


def param_counts(model) -> dict:
    """Parameters per token (all but the input embedding) and per logits row (vocab x hidden)."""
    params = {id(p): p.numel() for p in model.parameters()}
    total = sum(params.values())
    emb_in = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    tied = head.data_ptr() == emb_in.data_ptr()
    body = total - emb_in.numel() - (0 if tied else head.numel())
    return {"total": total, "body": body, "lm_head": head.numel(), "tied_embeddings": tied}


def useful_flops(counts: dict, tokens: int, logit_rows: int) -> dict:
    return {"useful_flops": 2 * counts["body"] * tokens + 2 * counts["lm_head"] * logit_rows,
            "useful_flops_2x_all_params": 2 * counts["total"] * tokens}


def machine() -> dict:
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": name, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__}
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    return info


def write_result(path: str | Path, doc: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def table(rows: list[tuple[str, ...]], head: tuple[str, ...]) -> str:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(head), line(tuple("-" * w for w in widths)), *map(line, rows)])
