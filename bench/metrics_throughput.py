"""Streaming evaluation throughput and memory: lever.metrics vs napkinXC.

Synthetic input shaped like a large XC test set: ``--rows`` test points (default 1M) over
``--labels`` labels (default 131,072), Zipf-skewed ground truth (1 + Poisson(4) labels a point)
and top-``--topk`` (default 100) CSR predictions, generated batch by batch from fixed seeds so
every run sees identical input and the full score matrix never exists.

Each measurement runs in its own subprocess so its peak RSS (VmHWM) is its own:

- ``lever``: ``XCMetrics.update`` over all rows in batches, all metrics @1..k.
- ``lever-subset`` and ``napkinxc``: the first ``--napkin-rows`` rows (napkinXC loops over rows
  in Python, so the full set would take hours); napkinXC gets the same CSR predictions and runs
  its nine metric functions. Their results are compared (max abs difference).

Writes bench/results/metrics_throughput.json and .md.

    OMP_NUM_THREADS=1 .venv/bin/python bench/metrics_throughput.py            # full run
    OMP_NUM_THREADS=1 .venv/bin/python bench/metrics_throughput.py --rows 50000 --napkin-rows 2000
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

RESULTS = Path(__file__).resolve().parent / "results"


def _rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _label_sampler(num_labels: int, skew: float = 1.0):
    p = 1.0 / np.arange(1, num_labels + 1) ** skew
    cdf = np.cumsum(p / p.sum())

    def sample(rng, size):
        return np.minimum(np.searchsorted(cdf, rng.random(size)), num_labels - 1)

    return sample


def make_truth(rows: int, num_labels: int, seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    sample = _label_sampler(num_labels)
    counts = 1 + rng.poisson(4, size=rows)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    labels = sample(rng, indptr[-1])
    # napkinXC's macro metrics average over labels 0..largest label seen, ours over all labels:
    # make the last label appear so the two agree.
    labels[0] = num_labels - 1
    Y = sp.csr_matrix((np.ones(indptr[-1], np.float32), labels, indptr), shape=(rows, num_labels))
    Y.sum_duplicates()
    Y.data[:] = 1.0
    return Y


def make_preds(Y: sp.csr_matrix, start: int, stop: int, top: int, seed: int) -> sp.csr_matrix:
    """Top-``top`` scores of rows start..stop: about 60% of true labels plus skewed distractors."""
    rng = np.random.default_rng([seed, start])
    L = Y.shape[1]
    b = stop - start
    sample = _label_sampler(L, 0.8)
    cols = sample(rng, (b, top))
    scores = rng.random((b, top), dtype=np.float32)
    t = Y[start:stop]
    t_rows = np.repeat(np.arange(b), np.diff(t.indptr))
    keep = rng.random(t.nnz) < 0.6
    slot = rng.integers(0, top, size=t.nnz)
    cols[t_rows[keep], slot[keep]] = t.indices[keep]
    scores[t_rows[keep], slot[keep]] += 0.5
    P = sp.csr_matrix((scores.ravel(), cols.ravel(), np.arange(0, b * top + 1, top)), shape=(b, L))
    P.sum_duplicates()
    return P


def _inputs(args):
    Y = make_truth(args.rows, args.labels, args.seed)
    trn = make_truth(max(args.rows // 2, 1000), args.labels, args.seed + 1)
    from lever.metrics import inverse_propensity

    return Y, inverse_propensity(trn, 0.55, 1.5)


def worker_lever(args) -> dict:
    from lever.metrics import XCMetrics

    rows = args.rows if args.mode == "lever" else args.napkin_rows
    Y, q = _inputs(args)
    Y = Y[:rows]
    acc = XCMetrics(Y, q, k=args.k)
    rss_before = _rss_mib("VmRSS")
    gen = ev = 0.0
    for s in range(0, rows, args.batch):
        e = min(rows, s + args.batch)
        t0 = time.perf_counter()
        P = make_preds(Y, s, e, args.topk, args.seed)
        t1 = time.perf_counter()
        acc.update(slice(s, e), P)
        ev += time.perf_counter() - t1
        gen += t1 - t0
    t0 = time.perf_counter()
    res = acc.summary()
    ev += time.perf_counter() - t0
    return {"rows": rows, "eval_s": ev, "gen_s": gen, "rss_before_mib": rss_before,
            "peak_rss_mib": _rss_mib("VmHWM"), "results": res}


def worker_napkin(args) -> dict:
    import napkinxc.metrics as nx

    rows = args.napkin_rows
    Y, q = _inputs(args)
    Y = Y[:rows]
    P = sp.vstack([make_preds(Y, s, min(rows, s + args.batch), args.topk, args.seed)
                   for s in range(0, rows, args.batch)]).tocsr()
    rss_before = _rss_mib("VmRSS")
    k = args.k
    fns = {
        "P": lambda: nx.precision_at_k(Y, P, k),
        "nDCG": lambda: nx.ndcg_at_k(Y, P, k),
        "PSP": lambda: nx.psprecision_at_k(Y, P, q, k),
        "PSnDCG": lambda: nx.psndcg_at_k(Y, P, q, k),
        "R": lambda: nx.recall_at_k(Y, P, k),
        "C": lambda: nx.coverage_at_k(Y, P, k),
        "MacroP": lambda: nx.macro_precision_at_k(Y, P, k),
        "MacroR": lambda: nx.macro_recall_at_k(Y, P, k),
        "MacroF1": lambda: nx.macro_f1_measure_at_k(Y, P, k),
    }
    res, per = {}, {}
    t_all = time.perf_counter()
    for name, fn in fns.items():
        t0 = time.perf_counter()
        vals = fn()
        per[name] = time.perf_counter() - t0
        res.update({f"{name}@{j + 1}": float(100 * v) for j, v in enumerate(vals[:k])})
    return {"rows": rows, "eval_s": time.perf_counter() - t_all, "per_metric_s": per,
            "rss_before_mib": rss_before, "peak_rss_mib": _rss_mib("VmHWM"), "results": res}


def _spawn(args, mode: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, "--rows", str(args.rows), "--labels",
           str(args.labels), "--topk", str(args.topk), "--k", str(args.k), "--batch",
           str(args.batch), "--napkin-rows", str(args.napkin_rows), "--seed", str(args.seed)]
    print(f"[{mode}] running ...", file=sys.stderr, flush=True)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--labels", type=int, default=131_072)
    ap.add_argument("--topk", type=int, default=100)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8192)
    ap.add_argument("--napkin-rows", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker", choices=["lever", "lever-subset", "napkinxc"], default=None)
    args = ap.parse_args()
    args.napkin_rows = min(args.napkin_rows, args.rows)
    if args.worker:
        args.mode = args.worker
        res = worker_napkin(args) if args.worker == "napkinxc" else worker_lever(args)
        print(json.dumps(res))
        return

    from lever.utils.atomic import write_json_atomic, write_text_atomic

    runs = {m: _spawn(args, m) for m in ("lever", "lever-subset", "napkinxc")}
    sub, nap = runs["lever-subset"]["results"], runs["napkinxc"]["results"]
    max_diff = max(abs(sub[key] - nap[key]) for key in nap)
    summary = {
        "config": {k: v for k, v in vars(args).items() if k not in ("worker",)},
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                    "note": "shared, loaded 2-core machine; OMP_NUM_THREADS as set by the caller"},
        "runs": runs,
        "rows_per_s": {m: r["rows"] / r["eval_s"] for m, r in runs.items()},
        "napkinxc_extrapolated_full_s": runs["napkinxc"]["eval_s"] / args.napkin_rows * args.rows,
        "max_abs_diff_percent_vs_napkinxc": max_diff,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json_atomic(RESULTS / "metrics_throughput.json", summary)
    L = runs["lever"]
    md = [
        "# Streaming metrics throughput",
        "",
        (f"{args.rows:,} test points x {args.labels:,} labels, top-{args.topk} CSR predictions, "
        f"all metrics @1..{args.k} (P, nDCG, PSP, PSnDCG, R, C, macro P/R/F1), batches of "
        f"{args.batch}. Shared, loaded machine; generation time excluded."),
        "",
        "| run | rows | eval time (s) | rows/s | RSS before loop (MiB) | peak RSS (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for m, r in runs.items():
        md.append(f"| {m} | {r['rows']:,} | {r['eval_s']:.1f} | {r['rows'] / r['eval_s']:,.0f} | "
                  f"{r['rss_before_mib']:.0f} | {r['peak_rss_mib']:.0f} |")
    md += [
        "",
        (f"napkinXC on all {args.rows:,} rows, extrapolated from its {args.napkin_rows:,}-row run: "
        f"{summary['napkinxc_extrapolated_full_s']:.0f} s (lever: {L['eval_s']:.1f} s)."),
        f"Largest difference between lever and napkinXC on the shared rows: {max_diff:.2e} points.",
        "",
        (f"lever results on {args.rows:,} rows: P@1 {L['results']['P@1']:.2f}, "
        f"P@5 {L['results'][f'P@{args.k}']:.2f}, PSP@5 {L['results'][f'PSP@{args.k}']:.2f}, "
        f"C@5 {L['results'][f'C@{args.k}']:.2f}."),
    ]
    write_text_atomic(RESULTS / "metrics_throughput.md", "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
