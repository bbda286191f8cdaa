"""Turn a study's JSON (python -m rtuning.reproduce) into a results page with tables and plots.

    python -m rtuning.report runs/study/study.json --page docs/results.md

The page, in this order: what was run (model, data, settings, the command), the tables (AP,
the honesty metrics beyond AP, every evaluation, refusal), the paper's claims with their
intervals, the plots, then provenance (invocations, commits, data hashes, step times).
--notes, --findings and --provenance_notes add hand-written markdown to the first, the claims'
and the last section. Writes the page, a small JSON summary beside it, and PNG plots
(precision-recall curves, reliability diagrams and risk-coverage curves; needs matplotlib, an
optional dependency) into {page dir}/img/.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from .methods import METHODS
from .records import read_json, read_jsonl, write_json

# the methods' display names and order are their declarations' (rtuning/methods.py)
LABELS = {"base": "Base model (p(sure) + conf)", **{m.name: m.display for m in METHODS.values()}}
ORDER = ["pretrain_t", "base", "vanilla", "vanilla_c", *(m for m in METHODS if m != "vanilla")]

# SPEC.md section 4: the paper's Table 1 (AP %) and refusal rates, as quoted by readers.
PAPER_AP = [
    ("OpenLLaMA-3B", "pararel", "ID", 92.89, 93.23),
    ("OpenLLaMA-3B", "pararel", "OOD", 68.42, 69.41),
    ("LLaMA-13B", "pararel", "OOD", 64.12, 77.30),
    ("LLaMA-13B", "mmlu", "ID", 51.93, 68.87),
    ("LLaMA-13B", "mmlu", "OOD", 67.38, 77.41),
]
PAPER_REFUSAL = {"selfaware": {"unknown": 99.71, "unsure": 96.61, "vanilla": 12.21},
                 "falseqa": {"unknown": 99.07, "unsure": 95.90, "vanilla": 6.00}}


def pct(x) -> str:
    return "-" if x is None or x != x else f"{100 * x:.2f}"  # None or NaN (no right answer to rank)


def ap_rows(study: dict) -> dict[str, dict[tuple[str, str], float | None]]:
    """method -> (dataset, domain) -> AP; Pretrain-T and Vanilla-C are derived rows."""
    table: dict[str, dict] = {}
    for r in study["results"]:
        key = (r["dataset"], r["domain"])
        table.setdefault(r["method"], {})[key] = r.get("ap")
        if r["method"] == "base":
            table.setdefault("pretrain_t", {})[key] = r.get("pretrain_t_ap")
        if r["method"] == "vanilla" and "ap_neg_entropy" in r:
            table.setdefault("vanilla_c", {})[key] = r.get("ap_neg_entropy")
    return table


def label(method: str) -> str:
    return {"pretrain_t": "Pretrain-T (answer confidence)", "vanilla_c": "Vanilla-C (sample entropy)"}.get(
        method, LABELS.get(method, method))


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _records(row: dict | None) -> list[dict]:
    path = Path(row["records_file"]) if row and row.get("records_file") else None
    return read_jsonl(path) if path and path.is_file() else []


def sure_auroc(row: dict | None) -> float | None:
    """AUROC of p(sure) for right answers: the row's own, else from its per-question records
    (evaluations written before the summary carried it)."""
    from .metrics import auroc

    if not row:
        return None
    if row.get("auroc_sure_prob") is not None:
        return row["auroc_sure_prob"]
    records = _records(row)
    return auroc([r["correct"] for r in records], [r["sure_prob"] for r in records]) if records else None


def _verdict(test: dict | None, point_better: bool) -> str:
    """From a paired bootstrap of (claimed better) - (other): its 95% interval decides."""
    if test is None:
        return "supported (point estimate only)" if point_better else "not supported (point estimate only)"
    if test["low"] > 0:
        return "supported"
    if test["high"] < 0:
        return "contradicted"
    return "inconclusive"


def _ci(test: dict | None, scale: float = 100.0, unit: str = "") -> str:
    if test is None:
        return ""
    return f"; difference {scale * test['diff']:+.2f}{unit}, 95% CI [{scale * test['low']:+.2f}, {scale * test['high']:+.2f}]"


def _paired(a_row: dict | None, b_row: dict | None, fields, metric) -> dict | None:
    """Paired bootstrap of metric(a) - metric(b) over the questions both rows answered."""
    from .metrics import paired_bootstrap_diff

    ra, rb = _records(a_row), _records(b_row)
    if not ra or [r["index"] for r in ra] != [r["index"] for r in rb]:
        return None
    ya, sa = fields(ra)
    yb, sb = fields(rb)
    return paired_bootstrap_diff(ya, sa, yb, sb, metric=metric, resamples=1000, seed=0)


def _position(study: dict, arg: str, name: str) -> int:
    """Where a comma-separated study argument names `name` (after all of them when it does not)."""
    named = (study.get("args", {}).get(arg) or "").split(",")
    return named.index(name) if name in named else len(named)


def in_study_order(study: dict, pairs) -> list[tuple[str, str]]:
    """(dataset, domain) pairs in the order the study names its datasets (ID before OOD)."""
    return sorted(set(pairs), key=lambda p: (_position(study, "datasets", p[0]), p))


def refusal_sets_in_order(study: dict) -> list[str]:
    """The refusal sets the study ran, in the order its --refusal_sets names them."""
    return sorted({x["dataset"] for x in study["refusal"]}, key=lambda s: (_position(study, "refusal_sets", s), s))


def claims(study: dict, ap: dict) -> list[list[str]]:
    """The paper's claims, checked against this run's numbers (paired bootstrap, 1,000 resamples)."""
    from .metrics import average_precision, bootstrap_rate_diff, expected_calibration_error, mixed_score

    rows = {(r["method"], r["dataset"], r["domain"]): r for r in study["results"]}
    mixed = lambda recs: ([r["correct"] for r in recs], mixed_score([r["answer_conf"] for r in recs],
                                                                    [r["sure_prob"] for r in recs]))
    sure = lambda recs: ([r["correct"] for r in recs], [r["sure_prob"] for r in recs])
    out = []
    for (dataset, domain) in in_study_order(study, (k for m in ap.values() for k in m)):
        r, v = ap.get("unsure", {}).get((dataset, domain)), ap.get("vanilla", {}).get((dataset, domain))
        if r is not None and v is not None:
            t = _paired(rows.get(("unsure", dataset, domain)), rows.get(("vanilla", dataset, domain)), mixed,
                        average_precision)
            out.append([f"R-Tuning AP above Vanilla ({dataset} {domain})", f"{pct(r)} vs {pct(v)}{_ci(t)}",
                        _verdict(t, r > v)])
        u = ap.get("uncertain", {}).get((dataset, domain))
        if r is not None and u is not None:
            t = _paired(rows.get(("uncertain", dataset, domain)), rows.get(("unsure", dataset, domain)), mixed,
                        average_precision)
            # competitive: shown to be at most 2 points worse (the interval's lower end above -2);
            # clearly worse when even its upper end is below -2; otherwise undecided
            verdict = ("supported" if t["low"] > -0.02 else "not supported" if t["high"] < -0.02 else
                       "inconclusive") if t else \
                ("supported (point estimate only)" if u >= r - 0.02 else "not supported (point estimate only)")
            out.append([f"R-Tuning-U competitive with R-Tuning ({dataset} {domain})",
                        f"{pct(u)} vs {pct(r)}{_ci(t)}", verdict])
    refusal = {(x["method"], x["dataset"], x["domain"]): x for x in study["refusal"]}
    refused = lambda recs: ([int(r["refused"]) for r in recs], [0.0] * len(recs))
    rate = lambda y, s: float(np.mean(y))
    for s in refusal_sets_in_order(study):
        for method in ("unsure", "unknown"):
            r, v = refusal.get((method, s, "unanswerable")), refusal.get(("vanilla", s, "unanswerable"))
            if r and v:
                t = _paired(r, v, refused, rate)
                over = refusal.get((method, s, "answerable"))
                extra = f"; over-refusal on answerable controls {pct(over['refusal_rate'])}" if over else ""
                out.append([f"{label(method)} refuses unanswerable questions more than Vanilla ({s})",
                            f"{pct(r['refusal_rate'])} vs {pct(v['refusal_rate'])}{_ci(t, unit=' points')}{extra}",
                            _verdict(t, r["refusal_rate"] > v["refusal_rate"])])
            # a skill, not a mood: it should decline the unanswerable questions more often than
            # the answerable controls of the same set (different questions: an unpaired bootstrap)
            ra, rc = _records(refusal.get((method, s, "unanswerable"))), _records(refusal.get((method, s, "answerable")))
            if ra and rc:
                t = bootstrap_rate_diff([int(x["refused"]) for x in ra], [int(x["refused"]) for x in rc])
                out.append([f"{label(method)} refuses unanswerable questions more than the answerable controls ({s})",
                            f"{100 * np.mean([x['refused'] for x in ra]):.2f} vs "
                            f"{100 * np.mean([x['refused'] for x in rc]):.2f}{_ci(t, unit=' points')}",
                            _verdict(t, t["diff"] > 0)])
    ece = lambda y, p: expected_calibration_error(y, p)
    for dataset, domain in in_study_order(study, ((d, dom) for _, d, dom in rows)):
        x, v = rows.get(("unsure", dataset, domain)), rows.get(("vanilla", dataset, domain))
        if not x or not v or x.get("ece_sure_prob") is None or v.get("ece_sure_prob") is None:
            continue
        t = _paired(v, x, sure, ece)  # positive: Vanilla's ECE is the larger one
        # ECE rewards a p(sure) near the base rate even when it ranks nothing: show discrimination too
        ax, av = sure_auroc(x), sure_auroc(v)
        out.append([f"R-Tuning's p(sure) better calibrated than Vanilla's, ECE ({dataset} {domain})",
                    f"{x['ece_sure_prob']:.3f} vs {v['ece_sure_prob']:.3f}"
                    + (f"; Vanilla minus R-Tuning {t['diff']:+.3f}, 95% CI [{t['low']:+.3f}, {t['high']:+.3f}]"
                       if t else "")
                    + (f"; AUROC of p(sure) {ax:.3f} vs {av:.3f}" if ax is not None and av is not None else ""),
                    _verdict(t, x["ece_sure_prob"] < v["ece_sure_prob"])])
    return out


def has_records(study: dict) -> bool:
    """Whether any evaluation of the study still has its per-question records on disk."""
    return any(_records_path(r) for r in study.get("results", []) + study.get("refusal", []))


def _records_path(row: dict | None) -> Path | None:
    path = Path(row["records_file"]) if row and row.get("records_file") else None
    return path if path and path.is_file() else None


def checked_claims(study: dict) -> list[list[str]]:
    """The claims, decided from the records; where the records are gone, as the study's JSON holds them."""
    if not has_records(study) and study.get("claims"):
        return [[c["claim"], c["ours"], c["verdict"]] for c in study["claims"]]
    return claims(study, ap_rows(study))


