"""Fine-tuning speed: one padded example per sequence, in random or length-grouped order, and
packed blocks (LMFlow's concatenate-and-chunk).

    python benchmarks/bench_finetune.py --model smollm2-135m \
        --data runs/issue2/train/pararel_smollm2-135m_unsure.json --steps 10 --block_size 512 \
        --output benchmarks/results/finetune_smollm2-135m.json

The same data, model, batch size and number of optimizer steps for the three layouts:
TextDataset + PadCollator in a random order (what `finetune/run_finetune.sh` trains on by
default), the same examples in LengthGroupedSampler's order (`--group_by_length`), and
rtuning.finetune.PackedDataset (`--packing`: every block full, no padding). A plain torch loop
with AdamW, as Trainer runs it on one device; the model is reloaded for each layout. The timed
steps are spread evenly over one epoch's batches; the epoch's time is estimated from its exact
count of computed positions (padding included) and the timed steps' positions per second.
Reported: real (non-padding) tokens per second, the padding share of the timed steps and of
the whole epoch, the estimated epoch time, and the useful matmul share, with useful FLOPs =
6 x (parameters a token is multiplied by) x real tokens. Training data: `python
training/pararel/run_pararel.py --method unsure --limit 200 --output_dir /tmp/bench_train`
writes an LMFlow file; variable-length data (MMLU's few-shot prompts) is where grouping pays.

`--dtypes fp32,bf16` times every layout under each precision (bf16: autocast around the forward
pass, as `run_finetune.sh --dtype bf16` trains); whether bf16 pays on a CPU depends on the CPU
(its bf16 matmul rate is measured beside fp32's). `--layouts padded` times the default only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.common import Phase, machine, matmul_rate, param_counts, table, write_result  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--data", required=True, help="an LMFlow text_only JSON file or a folder of them")
    p.add_argument("--steps", type=int, default=10, help="timed optimizer steps per layout")
    p.add_argument("--warmup_steps", type=int, default=1, help="untimed steps before timing")
    p.add_argument("--block_size", type=int, default=512)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--learning_rate", type=float, default=2e-5)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--matmul_seconds", type=float, default=1.5)
    p.add_argument("--matmul_size", type=int, default=None, help="n of the n x n matmul (default 2048, 8192 on GPU)")
    p.add_argument("--layouts", default="padded,grouped,packed", help="comma list of padded, grouped, packed")
    p.add_argument("--dtypes", default="fp32", help="comma list of fp32, bf16, fp16 (autocast; fp16 on a GPU)")
    p.add_argument("--output", required=True, help="JSON file for the results")
    args = p.parse_args(argv)
    for name, given, known in (("--layouts", args.layouts, LAYOUTS), ("--dtypes", args.dtypes, DTYPES)):
        bad = [x for x in given.split(",") if x not in known]
        if bad or not given:
            p.error(f"{name}: unknown {', '.join(bad) or '(empty)'}; choose from {', '.join(known)}")
    return args


LAYOUTS = ("padded", "grouped", "packed")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def epoch_batches(dataset, args, grouped: bool) -> list[list[int]]:
    """One epoch's batches of example indices, in the order the fine-tune would take them.

    grouped: transformers' LengthGroupedSampler (`--group_by_length`), else a random
    permutation, as Trainer's default sampler draws it.
    """
    from transformers.trainer_pt_utils import LengthGroupedSampler

    gen = torch.Generator().manual_seed(args.seed)
    lengths = [len(e) for e in dataset.examples]
    order = list(LengthGroupedSampler(args.batch_size, lengths=lengths, generator=gen)) if grouped else \
        torch.randperm(len(lengths), generator=gen).tolist()
    return [order[i:i + args.batch_size] for i in range(0, len(order), args.batch_size)]


def train_steps(model, dataset, batches, collator, args, device, dtype: str = "fp32") -> dict:
    """`args.steps` timed optimizer steps on batches spread evenly over the epoch (the middle of
    each of `steps` equal stretches), after untimed warm-up steps on the first of them. Tokens
    are counted from the masks. The epoch's padding share and its computed positions are exact
    (all its batches, none run); its time is estimated as those positions / the positions per
    second of the timed steps (a step's time grows about linearly with its positions; a few
    timed steps would estimate a length-grouped epoch's mix of short and long batches poorly)."""
    picked = [batches[int((i + 0.5) * len(batches) / args.steps)] for i in range(args.steps)]
    opt = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    model.train()

    def step(rows):
        batch = {k: v.to(device) for k, v in collator([dataset[i] for i in rows]).items()}
        # mixed precision as the Trainer runs it: fp32 weights and optimizer, autocast forward
        with torch.autocast(device.type, dtype=DTYPES[dtype], enabled=dtype != "fp32"):
            loss = model(**batch).loss
        loss.backward()
        loss = loss.detach()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return batch, loss.item()

    for _ in range(args.warmup_steps):
        step(picked[0])
    real = slots = 0
    losses = []
    with Phase(device) as phase:
        for rows in picked:
            batch, loss = step(rows)
            real += int(batch["attention_mask"].sum())
            slots += batch["attention_mask"].numel()
            losses.append(loss)
    lengths = [[len(dataset.examples[i]) for i in rows] for rows in batches]
    epoch_real, epoch_slots = sum(map(sum, lengths)), sum(max(b) * len(b) for b in lengths)
    return {"wall_s": phase.wall, "real_tokens": real, "token_slots": slots, "padding_share": 1 - real / slots,
            "epoch_padding_share": 1 - epoch_real / epoch_slots, "epoch_batches": len(batches),
            "epoch_token_slots": epoch_slots, "epoch_s_estimate": epoch_slots / (slots / phase.wall),
            "tokens_per_s": real / phase.wall, "slots_per_s": slots / phase.wall,
            "steps_per_s": args.steps / phase.wall, "peak_mb": phase.peak_mb, "first_loss": losses[0],
            "last_loss": losses[-1], "other_cpu_share": phase.other_cpu_share, "memory_method": phase.memory_method}


def main(argv=None) -> dict:
    args = parse_args(argv)
    from transformers import AutoModelForCausalLM, set_seed

    from rtuning.finetune import PackedDataset, PadCollator, TextDataset, read_lmflow
    from rtuning.models import load_tokenizer, materialize, resolve_model

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    spec = resolve_model(args.model)
    texts = read_lmflow(args.data)
    tok = load_tokenizer(spec, padding_side="right")
    padded = TextDataset(texts, tok, args.block_size)
    packed = PackedDataset(padded.examples, args.block_size)
    layouts = [x for x in LAYOUTS if x in args.layouts.split(",")]
    dtypes = [x for x in DTYPES if x in args.dtypes.split(",")]
    collator = PadCollator(tok.pad_token_id)
    rates = {d: matmul_rate(DTYPES[d], device, args.matmul_size, args.matmul_seconds) for d in dtypes}
    # one precision: keys are the layouts (as before); several: "layout dtype"
    key = (lambda layout, d: layout) if len(dtypes) == 1 else (lambda layout, d: f"{layout} {d}")
    results = {}
    for d in dtypes:
        for name in layouts:
            dataset = packed if name == "packed" else padded
            set_seed(args.seed)
            model = AutoModelForCausalLM.from_pretrained(materialize(spec), dtype=torch.float32).to(device)
            counts = param_counts(model)
            r = train_steps(model, dataset, epoch_batches(dataset, args, grouped=name == "grouped"), collator,
                            args, device, d)
            r["layout"], r["dtype"] = name, d
            r["sequences"] = len(dataset)
            r["dataset_tokens"] = dataset.num_tokens
            # 6 x N per token (forward 2N, backward 4N) with N the parameters a token is multiplied by;
            # every position computes logits in training, so the output matrix counts too; the
            # share is of the dense matmul rate in this run's precision
            flops = 6 * (counts["body"] + counts["lm_head"]) * r["real_tokens"]
            r["matmul_fraction"] = flops / r["wall_s"] / rates[d]["flops_per_s"]
            results[key(name, d)] = r
            del model
    first = dtypes[0]
    ratio = lambda a, b: (results[a]["epoch_s_estimate"] / results[b]["epoch_s_estimate"]
                          if a in results and b in results else None)
    out = {"benchmark": "finetune", "model": args.model, "data": str(args.data), "examples": len(texts),
           "steps": args.steps, "warmup_steps": args.warmup_steps, "batch_size": args.batch_size,
           "block_size": args.block_size, "dtypes": dtypes, "layouts": layouts, "device": str(device),
           "torch_threads": torch.get_num_threads(), "machine": machine(),
           "matmul": rates[first], "matmul_by_dtype": rates,
           "packed_dropped_tokens": packed.dropped_tokens,
           "flops_rule": "useful FLOPs = 6 x (all parameters but the input embedding) x real tokens",
           "tokens_per_s_ratio": (results[key("packed", first)]["tokens_per_s"]
                                  / results[key("padded", first)]["tokens_per_s"]
                                  if {"padded", "packed"} <= set(layouts) else None),
           # epoch time of the default layout over another's, in the first precision
           "epoch_ratio_grouped": ratio(key("padded", first), key("grouped", first)),
           "epoch_ratio_packed": ratio(key("padded", first), key("packed", first)),
           # the part of the grouped gain that is fewer computed positions alone
           "epoch_positions_ratio_grouped": (results[key("padded", first)]["epoch_token_slots"]
                                             / results[key("grouped", first)]["epoch_token_slots"]
                                             if {"padded", "grouped"} <= set(layouts) else None),
           # epoch time in fp32 over each other precision's, per layout
           "epoch_ratio_fp32_over": {d: {x: ratio(key(x, "fp32"), key(x, d)) for x in layouts}
                                     for d in dtypes if d != "fp32" and "fp32" in dtypes},
           **results}
    write_result(args.output, out)
    keys = list(results)
    rows = [("real tokens/s", *(f"{results[k]['tokens_per_s']:.0f}" for k in keys)),
            ("padding share, timed steps", *(f"{results[k]['padding_share']:.1%}" for k in keys)),
            ("padding share, whole epoch", *(f"{results[k]['epoch_padding_share']:.1%}" for k in keys)),
            ("steps/s", *(f"{results[k]['steps_per_s']:.3f}" for k in keys)),
            ("sequences / batches", *(f"{results[k]['sequences']} / {results[k]['epoch_batches']}" for k in keys)),
            ("positions computed, whole epoch", *(f"{results[k]['epoch_token_slots']:,}" for k in keys)),
            ("one epoch, s (est.)", *(f"{results[k]['epoch_s_estimate']:.0f}" for k in keys)),
            ("useful matmul share", *(f"{results[k]['matmul_fraction']:.1%}" for k in keys)),
            ("peak memory MB", *(f"{results[k]['peak_mb']:.0f}" for k in keys))]
    flags = {"padded": "padded (default)", "grouped": "grouped (--group_by_length)", "packed": "packed (--packing)"}
    head = [flags[results[k]["layout"]] + ("" if len(dtypes) == 1 else f", {results[k]['dtype']}") for k in keys]
    print(f"finetune: {args.model}, {len(texts)} texts, batch {args.batch_size}, block {args.block_size}, "
          f"{args.steps} steps each, {out['machine']['cpu']}, {out['torch_threads']} torch threads")
    print(table(rows, ("", *head)))
    print("dense matmul: " + ", ".join(f"{d} {rates[d]['flops_per_s'] / 1e9:.0f} GFLOP/s" for d in dtypes))
    if out["epoch_ratio_grouped"]:
        print(f"one epoch, padded / grouped: {out['epoch_ratio_grouped']:.2f}x (positions alone: "
              f"{out['epoch_positions_ratio_grouped']:.2f}x)")
    if out["epoch_ratio_packed"]:
        print(f"one epoch, padded / packed: {out['epoch_ratio_packed']:.2f}x; packing drops "
              f"{out['packed_dropped_tokens']} tokens and can split a question from its label (SPEC.md)")
    for d, by_layout in out["epoch_ratio_fp32_over"].items():
        print(f"one epoch, fp32 / {d}: " + ", ".join(f"{x} {r:.2f}x" for x, r in by_layout.items()))
    return out


if __name__ == "__main__":
    main()
