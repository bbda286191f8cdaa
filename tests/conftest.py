"""Shared fixtures: a tiny random Llama with a real tokenizer, saved and loaded by path; real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("RTUNING_TEST_DATA", REPO.parent / "shared" / "R-Tuning-data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (SHARED_DATA / "pararel" / "training_data.json").is_file():
        pytest.fail(f"test data not found at {SHARED_DATA}; set RTUNING_TEST_DATA to the R-Tuning data folder")
    return SHARED_DATA


@pytest.fixture(scope="session")
def bpe_tokenizer():
    """SmolLM2's byte-level BPE tokenizer (from the embedded model package, converted once)."""
    from rtuning.models import load_tokenizer, resolve_model

    return load_tokenizer(resolve_model("smollm2-135m"))


def save_tiny_llama(path: Path, tokenizer, seed: int = 0) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, bpe_tokenizer) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), bpe_tokenizer)


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir):
    from rtuning.engine import Engine
    from rtuning.models import load_model, resolve_model

    model, tok = load_model(resolve_model(str(tiny_model_dir)), "cpu", torch.float32)
    return Engine(model, tok)


@pytest.fixture()
def env_data(monkeypatch, data_dir):
    monkeypatch.setenv("RTUNING_DATA_DIR", str(data_dir))
    return data_dir


@pytest.fixture(scope="session")
def tiny_backend(tiny_engine):
    """The hf backend over tiny_engine (hooks on tiny_engine see its forward passes)."""
    from rtuning.backends.hf import HFBackend

    return HFBackend(engine=tiny_engine)