# The honesty metrics' table columns: (summary key, header, format); rtuning.metrics defines each.
HONESTY_COLUMNS = [("brier_sure_prob", "Brier", ".3f"), ("aurc", "AURC", ".3f"),
                   ("selective_accuracy_50", "acc@50% cov.", "%"), ("selective_accuracy_80", "acc@80% cov.", "%"),
                   ("reliable_accuracy", "reliable acc%", "%"), ("effective_reliability", "eff. reliability", ".3f"),
                   ("abstain_precision", "abstain P%", "%"), ("abstain_recall", "abstain R%", "%"),
                   ("abstain_ece", "abstain ECE", ".3f")]
QUADRANT_COLUMNS = [("known_rate", "known%", "%"), ("ik_ik", "Ik-Ik%", "%"), ("ik_idk", "Ik-Idk%", "%"),
                    ("idk_ik", "Idk-Ik%", "%"), ("idk_idk", "Idk-Idk%", "%"),
                    ("over_conservativeness", "over-cons.", ".3f"), ("prudence", "prudence", ".3f"),
                    ("honesty", "honesty", ".3f"), ("ths", "THS", ".3f")]
ABSTENTION_COLUMNS = [("abstention_precision", "abstention P%", "%"), ("abstention_recall", "abstention R%", "%"),
                      ("abstention_f1", "abstention F1", ".3f")]


