"""The ORIGINAL release's per-question algorithm, re-implemented faithfully as the speed baseline.

One question at a time: `model.generate(max_new_tokens=K, output_scores=True)`, a walk over
the scores (greedy token; stop at the first period or end token), the answer confidence as the
geometric mean of the chosen tokens' probabilities, then a SECOND `generate` call on the whole
re-encoded sure prompt only to read one next-token distribution. The stop rule and the
sure/unsure token ids are the engine's (`Engine.period`, `Engine.eos`, `Engine.sure_id`,
`Engine.unsure_id`), so any difference in the outputs comes from the arithmetic alone.
"""

from __future__ import annotations

import math

import torch

from rtuning.engine import Engine, sure_prompt


def _generate(engine: Engine, ids: list[int], max_new_tokens: int):
    model = engine.model
    input_ids = torch.tensor([ids], dtype=torch.long, device=engine.device)
    return model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new_tokens,
                          do_sample=False, output_scores=True, return_dict_in_generate=True,
                          pad_token_id=engine.pad_id)


@torch.inference_mode()
def reference_answer(engine: Engine, ids: list[int], max_new_tokens: int) -> dict:
    """One question's greedy answer as the original computed it (one generate call)."""
    out = _generate(engine, ids, max_new_tokens)
    tokens: list[int] = []
    probs: list[float] = []
    stopped = "length"
    for score in out.scores:
        p = torch.softmax(score[0].float(), dim=-1)
        tok = int(p.argmax())
        if bool(engine.eos[tok]) or bool(engine.period[tok]):
            stopped = "eos" if bool(engine.eos[tok]) else "period"
            break
        tokens.append(tok)
        probs.append(float(p[tok]))
    text = engine.tokenizer.decode(tokens, skip_special_tokens=True).strip()
    conf = math.exp(sum(math.log(max(x, 1e-45)) for x in probs) / len(probs)) if probs else 0.0
    # forwards that generate ran: the prompt, then one token per further step
    return {"text": text, "token_ids": tokens, "token_probs": probs, "confidence": conf, "stopped_by": stopped,
            "tokens_processed": len(ids) + len(out.scores) - 1, "logit_rows": len(out.scores)}


@torch.inference_mode()
def reference_sure(engine: Engine, ids: list[int]) -> float:
    """p(sure) / (p(sure) + p(unsure)) from a second, one-token generate call."""
    out = _generate(engine, ids, 1)
    p = torch.softmax(out.scores[0][0].float(), dim=-1)
    s, u = float(p[engine.sure_id]), float(p[engine.unsure_id])
    return s / (s + u) if s + u > 0 else 0.5


def reference_evaluate(engine: Engine, prompts: list[str], max_new_tokens: int, sep: str = " ") -> list[dict]:
    """Answer, confidence and sure-probability per prompt, one question at a time."""
    results = []
    for prompt in prompts:
        ids = engine.encode([prompt])[0]
        ans = reference_answer(engine, ids, max_new_tokens)
        sure_ids = engine.encode([sure_prompt(prompt, ans["text"], sep)])[0]
        ans["sure_prob"] = reference_sure(engine, sure_ids)
        ans["tokens_processed"] += len(sure_ids)
        ans["logit_rows"] += 1
        results.append(ans)
    return results


def reference_probe(engine: Engine, prompts: list[str], max_new_tokens: int) -> list[dict]:
    """Greedy answers and confidences, one question at a time."""
    return [reference_answer(engine, engine.encode([p])[0], max_new_tokens) for p in prompts]
