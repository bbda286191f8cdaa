"""Supervised fine-tuning on LMFlow text-only JSON (full parameters, causal-LM loss on the text).

Run through `bash finetune/run_finetune.sh ...`, which launches this module with accelerate.
Flags follow LMFlow's run_finetune.sh; defaults follow the paper (1 epoch, lr 2e-5, block 512).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

from .records import environment, git_commit, write_json


class LMFlowError(Exception):
    """A training data file is missing or not LMFlow text-only JSON."""


def lmflow_files(dataset_path: str | Path) -> list[Path]:
    """One JSON file, or every *.json in a folder (sorted, so runs are reproducible)."""
    path = Path(dataset_path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.glob("*.json") if not p.name.endswith((".meta.json", ".summary.json")))
        if not files:
            raise LMFlowError(f"{path}: folder holds no LMFlow .json file")
        return files
    raise LMFlowError(f"dataset path not found: {path}")


def read_lmflow(dataset_path: str | Path) -> list[str]:
    """All texts of the LMFlow text_only files at dataset_path, with errors naming file/index/field."""
    texts: list[str] = []
    for f in lmflow_files(dataset_path):
        try:
            doc = json.loads(f.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise LMFlowError(f"{f}: not valid JSON ({e})") from None
        if not isinstance(doc, dict) or doc.get("type") != "text_only":
            raise LMFlowError(f"{f}: field 'type' must be \"text_only\" (LMFlow text-only format)")
        instances = doc.get("instances")
        if not isinstance(instances, list):
            raise LMFlowError(f"{f}: field 'instances' must be a list")
        for i, inst in enumerate(instances):
            text = inst.get("text") if isinstance(inst, dict) else None
            if not isinstance(text, str) or not text.strip():
                raise LMFlowError(f"{f}: instance {i}: field 'text' must be a non-empty string")
            texts.append(text)
    return texts


class TokenSequences(torch.utils.data.Dataset):
    """Token id lists served as training examples."""

    examples: list[list[int]]
    truncated: int = 0

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i):
        return {"input_ids": self.examples[i]}

    @property
    def num_tokens(self) -> int:
        return sum(len(e) for e in self.examples)


class TextDataset(TokenSequences):
    """Each text as one example: BOS (if the tokenizer adds it) + text + EOS.

    One example per sequence keeps a question and its "I am sure/unsure" together (LMFlow's
    concatenate-and-chunk can split them across blocks). A text longer than block_size loses
    tokens from the left, after BOS: the end carries the answer and the sure/unsure label,
    the start is few-shot prompt or context.
    """

    def __init__(self, texts: list[str], tokenizer, block_size: int):
        enc = tokenizer(texts, add_special_tokens=True).input_ids
        eos, bos = tokenizer.eos_token_id, tokenizer.bos_token_id
        self.examples = []
        self.truncated = 0
        for ids in enc:
            if eos is not None and (not ids or ids[-1] != eos):
                ids = ids + [eos]
            if len(ids) > block_size:
                self.truncated += 1
                head = ids[:1] if bos is not None and ids[0] == bos else []
                ids = head + ids[len(ids) - (block_size - len(head)):]
            self.examples.append(ids)


class PackedDataset(TokenSequences):
    """LMFlow's grouping: all examples' tokens concatenated and cut into block_size blocks.

    No padding at all, but the remainder is dropped and a block may start mid-example, so a
    question and its sure/unsure label can land in different blocks (see SPEC.md).
    """

    def __init__(self, examples: list[list[int]], block_size: int):
        flat = [t for ex in examples for t in ex]
        usable = len(flat) // block_size * block_size
        self.examples = [flat[i:i + block_size] for i in range(0, usable, block_size)]
        self.dropped_tokens = len(flat) - usable
        self.truncated = 0
        if not self.examples:
            raise LMFlowError(f"packing: {len(flat)} tokens in all, less than one block of {block_size}")


class PadCollator:
    """Right-pads a batch; padding positions get label -100 so they carry no loss."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features):
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for row, f in enumerate(features):
            n = len(f["input_ids"])
            ids[row, :n] = torch.tensor(f["input_ids"])
            mask[row, :n] = 1
        labels = ids.masked_fill(mask == 0, -100)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def add_lora(model, args):
    """Wrap the model with LoRA adapters; only they train."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        print("error: --lora needs peft: pip install peft", file=sys.stderr)
        raise SystemExit(2)
    targets = args.lora_target_modules
    config = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                        target_modules=targets if targets == "all-linear" else targets.split(","),
                        task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def _portable_adapter(folder: Path, base: str) -> None:
    # Name the base model as the user did (e.g. "smollm2-135m"), not our cache folder.
    path = folder / "adapter_config.json"
    config = json.loads(path.read_text())
    config["base_model_name_or_path"] = base
    path.write_text(json.dumps(config, indent=2))


TIME_FILE = "rtuning_time.json"


def _time_callback(t0: float, before: float, settings: dict):
    """Writes the training time so far (earlier invocations included) and the settings that
    shape the weights into each checkpoint, so a fine-tune resumed after a kill still reports
    what it cost in all, and is resumed only under the settings it was trained with."""
    from transformers import TrainerCallback

    class TrainingTime(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and folder.is_dir():
                write_json(folder / TIME_FILE, {"train_time_s": round(before + time.time() - t0, 2),
                                                "settings": settings})

    return TrainingTime()


# arguments that do not change the trained weights: a checkpoint resumes whatever they are
NOT_SHAPING = {"dataset_path", "output_model_path", "logging_steps", "save_steps", "save_total_limit",
               "resume_from_checkpoint", "dataloader_num_workers", "gradient_checkpointing", "merge_lora", "dtype"}


def training_settings(args, dtype: str, texts: list[str], world_size: int) -> dict:
    """What shapes the weights: the arguments, the precision as resolved, the training texts
    (their hash, wherever the file lies) and the number of processes (the global batch)."""
    settings = {k: v for k, v in sorted(vars(args).items()) if k not in NOT_SHAPING}
    return {**settings, "precision": dtype, "world_size": world_size,
            "texts_sha256": hashlib.sha256(json.dumps(texts).encode()).hexdigest()}


def check_resumable(checkpoint: str, settings: dict) -> None:
    """Refuse to resume a checkpoint trained under other settings: the trainer would carry on
    its weights, optimizer and schedule as if the new flags had been used from the start.
    Checkpoints written before settings were recorded are resumed as before."""
    path = Path(checkpoint) / TIME_FILE
    then = json.loads(path.read_text()).get("settings") if path.is_file() else None
    if then is None:
        return
    changed = [f"{k}: {then.get(k)!r} there, {settings.get(k)!r} now" for k in sorted(set(then) | set(settings))
               if then.get(k) != settings.get(k)]
    if changed:
        print(f"error: {checkpoint} was trained with other settings ({'; '.join(changed)}); resume with the "
              "same ones, or train into a new --output_model_path", file=sys.stderr)
        raise SystemExit(2)


def time_before(checkpoint: str | None) -> float:
    """Training time spent before `checkpoint` was written (0 without one or its record)."""
    path = Path(checkpoint) / TIME_FILE if checkpoint else None
    if path is None or not path.is_file():
        return 0.0
    return float(json.loads(path.read_text())["train_time_s"])


def find_checkpoint(out: Path, wanted: str | None) -> str | None:
    """The checkpoint to resume from: an explicit path, the latest in `out`, or none."""
    if wanted is None:
        return None
    if wanted != "latest":
        if not Path(wanted).is_dir():
            print(f"error: checkpoint not found: {wanted}", file=sys.stderr)
            raise SystemExit(2)
        return wanted
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    # The trainer writes trainer_state.json last (after weights, optimizer, scheduler and RNG
    # state) and removes older checkpoints only after it. A checkpoint without it was cut off
    # by a kill; resuming from it would silently restart at step 0 or with a fresh optimizer.
    found = sorted((int(p.name.rsplit("-", 1)[1]), p) for p in out.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
                   if p.is_dir() and p.name.rsplit("-", 1)[1].isdigit()) if out.is_dir() else []
    for step, path in reversed(found):
        if (path / "trainer_state.json").is_file():
            return str(path)
        print(f"warning: {path} is incomplete (no trainer_state.json: the run was killed while saving it); "
              "skipping it", file=sys.stderr)
    print(f"no complete checkpoint in {out}: starting from the beginning", file=sys.stderr)
    return None


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bash finetune/run_finetune.sh", description=__doc__)
    p.add_argument("--model_name_or_path", default="smollm2-135m",
                   help="registry name (smollm2-135m), hub id, local folder or .gguf file")
    p.add_argument("--dataset_path", required=True, help="an LMFlow text_only JSON file or a folder of them")
    p.add_argument("--output_model_path", "--output_dir", dest="output_model_path", required=True)
    p.add_argument("--num_train_epochs", type=float, default=1.0)
    p.add_argument("--learning_rate", type=float, default=2e-5)
    p.add_argument("--block_size", type=int, default=512)
    p.add_argument("--per_device_train_batch_size", "--batch_size", dest="per_device_train_batch_size",
                   type=int, default=4)
    p.add_argument("--gradient_accumulation_steps", type=int, default=1)
    p.add_argument("--lr_scheduler_type", default="linear")
    p.add_argument("--warmup_ratio", type=float, default=0.0, help="warm-up as a fraction of all steps")
    p.add_argument("--weight_decay", type=float, default=0.0)
    p.add_argument("--max_steps", type=int, default=-1, help="stop after this many optimizer steps (-1: epochs)")
    p.add_argument("--logging_steps", type=int, default=10)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp16", "fp32"),
                   help="mixed precision: auto is bf16 on a GPU that supports it, else fp32")
    p.add_argument("--packing", action="store_true",
                   help="LMFlow-style concatenate-and-chunk to --block_size instead of one padded example "
                        "per sequence (faster, but can split a question from its label)")
    p.add_argument("--group_by_length", action="store_true",
                   help="batch examples of similar length together (transformers' LengthGroupedSampler: random "
                        "groups of 50 batches, fewer on small data, sorted by length inside each) so batches "
                        "carry less padding; off by default, as in the original release. Every example stays whole")
    p.add_argument("--gradient_checkpointing", action="store_true", help="recompute activations to save memory")
    p.add_argument("--save_steps", type=int, default=0, help="write a checkpoint every N steps (0: none)")
    p.add_argument("--save_total_limit", type=int, default=2, help="keep at most this many checkpoints")
    p.add_argument("--resume_from_checkpoint", nargs="?", const="latest", default=None,
                   help="continue a killed run: the latest checkpoint in the output folder, or a path")
    p.add_argument("--lora", action="store_true", help="train LoRA adapters (peft) instead of all weights")
    p.add_argument("--lora_r", type=int, default=8)
    p.add_argument("--lora_alpha", type=int, default=16)
    p.add_argument("--lora_dropout", type=float, default=0.05)
    p.add_argument("--lora_target_modules", default="all-linear",
                   help="comma-separated module names (e.g. q_proj,v_proj) or all-linear")
    p.add_argument("--merge_lora", action="store_true",
                   help="save the adapters merged into the base weights (a plain model for evaluation); "
                        "the adapter itself goes to OUTPUT/lora_adapter")
    p.add_argument("--dataloader_num_workers", type=int, default=0)
    for action in p._actions:  # every default in --help: users compare them with LMFlow's script
        # (store_true flags default to False: nothing to show; a 0 or 0.0 default is shown)
        if action.option_strings and action.default not in (None, argparse.SUPPRESS) and action.default is not False \
                and "default" not in (action.help or ""):
            action.help = f"{action.help} (default: %(default)s)" if action.help else "default: %(default)s"
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.packing and args.group_by_length:
        print("error: --group_by_length has nothing to group with --packing (every block is --block_size "
              "tokens long); choose one", file=sys.stderr)
        raise SystemExit(2)
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments, set_seed

    from .models import load_tokenizer, materialize, resolve_model

    try:
        texts = read_lmflow(args.dataset_path)
    except LMFlowError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
    set_seed(args.seed)
    spec = resolve_model(args.model_name_or_path)
    gpu = torch.cuda.is_available()
    dtype = args.dtype
    if dtype == "auto":
        dtype = "bf16" if gpu and torch.cuda.is_bf16_supported() else "fp32"
    if dtype == "fp16" and not gpu:
        print("error: --dtype fp16 needs a GPU; use bf16 or fp32 on CPU", file=sys.stderr)
        raise SystemExit(2)

    try:
        tokenizer = load_tokenizer(spec, padding_side="right")
        model = AutoModelForCausalLM.from_pretrained(materialize(spec), dtype=torch.float32)
    except (OSError, ValueError) as e:
        print(f"error: could not load model {args.model_name_or_path!r}: {e}", file=sys.stderr)
        raise SystemExit(2)
    if args.lora:
        model = add_lora(model, args)
    if args.gradient_checkpointing:
        model.config.use_cache = False
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    dataset = TextDataset(texts, tokenizer, args.block_size)
    if args.packing:
        try:
            dataset = PackedDataset(dataset.examples, args.block_size)
        except LMFlowError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2)
    out = Path(args.output_model_path)
    targs = TrainingArguments(
        output_dir=str(out),
        num_train_epochs=args.num_train_epochs,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        per_device_train_batch_size=args.per_device_train_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        lr_scheduler_type=args.lr_scheduler_type,
        warmup_steps=args.warmup_ratio,  # transformers 5 reads a value below 1 as a ratio
        weight_decay=args.weight_decay,
        logging_steps=args.logging_steps,
        logging_first_step=True,
        save_strategy="steps" if args.save_steps > 0 else "no",
        save_steps=args.save_steps if args.save_steps > 0 else 500,
        save_total_limit=args.save_total_limit,
        report_to="none",
        seed=args.seed,
        bf16=dtype == "bf16",
        fp16=dtype == "fp16",
        use_cpu=not gpu,
        **({"gradient_checkpointing": True} if args.gradient_checkpointing else {}),
        dataloader_num_workers=args.dataloader_num_workers,
        remove_unused_columns=False,
        train_sampling_strategy="group_by_length" if args.group_by_length else "random",
    )
    resume = find_checkpoint(out, args.resume_from_checkpoint)
    settings = training_settings(args, dtype, texts, targs.world_size)
    if resume:
        check_resumable(resume, settings)
    if resume and not args.lora and getattr(model.config, "tie_word_embeddings", False):
        # the checkpoint stores the shared matrix once; loading it restores both uses (a LoRA
        # checkpoint holds the adapters alone and draws no such warning)
        print(f"resuming from {resume}: the output layer shares the embedding weights, so a transformers "
              "warning that lm_head.weight is missing from the checkpoint is harmless", file=sys.stderr)
    t0, before = time.time(), time_before(resume)
    trainer = Trainer(model=model, args=targs, train_dataset=dataset,
                      data_collator=PadCollator(tokenizer.pad_token_id), processing_class=tokenizer,
                      callbacks=[_time_callback(t0, before, settings)])
    result = trainer.train(resume_from_checkpoint=resume)
    wall = time.time() - t0
    if args.lora and args.merge_lora:
        if trainer.is_world_process_zero():
            trainer.model.save_pretrained(str(out / "lora_adapter"))
            tokenizer.save_pretrained(str(out / "lora_adapter"))
            _portable_adapter(out / "lora_adapter", args.model_name_or_path)
            trainer.model.merge_and_unload().save_pretrained(str(out))
    else:
        trainer.save_model(str(out))
        if args.lora and trainer.is_world_process_zero():
            _portable_adapter(out, args.model_name_or_path)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(out))
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        info = {
            "args": vars(args), "model": args.model_name_or_path, "model_path": spec.path,
            "gguf_file": spec.gguf_file, "data_files": [str(f) for f in lmflow_files(args.dataset_path)],
            "examples": len(dataset), "tokens": dataset.num_tokens, "truncated_examples": dataset.truncated,
            "packing": args.packing, "packing_dropped_tokens": getattr(dataset, "dropped_tokens", 0),
            "group_by_length": args.group_by_length,
            "dtype": dtype, "world_size": trainer.args.world_size, "torch_threads": torch.get_num_threads(),
            "steps": trainer.state.global_step,
            "resumed_from": resume, "trainable_parameters": trainable,
            "train_loss": result.training_loss, "first_logged_loss": losses[0] if losses else None,
            "last_logged_loss": losses[-1] if losses else None,
            # training time over every invocation (a resumed run adds the time before its
            # checkpoint); this_run_s is this invocation's alone
            "wall_time_s": round(before + wall, 2), "this_run_s": round(wall, 2),
            "git_commit": git_commit(), "environment": environment(),
        }
        write_json(out / "finetune_args.json", info)
        write_json(out / "training_log.json", trainer.state.log_history)
        print(json.dumps({k: info[k] for k in ("examples", "steps", "train_loss", "first_logged_loss",
                                                "last_logged_loss", "wall_time_s")}, indent=2))
        if dataset.truncated:
            print(f"warning: {dataset.truncated} examples were longer than --block_size {args.block_size} "
                  "and lost tokens from the left (the answer and label are kept)", file=sys.stderr)
        return info
    return {}


if __name__ == "__main__":
    main()