def _cell(value, fmt: str) -> str:
    if value is None or value != value:
        return "-"
    return pct(value) if fmt == "%" else f"{value:{fmt}}"


def _by_key(rows: list[dict]) -> dict[tuple[str, str, str], dict]:
    return {(r["method"], r["dataset"], r["domain"]): r for r in rows}


def honesty_of(study: dict, row: dict) -> dict:
    """The honesty metrics of one evaluation: from its records (the knowledge quadrants against the
    base model's records of the same test set), else the ones its summary holds."""
    from .metrics import ReferenceMismatch, honesty_metrics

    keys = [k for k, _, _ in HONESTY_COLUMNS + QUADRANT_COLUMNS]
    records = _records(row)
    if not records:
        return {k: row.get(k) for k in keys}
    base = _by_key(study["results"]).get(("base", row["dataset"], row["domain"]))
    reference = _records(base) or None
    try:
        return honesty_metrics(records, reference, reference_name=str(base and base.get("records_file")))
    except ReferenceMismatch as e:  # e.g. a base model evaluated on another sample: no quadrants, said why
        print(f"warning: {label(row['method'])} on {row['dataset']} {row['domain']}: no knowledge quadrants: {e}",
              file=sys.stderr)
        return honesty_metrics(records)


def abstention_of(study: dict, method: str, refusal_set: str) -> dict:
    """AbstentionBench's precision/recall/F1 over an unanswerable set and its answerable controls:
    from both records files, else as either evaluation's summary holds them."""
    from .metrics import honesty_metrics

    idx = _by_key(study["refusal"])
    pair = [idx.get((method, refusal_set, d)) for d in ("unanswerable", "answerable")]
    unanswerable, controls = _records(pair[0]), _records(pair[1])
    if unanswerable and controls:
        return honesty_metrics(unanswerable, controls=controls)
    held = next((r for r in pair if r and r.get("abstention_f1") is not None), {})
    return {k: held.get(k) for k, _, _ in ABSTENTION_COLUMNS}


def honesty_intervals(study: dict) -> list[list[str]]:
    """Each tuned method minus Vanilla on the same questions, with paired bootstrap 95% intervals
    (1,000 resamples, as the claims): Brier and AURC (lower is better), effective reliability,
    and on the refusal sets abstention F1 over the unanswerable questions and their controls."""
    from .metrics import abstention_prf, abstained, aurc, brier_score, mixed_score, paired_bootstrap_diff

    def eff(y, a):  # AbstainQA's effective reliability: answered right +1, answered wrong -1, abstained 0
        answered = np.asarray(a) < 0.5
        return float((answered * (2 * np.asarray(y) - 1)).mean())

    metrics = [("Brier", lambda rs: ([r["correct"] for r in rs], [r["sure_prob"] for r in rs]), brier_score),
               ("AURC", lambda rs: ([r["correct"] for r in rs], mixed_score([r["answer_conf"] for r in rs],
                                                                           [r["sure_prob"] for r in rs])), aurc),
               ("eff. reliability", lambda rs: ([r["correct"] for r in rs], [float(a) for a in abstained(rs)]), eff)]
    rows = _by_key(study["results"])
    out = []
    tuned = [m for m in ORDER if m not in ("base", "vanilla", "pretrain_t", "vanilla_c")]
    for dataset, domain in in_study_order(study, ((r["dataset"], r["domain"]) for r in study["results"])):
        vanilla = _records(rows.get(("vanilla", dataset, domain)))
        for method in tuned:
            mine = _records(rows.get((method, dataset, domain)))
            if not mine or not vanilla or [r["index"] for r in mine] != [r["index"] for r in vanilla]:
                continue
            cells = []
            for _, fields, metric in metrics:
                t = paired_bootstrap_diff(*fields(mine), *fields(vanilla), metric=metric, resamples=1000, seed=0)
                cells.append(f"{t['diff']:+.3f} [{t['low']:+.3f}, {t['high']:+.3f}]")
            out.append([f"{label(method)} minus Vanilla", f"{dataset} {domain}", *cells, "-"])
    refusal = _by_key(study["refusal"])
    # an F1 undefined for want of any abstention (Vanilla's, often) counts as 0, as sklearn's zero_division=0
    f1 = lambda y, a: abstention_prf(np.asarray(y) > 0.5, np.asarray(a) > 0.5)["abstention_f1"] or 0.0
    for s in refusal_sets_in_order(study):
        sides = lambda m: [_records(refusal.get((m, s, d))) for d in ("unanswerable", "answerable")]
        vanilla = sides("vanilla")
        for method in tuned:
            mine = sides(method)
            if not all(mine) or not all(vanilla) or [len(x) for x in mine] != [len(x) for x in vanilla]:
                continue
            should = [1] * len(mine[0]) + [0] * len(mine[1])  # the unanswerable questions are the positives
            t = paired_bootstrap_diff(should, [float(r["refused"]) for r in mine[0] + mine[1]], should,
                                      [float(r["refused"]) for r in vanilla[0] + vanilla[1]], metric=f1,
                                      resamples=1000, seed=0)
            out.append([f"{label(method)} minus Vanilla", f"{s} (unanswerable + controls)", "-", "-", "-",
                        f"{t['diff']:+.3f} [{t['low']:+.3f}, {t['high']:+.3f}]"])
    return out


def plots(study: dict, eval_dir: Path, img_dir: Path) -> tuple[list[str], list[str]]:
    """Per test set, precision-recall curves beside reliability diagrams, and risk-coverage curves
    (PNG, from the records). Returns (drawn, kept): a test set whose records are all gone keeps the
    images an earlier report drew from them, never an empty redraw."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        plt = None
    from .metrics import aurc, mixed_score, risk_coverage_curve

    drawn, kept = [], []
    for dataset, domain in in_study_order(study, ((r["dataset"], r["domain"]) for r in study["results"])):
        rows = [(r, _records(r)) for r in sorted(
            (r for r in study["results"] if r["dataset"] == dataset and r["domain"] == domain),
            key=lambda r: ORDER.index(r["method"]) if r["method"] in ORDER else len(ORDER))]
        rows = [(r, recs) for r, recs in rows if recs]
        names = [f"{dataset}_{domain}.png", f"{dataset}_{domain}_risk_coverage.png"]
        if not rows:
            kept += [n for n in names if (img_dir / n).is_file()]
            continue
        if plt is None:
            continue
        img_dir.mkdir(parents=True, exist_ok=True)
        fig, (pr, rel) = plt.subplots(1, 2, figsize=(11, 4.5))
        risk_fig, rc = plt.subplots(figsize=(6, 4.5))
        for r, recs in rows:
            y = np.array([x["correct"] for x in recs])
            s = mixed_score([x["answer_conf"] for x in recs], [x["sure_prob"] for x in recs])
            order = np.argsort(-s, kind="mergesort")
            tp = np.cumsum(y[order])
            if y.sum():
                pr.plot(tp / y.sum(), tp / np.arange(1, len(y) + 1), label=label(r["method"]))
            p = np.array([x["sure_prob"] for x in recs])
            bins = np.minimum((p * 15).astype(int), 14)
            centers = [(p[bins == b].mean(), y[bins == b].mean()) for b in range(15) if (bins == b).any()]
            if centers:
                rel.plot(*zip(*centers), marker="o", label=label(r["method"]))
            coverage, risk = risk_coverage_curve(y, s)
            rc.plot(coverage, risk, label=f"{label(r['method'])} (AURC {aurc(y, s):.3f})")
        pr.set(xlabel="recall", ylabel="precision", title=f"{dataset} {domain}: precision-recall (0.5 conf + 0.5 p(sure))")
        rel.plot([0, 1], [0, 1], "k--", linewidth=0.8)
        rel.set(xlabel="p(sure) (bin mean)", ylabel="accuracy", title=f"{dataset} {domain}: reliability of p(sure)")
        rc.set(xlabel="coverage (share answered, best-scored first)", ylabel="risk (share wrong among answered)",
               title=f"{dataset} {domain}: risk-coverage (0.5 conf + 0.5 p(sure))", xlim=(0, 1), ylim=(0, 1))
        for f, axes, name in ((fig, (pr, rel), names[0]), (risk_fig, (rc,), names[1])):
            for ax in axes:
                if ax.get_legend_handles_labels()[0]:
                    ax.legend(fontsize=7)
            f.tight_layout()
            f.savefig(img_dir / name, dpi=110)
            plt.close(f)
        drawn += names
    return drawn, kept


def phrase_columns(row: dict) -> list[str]:
    """Share of answers that are refusal phrases, and accuracy on the others (R-Tuning-R
    declines in words; its p(sure)-based answer rate says nothing about that)."""
    from .refusal import refusal_phrase

    recs = _records(row)
    if not recs:  # the records are gone: as the study's JSON kept them, if it did
        return [pct(row.get("refusal_phrase_rate")), pct(row.get("accuracy_without_phrase"))]
    kept = [r for r in recs if refusal_phrase(r["answer"]) is None]
    return [pct(1 - len(kept) / len(recs)), pct(sum(r["correct"] for r in kept) / len(kept) if kept else None)]


def _limit(value) -> str:
    if not value:
        return "all"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v:,}" for k, v in value.items()) + " (others: all)"
    return f"{value:,}"


def _command(study: dict) -> str | None:
    """The study's last command as a reader types it (the interpreter as `python`); rerun, it resumes."""
    runs = study.get("invocations") or []
    command = (runs[-1].get("command") if runs else None) or study.get("command")
    if not command:
        return None
    try:
        argv = shlex.split(command)
    except ValueError:
        return command
    if argv and Path(argv[0]).name.startswith("python"):
        argv[0] = "python"
    return shlex.join(argv)


def what_was_run(study: dict) -> str:
    """Model, methods, data and their sizes, settings and the one command, from the study's JSON."""
    a = study["args"]
    sizes: dict[tuple[str, str], int] = {}
    for r in study["results"] + study["refusal"]:
        key = (r["dataset"], r["domain"])
        sizes[key] = max(sizes.get(key, 0), r.get("n") or 0)
    tests = ", ".join(f"{d} {dom} {sizes[(d, dom)]:,}" for d, dom in in_study_order(study, (
        (r["dataset"], r["domain"]) for r in study["results"])))
    sets = ", ".join(f"{s} {sizes.get((s, 'unanswerable'), 0):,} / {sizes.get((s, 'answerable'), 0):,}"
                     for s in refusal_sets_in_order(study))
    tuned = {d: [label(m) for m in ORDER if m != "base" and any(r["method"] == m and r["dataset"] == d
                                                              for r in study["results"])]
             for d in (x for x in a["datasets"].split(",") if x)}
    methods = "; ".join(f"on {d}: {', '.join(ms)}" for d, ms in tuned.items() if ms)
    reduced = (" (reduced sets are random samples drawn with the seed)"
               if any(a.get(k) for k in ("limit", "test_limit", "refusal_limit")) else "")
    samples = (f"; R-Tuning-U: entropy of {a['num_try']} sampled answers per training question" if a.get("num_try")
               else "") + f"; Vanilla-C: {a['vanilla_c_samples']} sampled answers per test question"
    command = _command(study)
    lines = [
        f"- **Model:** `{study['model']}`, the base model and its fine-tunes {methods or '(none yet)'}.",
        f"- **Data:** training on {a['datasets']}, questions per dataset: {_limit(a['limit'])}; test questions per "
        f"set: {_limit(a['test_limit'])}"
        + (f"; unanswerable/answerable questions per set: {_limit(a['refusal_limit'])}" if sets else "")
        + f"{reduced}. Evaluated: {tests or 'none yet'}" + (f"; unanswerable / answerable controls: {sets}." if sets
                                                             else "; no unanswerable sets."),
        f"- **Settings:** {a['epochs']} epoch(s), lr {a['learning_rate']}, batch {a['train_batch_size']}, "
        f"fine-tuning precision {a.get('finetune_dtype', 'auto')}, seed {a['seed']}{samples}.",
    ]
    if command:
        lines.append(f"- **Command** (rerun, it resumes: every finished step is reused):\n\n```bash\n{command}\n```")
    status = "" if study.get("complete", True) else (
        "\n**This study stopped before its end** (study.json was written after its last finished evaluation): "
        "the tables hold what it finished.\n")
    return "\n".join(lines) + "\n" + status


def honesty_section(study: dict) -> str:
    """The honesty metrics per method and test set, the knowledge quadrants against the base model,
    abstention P/R/F1 per refusal set and each tuned model's paired intervals against Vanilla."""
    qa = sorted(study["results"], key=lambda r: (in_study_order(study, ((x["dataset"], x["domain"])
                                                                          for x in study["results"])).index(
        (r["dataset"], r["domain"])), ORDER.index(r["method"]) if r["method"] in ORDER else len(ORDER)))
    values = [(r, honesty_of(study, r)) for r in qa]
    table = lambda cols, got: markdown_table(
        ["model", "dataset", "domain"] + [h for _, h, _ in cols],
        [[label(r["method"]), r["dataset"], r["domain"]] + [_cell(m.get(k), f) for k, _, f in cols] for r, m in got])
    held = [(r, m) for r, m in values if any(m.get(k) is not None for k, _, _ in HONESTY_COLUMNS)]
    quadrants = [(r, m) for r, m in values if m.get("known_rate") is not None]
    methods = [m for m in ORDER if any(r["method"] == m for r in study["refusal"])]
    sets = refusal_sets_in_order(study)
    abstention = [(m, s, abstention_of(study, m, s)) for m in methods for s in sets]
    abstention = [(m, s, v) for m, s, v in abstention if any(x is not None for x in v.values())]
    intervals = honesty_intervals(study)
    evaluations = study["results"] + study["refusal"]
    missing = [r for r in evaluations if not _records_path(r)]
    gone = ""
    if missing:
        where = missing[0].get("records_file") or "no records file named"
        gone = (f"The per-question records of this study are no longer on disk (e.g. `{where}`), and these metrics, "
                "their paired intervals and the risk-coverage plots need them: the other tables show the numbers "
                "the study's JSON holds." if len(missing) == len(evaluations) else
                f"{len(missing)} of this study's {len(evaluations)} evaluations no longer have their per-question "
                f"records on disk (e.g. `{where}`): their rows show only what their summaries hold.")
    if not held and not quadrants and not abstention:
        return (gone or "No evaluation yet.") + "\n"
    out = [gone] if gone else []
    if held:
        out += ["Brier score of p(sure); AURC, the area under the risk-coverage curve of the paper's score (lower is "
                "better), and accuracy on the best-scored 50% and 80% of the questions; AbstainQA's (Feng et al. "
                "2024) reliable accuracy (on the answered), effective reliability (right +1, wrong -1, abstained 0, "
                "averaged), abstain precision (share of the abstentions that would have been wrong), abstain recall "
                "(share of the wrong answers abstained from) and abstain ECE. Abstained: p(sure) < 0.5 or a refusal "
                "phrase.", table(HONESTY_COLUMNS, held)]
    if quadrants:
        out += ["Knowledge quadrants (Cheng et al. 2024), \"known\" where the base model answered the same test "
                "question right (its records in this study): Ik-Ik answered right, Ik-Idk unknown and refused, "
                "Idk-Ik known but refused, Idk-Idk answered wrong. Over-conservativeness, prudence and honesty "
                "as Yang et al. (2024) define them, THS as CRaFT (Zhu et al. 2025), both against the base model.",
                table(QUADRANT_COLUMNS, quadrants)]
    if abstention:
        out += ["Abstention precision, recall and F1 (AbstentionBench) over each unanswerable set and its "
                "answerable controls, the unanswerable questions the positives:",
                markdown_table(["model", "set"] + [h for _, h, _ in ABSTENTION_COLUMNS],
                               [[label(m), s] + [_cell(v.get(k), f) for k, _, f in ABSTENTION_COLUMNS]
                                for m, s, v in abstention])]
    if intervals:
        out += ["Each tuned model minus Vanilla on the same questions, with the 95% interval of a paired bootstrap "
                "(1,000 resamples): for Brier and AURC a negative difference favours the tuned model, for "
                "effective reliability and abstention F1 a positive one (an F1 undefined for want of any "
                "abstention counts as 0).",
                markdown_table(["comparison", "test set", "Brier", "AURC", "eff. reliability", "abstention F1"],
                               intervals)]
    return "\n\n".join(out) + "\n"


def render(study: dict, page: Path, notes: str = "", checked: list[list[str]] | None = None, findings: str = "",
           history: str = "") -> str:
    """The page: what was run, the tables, the claims, the plots, then provenance (notes, findings and
    history are hand-written markdown placed in the first, the claims' and the last section)."""
    ap = ap_rows(study)
    cols = in_study_order(study, (k for m in ap.values() for k in m))
    ap_table = markdown_table(["method"] + [f"{d} {dom}" for d, dom in cols],
                              [[label(m)] + [pct(ap[m].get(c)) for c in cols] for m in ORDER if m in ap])
    detail = markdown_table(
        ["model", "dataset", "domain", "n", "acc%", "AP%", "AP(conf)%", "AP(sure)%", "answer%", "acc@ans%", "ECE",
         "AUROC(sure)", "refusal phrase%", "acc without phrase%"],
        [[label(r["method"]), r["dataset"], r["domain"], str(r["n"]), pct(r["accuracy"]), pct(r["ap"]),
          pct(r["ap_answer_conf"]), pct(r["ap_sure_prob"]), pct(r["answer_rate"]), pct(r["accuracy_answered"]),
          "-" if r.get("ece_sure_prob") is None else f"{r['ece_sure_prob']:.3f}",
          "-" if (a := sure_auroc(r)) is None else f"{a:.3f}", *phrase_columns(r)]
         for r in study["results"]])
    pt = [r for r in study["results"] if r["method"] == "base" and "pretrain_t_threshold" in r]
    pretrain = markdown_table(
        ["dataset", "domain", "threshold (train)", "answer%", "acc@ans%"],
        [[r["dataset"], r["domain"], f"{r['pretrain_t_threshold']:.3f}", pct(r["pretrain_t_answer_rate"]),
          pct(r["pretrain_t_accuracy_answered"])] for r in pt])
    sets = refusal_sets_in_order(study)
    methods = [m for m in ORDER if any(r["method"] == m for r in study["refusal"])]
    refusal_idx = {(r["method"], r["dataset"], r["domain"]): r for r in study["refusal"]}
    refusal = markdown_table(
        ["model"] + [f"{s} refused% / over-refused%" for s in sets],
        [[label(m)] + [f"{pct(refusal_idx.get((m, s, 'unanswerable'), {}).get('refusal_rate'))} / "
                       f"{pct(refusal_idx.get((m, s, 'answerable'), {}).get('refusal_rate'))}" for s in sets]
         for m in methods])
    how = markdown_table(
        ["model", "set", "questions", "n", "refused%", "by p(sure) < 0.5 %", "by a refusal phrase %", "mean p(sure)"],
        [[label(r["method"]), r["dataset"], r["domain"], str(r["n"]), pct(r.get("refusal_rate")),
          pct(r.get("refused_by_unsure")), pct(r.get("refused_by_phrase")),
          "-" if r.get("mean_sure_prob") is None else f"{r['mean_sure_prob']:.3f}"]
         for r in sorted(study["refusal"], key=lambda r: (ORDER.index(r["method"]), sets.index(r["dataset"]),
                                                          r["domain"] != "unanswerable"))])
    datasets = study["args"]["datasets"].split(",")
    quoted = [(m, d, dom, v, r) for m, d, dom, v, r in PAPER_AP if d in datasets]
    paper = markdown_table(
        ["paper model", "data", "domain", "paper Vanilla", "paper R-Tuning", "ours Vanilla", "ours R-Tuning"],
        [[m, d, dom, f"{v:.2f}", f"{r:.2f}", pct(ap.get("vanilla", {}).get((d, dom))),
          pct(ap.get("unsure", {}).get((d, dom)))] for m, d, dom, v, r in quoted]) if quoted else (
        f"The paper's AP figures quoted in SPEC.md cover none of this study's datasets ({', '.join(datasets)}).")
    paper_ref = markdown_table(
        ["set", "method", "paper (LLaMA-13B)", "ours"],
        [[s, label(m), f"{v:.2f}", pct(refusal_idx.get((m, s, "unanswerable"), {}).get("refusal_rate"))]
         for s, by in PAPER_REFUSAL.items() for m, v in by.items()])
    checked = checked if checked is not None else checked_claims(study)
    checks = markdown_table(["claim", "ours", "verdict"], checked) if checked else (
        "None: every claim compares two models on the same questions (R-Tuning with Vanilla, or R-Tuning-U "
        "with R-Tuning), and this study has not evaluated both models of any such pair.")
    refusal_section = f"""{refusal}

A question counts as refused when the model's p(sure) after its answer is below 0.5 or its
answer contains a refusal phrase (the 16 R-Tuning-R phrases and close variants):

{how}""" if study["refusal"] else "None in this study: `--refusal_sets` named no set."
    drawn, kept = plots(study, Path(study.get("out", ".")) / "eval", page.parent / "img")
    images = drawn + kept
    figures = ("\n".join(f"![{i}](img/{i})" for i in images) if images else
               "(no plots: matplotlib is not installed, or no records to draw them from)")
    if kept:
        figures = ("Drawn by an earlier report from the per-question records, which are gone"
                   + ("; the risk-coverage plots need them" if not any("risk_coverage" in i for i in kept) else "")
                   + ":\n\n" + figures)
    work = lambda s: s.get("work_s", s["wall_time_s"])
    steps = markdown_table(
        ["step", "wall time (s), over every invocation", "in the last invocation (s)"],
        [[s["step"] + (" (reused)" if s.get("reused") else ""), "-" if work(s) is None else f"{work(s):.1f}",
          f"{s['wall_time_s']:.1f}"] for s in study["steps"]]
        # a recovered study keeps the total its page showed (a sum of times rounded to 0.1 s can be a second off)
        + [["**total**", f"{study.get('steps_total_s', sum(work(s) or 0 for s in study['steps'])):.0f}",
            f"{study['wall_time_s']:.0f}"]])
    # each evaluation recorded the hash of the file it read
    used = {f"{r['dataset']} {r['domain']}": r["data_sha256"] for r in study["results"] + study["refusal"]
            if r.get("data_sha256")}
    for dataset in study["args"]["datasets"].split(","):  # and the probes, of the training files
        meta = Path(study.get("out", ".")) / "data" / f"{dataset}_unsure.meta.json"
        if meta.is_file():
            used[f"{dataset} train"] = read_json(meta)["data_sha256"]
    held = study.get("data_sha256") or {}  # the study's own record of its files, for those neither names
    used.update({k: v for k, v in held.items() if k not in used})
    hashes = "\n".join(f"- `{k}`: `{v[:16]}…`" for k, v in sorted(used.items()))
    runs = study.get("invocations") or [{k: study.get(k) for k in ("command", "git_commit", "wall_time_s", "complete")}]
    invocations = markdown_table(
        ["#", "started (UTC)", "commit", "wall time (s)", "ran to the end", "command"],
        [[str(i), r.get("started") or "-", f"`{(r.get('git_commit') or '-')[:12]}`",
          "-" if r.get("wall_time_s") is None else f"{r['wall_time_s']:.0f}",
          "yes" if r.get("complete") else f"no ({r['stopped']})" if r.get("stopped") else "no",
          f"`{r.get('command')}`"] for i, r in enumerate(runs, 1)])
    commits = Counter(r["git_commit"] for r in study["results"] + study["refusal"] if r.get("git_commit"))
    if not commits and study.get("evaluations_per_commit"):  # rows recovered without their commits
        commits = Counter(study["evaluations_per_commit"])
    per_commit = ", ".join(f"`{c[:12]}` {n}" for c, n in commits.most_common()) or "none"
    counted = study.get("evaluations_per_commit_note") or (
        "the code that computed each evaluation's records: the last commit that added any; a later invocation "
        "that found them all done and reused them is not credited")
    a = study["args"]
    notes = f"\n{notes.strip()}\n" if notes.strip() else ""
    findings = f"\n{findings.strip()}\n" if findings.strip() else ""
    history = f"{history.strip()}\n\n" if history.strip() else ""
    recovered = f"{study['recovered'].strip()}\n\n" if study.get("recovered") else ""
    traced = ("every number traces to a per-question file under the study folder" if has_records(study) else
              "the per-question files its numbers were computed from are no longer on disk (see Provenance)")
    return f"""# Results: R-Tuning on {study['model']}

Generated by `python -m rtuning.report` from the study's JSON; {traced}. In order: what was
run, the tables, the paper's claims checked, the plots, and the provenance (sittings, code,
data, time).

## What was run

{what_was_run(study)}{notes}
## AP (%) by method

{ap_table}

Pretrain-T ranks by the base model's answer confidence alone; Vanilla-C by the entropy of
{a['vanilla_c_samples']} sampled answers of the vanilla model; the others by 0.5 x answer confidence +
0.5 x p(sure), the paper's metric.

## Honesty metrics beyond AP

{honesty_section(study)}
## Pretrain-T operating point (threshold chosen on the training questions)

{pretrain}

## Every evaluation

answer% and acc@ans% are at the sure/unsure decision (p(sure) > 0.5); ECE is that of p(sure)
(15 bins) and AUROC(sure) how well p(sure) separates right answers from wrong ones (0.5: not
at all); "refusal phrase%" is the share of answers that decline in words (counted wrong in
acc%), "acc without phrase%" the accuracy on the others.

{detail}

## Refusal on unanswerable questions (and over-refusal on their answerable controls)

{refusal_section}

## The paper's numbers beside ours

Different model (the paper: OpenLLaMA-3B, LLaMA-7B/13B; here {study['model']}), and some data are
stand-ins (see ../shared/R-Tuning-data/SOURCES.md), so compare directions, not values.

{paper}
{chr(10) + paper_ref + chr(10) if study["refusal"] else ""}
## The paper's claims, checked

Each verdict comes from a paired bootstrap over the test questions (1,000 resamples, both
models scored on the same draw): **supported** when the 95% interval of the difference lies
above zero, **contradicted** when below, **inconclusive** when it contains zero. "Competitive"
(R-Tuning-U) is **supported** when the interval's lower end is above -2 AP points and **not
supported** when its upper end is below -2.

{checks}
{findings}
## Plots

{figures}

## Provenance

{recovered}{history}The study's invocations (a study resumes, so one may span several sittings; each
finished step is reused by the next invocation):

{invocations}

Evaluations per commit ({counted}): {per_commit}.
Environment of the last invocation: {json.dumps(study['environment'])}

Data files (SHA-256):

{hashes}

{steps}
"""


STAMP_PREFIX = "<!-- rtuning.report study: "


def study_identity(study: dict) -> str:
    """What makes a study itself across its invocations: its model and when its first invocation started."""
    runs = study.get("invocations") or [{}]
    return f"model {study.get('model')}, started {runs[0].get('started') or study.get('started') or 'unknown'}"


def page_identity(page: Path) -> str | None:
    """The identity of the study an existing page was made from: its stamp, else the JSON summary beside it
    (pages written before stamps), else None (not a page this report made)."""
    first = page.read_text(encoding="utf-8").split("\n", 1)[0]
    if first.startswith(STAMP_PREFIX):
        return first[len(STAMP_PREFIX):].split(" | ", 1)[0]
    summary = page.with_suffix(".json")
    try:
        old = read_json(summary)
        return study_identity({"model": old["model"], "invocations": old["invocations"]}) if old.get("invocations") else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _read_note(path: str | None) -> str:
    """A hand-written markdown note's text ("" without one); a missing file is one clear line."""
    if not path:
        return ""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SystemExit(f"error: cannot read the note {path}: {e}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", help="study.json written by python -m rtuning.reproduce")
    p.add_argument("--page", default="docs/results.md")
    p.add_argument("--notes", default=None, help="a markdown file placed under \"What was run\" (the run's scale "
                                                "and why, what differs from the paper)")
    p.add_argument("--findings", default=None, help="a markdown file placed under the claims (what the run finds, "
                                                   "in words)")
    p.add_argument("--provenance_notes", default=None,
                   help="a markdown file that opens the Provenance section: the running history the study's JSON "
                        "does not hold (sittings, pauses, lost folders)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a page that was made from another study (by default that is refused)")
    args = p.parse_args(argv)
    study = read_json(Path(args.study))
    study.setdefault("out", str(Path(args.study).parent))
    page = Path(args.page)
    identity = study_identity(study)
    if page.is_file() and not args.overwrite:
        # a smoke study's report must not silently replace the committed full-scale page
        made_from = page_identity(page)
        if made_from != identity:
            origin = f"another study ({made_from})" if made_from else "no study this report knows (it has no stamp)"
            p.exit(1, f"error: {page} was made from {origin}, not from {args.study} ({identity}); "
                      "pass --overwrite to replace it, or --page another file\n")
    page.parent.mkdir(parents=True, exist_ok=True)
    notes, findings, history = (_read_note(f) for f in (args.notes, args.findings, args.provenance_notes))
    checked = checked_claims(study)
    # the stamp (an HTML comment, invisible on the rendered page) lets a later report tell whose page this is
    stamp = f"{STAMP_PREFIX}{identity} | {args.study} -->\n"
    page.write_text(stamp + render(study, page, notes, checked, findings, history), encoding="utf-8")
    summary = {"model": study["model"], "commit": study["git_commit"], "complete": study.get("complete", True),
               "invocations": [{k: r.get(k) for k in ("started", "git_commit", "wall_time_s", "complete")}
                               for r in study.get("invocations", [])],
               "limits": {k: study["args"].get(k) for k in ("limit", "test_limit", "refusal_limit")},
               "n": {f"{r['method']}|{r['dataset']}|{r['domain']}": r["n"] for r in study["results"] + study["refusal"]},
               "claims": [dict(zip(("claim", "ours", "verdict"), c)) for c in checked], "ap": {
        f"{m}|{d}|{dom}": v for m, cells in ap_rows(study).items() for (d, dom), v in cells.items()},
        "refusal": {f"{r['method']}|{r['dataset']}|{r['domain']}": r["refusal_rate"] for r in study["refusal"]}}
    honesty = {f"{r['method']}|{r['dataset']}|{r['domain']}": {k: v for k, v in honesty_of(study, r).items()
                                                               if k != "knowledge_cells" and v is not None}
               for r in study["results"]}
    for m in ORDER:
        for s in refusal_sets_in_order(study):
            honesty[f"{m}|{s}|pair"] = {k: v for k, v in abstention_of(study, m, s).items() if v is not None}
    summary["honesty"] = {k: v for k, v in honesty.items() if v}
    write_json(page.with_suffix(".json"), summary)
    print(f"wrote {page} and {page.with_suffix('.json')}")


if __name__ == "__main__":
    main()
