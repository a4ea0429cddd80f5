"""Per-step overhead of the LEVER loss over plain BCE, same model and batch, three forms.

A one-vs-all linear classifier over ``--dim``-d inputs (W: L × d) trains on batches of ``--batch``
rows. Ground truth is Zipf-skewed (1 + Poisson(4) positives a row); the soft labels hold a teacher
score on every positive plus ``--tau`` teacher neighbours a row (the shape ``lever soft-labels``
writes). One timed step includes building the targets from the batch's CSR rows, the forward,
the loss and the backward. Forms:

- ``dense``: logits [B, L] with autograd; BCE = ``binary_cross_entropy_with_logits`` against the
  dense ``y_rows.toarray()``; LEVER = ``soft_targets`` + ``LeverBCELoss``.
- ``shortlist``: logits for ``--shortlist`` candidates a row (positives first, then random
  labels), scored from gathered rows of W; BCE against the binary targets looked up for the
  candidates; LEVER = ``soft_targets`` + ``LeverShortlistBCELoss``.
- ``fused``: Renée-style hand-written backward (no autograd for the classifier): ``σ(z)`` in place,
  then BCE = subtract 1 at positives (stock Renée), LEVER = ``LeverFusedBCE.grad_`` with the soft
  targets; then both GEMMs of the backward.

Variants run interleaved, round after round, in one process per (L, form), and the median of
``--repeats`` rounds is reported, since the machine is shared. Writes
bench/results/loss_overhead.json and .md.

    OMP_NUM_THREADS=1 .venv/bin/python bench/loss_overhead.py
    OMP_NUM_THREADS=1 .venv/bin/python bench/loss_overhead.py --labels 17157 --repeats 3   # quick
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

RESULTS = Path(__file__).resolve().parent / "results"
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
clock = CLOCKS["cpu"]
FORMS = ("dense", "shortlist", "fused")


def make_rows(num_rows: int, num_labels: int, tau: int, seed: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Ground truth (binary) and soft labels (teacher score on each positive + tau neighbours)."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, num_labels + 1)
    cdf = np.cumsum(p / p.sum())
    counts = 1 + rng.poisson(4, num_rows)
    rows = np.repeat(np.arange(num_rows), counts)
    cols = np.minimum(np.searchsorted(cdf, rng.random(rows.size)), num_labels - 1)
    y = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(num_rows, num_labels))
    y.data[:] = 1.0
    n_rows = np.repeat(np.arange(num_rows), tau)
    n_cols = rng.integers(0, num_labels, n_rows.size)
    gt = y.tocoo()
    soft = sp.csr_matrix(
        (
            np.concatenate([rng.uniform(0.55, 1.0, gt.nnz), rng.uniform(0.5, 0.95, n_rows.size)]).astype(np.float32),
            (np.concatenate([gt.row, n_rows]), np.concatenate([gt.col, n_cols])),
        ),
        shape=(num_rows, num_labels),
    )
    soft.sum_duplicates()
    soft.data = np.minimum(soft.data, 1.0)
    return y, soft


def worker(args) -> dict:
    import torch
    import torch.nn.functional as F

    from lever.loss import (
        LeverFusedBCE,
        SparseTargets,
        lever_bce,
        lever_bce_shortlist,
        soft_targets,
    )

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    L, d, B, K = args.labels, args.dim, args.batch, args.shortlist
    y_all, soft_all = make_rows(args.pool, L, args.tau, seed=1)
    W = (0.01 * torch.randn(L, d)).requires_grad_()
    x_all = torch.randn(args.pool, d)
    rng = np.random.default_rng(2)
    fused = LeverFusedBCE("sum")

    def batch():
        ids = rng.choice(args.pool, B, replace=False)
        return ids, x_all[ids], y_all[ids], soft_all[ids]

    def shortlist_ids(y_rows) -> torch.Tensor:
        cand = torch.from_numpy(rng.integers(0, L, (B, K)))
        for r in range(B):  # positives first, as a training shortlist holds them
            pos = y_rows.indices[y_rows.indptr[r] : y_rows.indptr[r + 1]][:K]
            cand[r, : pos.size] = torch.from_numpy(pos.astype(np.int64))
        return cand

    def step(form: str, lever: bool, data) -> float:
        ids, x, y_rows, soft_rows = data
        cand = shortlist_ids(y_rows) if form == "shortlist" else None
        t0 = clock()
        if form == "dense":
            z = x @ W.T
            if lever:
                loss = lever_bce(z, soft_targets(ids, y_rows, soft_rows, 0.5, "mix"), "sum")
            else:
                loss = F.binary_cross_entropy_with_logits(z, torch.from_numpy(y_rows.toarray()), reduction="sum")
            loss.backward()
        elif form == "shortlist":
            z = torch.einsum("bd,bkd->bk", x, W[cand])
            if lever:
                loss = lever_bce_shortlist(z, cand, soft_targets(ids, y_rows, soft_rows, 0.5, "mix"), "sum")
            else:
                target = SparseTargets.from_csr(y_rows).lookup(cand)
                loss = F.binary_cross_entropy_with_logits(z, target, reduction="sum")
            loss.backward()
        else:
            with torch.no_grad():
                p = torch.sigmoid_(x @ W.T)
                if lever:
                    fused.grad_(p, soft_targets(ids, y_rows, soft_rows, 0.5, "mix"))
                else:  # stock Renée: subtract 1 at the positives
                    coo = y_rows.tocoo()
                    r, c = torch.from_numpy(coo.row.astype(np.int64)), torch.from_numpy(coo.col.astype(np.int64))
                    p.index_put_((r, c), torch.full((r.numel(),), -1.0), accumulate=True)
                W.grad = p.T @ x
                _ = p @ W  # gradient w.r.t. the input, which the encoder would receive
        dt = clock() - t0
        W.grad = None
        return dt

    def loss_part(form: str, lever: bool, data) -> float:
        """Only what differs between the variants: targets from the CSR rows, the loss and its
        gradient w.r.t. the logits (or the in-place gradient), on logits computed beforehand."""
        ids, x, y_rows, soft_rows = data
        with torch.no_grad():
            if form == "shortlist":
                cand = shortlist_ids(y_rows)
                z0 = torch.einsum("bd,bkd->bk", x, W[cand])
            else:
                z0 = x @ W.T
        z = z0.requires_grad_() if form != "fused" else torch.sigmoid_(z0)
        t0 = clock()
        if form == "dense":
            if lever:
                loss = lever_bce(z, soft_targets(ids, y_rows, soft_rows, 0.5, "mix"), "sum")
            else:
                loss = F.binary_cross_entropy_with_logits(z, torch.from_numpy(y_rows.toarray()), reduction="sum")
            loss.backward()
        elif form == "shortlist":
            if lever:
                loss = lever_bce_shortlist(z, cand, soft_targets(ids, y_rows, soft_rows, 0.5, "mix"), "sum")
            else:
                target = SparseTargets.from_csr(y_rows).lookup(cand)
                loss = F.binary_cross_entropy_with_logits(z, target, reduction="sum")
            loss.backward()
        elif lever:
            fused.grad_(z, soft_targets(ids, y_rows, soft_rows, 0.5, "mix"))
        else:
            coo = y_rows.tocoo()
            r, c = torch.from_numpy(coo.row.astype(np.int64)), torch.from_numpy(coo.col.astype(np.int64))
            z.index_put_((r, c), torch.full((r.numel(),), -1.0), accumulate=True)
        return clock() - t0

    parts: dict[str, list[float]] = {"bce": [], "lever": []}
    for rnd in range(3 * args.repeats):
        data = batch()
        for lever in ((False, True) if rnd % 2 == 0 else (True, False)):
            parts["lever" if lever else "bce"].append(loss_part(args.form, lever, data))

    times: dict[str, list[float]] = {"bce": [], "lever": []}
    for _ in range(2):  # warm-up
        data = batch()
        step(args.form, False, data), step(args.form, True, data)
    for rnd in range(args.repeats):
        data = batch()
        order = (False, True) if rnd % 2 == 0 else (True, False)
        for lever in order:
            times["lever" if lever else "bce"].append(step(args.form, lever, data))
    med = {k: statistics.median(v) for k, v in times.items()}
    part = {k: statistics.median(v) for k, v in parts.items()}
    return {
        "loss_part_bce_s": part["bce"],
        "loss_part_lever_s": part["lever"],
        # the step ratio rebuilt from the robust part: plain step + what LEVER adds
        "ratio_from_parts": (med["bce"] + part["lever"] - part["bce"]) / med["bce"],
        "labels": L,
        "form": args.form,
        "batch": B,
        "dim": d,
        "shortlist": K if args.form == "shortlist" else None,
        "bce_s": med["bce"],
        "lever_s": med["lever"],
        "ratio": med["lever"] / med["bce"],
        "bce_all_s": times["bce"],
        "lever_all_s": times["lever"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--labels", type=int, nargs="+", default=[17157, 131072])
    ap.add_argument("--forms", nargs="+", default=list(FORMS), choices=FORMS)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--shortlist", type=int, default=512)
    ap.add_argument("--tau", type=int, default=15)
    ap.add_argument("--pool", type=int, default=8192, help="rows batches are drawn from")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                    help="cpu: process CPU time (robust to other jobs on a shared machine); wall")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--form", default="dense", help=argparse.SUPPRESS)
    args = ap.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    if args.worker:
        args.labels = args.labels[0]
        print(json.dumps(worker(args)))
        return

    results = []
    for L in args.labels:
        for form in args.forms:
            cmd = [sys.executable, __file__, "--worker", "--form", form, "--labels", str(L)]
            for k in ("batch", "dim", "shortlist", "tau", "pool", "repeats", "threads", "clock"):
                cmd += [f"--{k}", str(getattr(args, k))]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            res = json.loads(out.strip().splitlines()[-1])
            print(f"L={L:>7} {form:>9}: bce {res['bce_s'] * 1e3:8.1f} ms  lever {res['lever_s'] * 1e3:8.1f} ms  "
                  f"ratio {res['ratio']:.3f}  loss part {res['loss_part_bce_s'] * 1e3:.1f} vs "
                  f"{res['loss_part_lever_s'] * 1e3:.1f} ms  ratio from parts {res['ratio_from_parts']:.3f}",
                  flush=True)
            results.append(res)

    from lever.utils.atomic import write_json_atomic, write_text_atomic

    summary = {
        "config": {k: getattr(args, k) for k in ("batch", "dim", "shortlist", "tau", "pool", "repeats", "threads", "clock")},
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "note": "shared machine (2 cores, several jobs); medians of interleaved rounds"},
        "target": "lever / bce <= 1.05",
        "results": results,
    }
    write_json_atomic(RESULTS / "loss_overhead.json", summary)
    md = [
        "# LEVER loss overhead per training step",
        "",
        (f"Linear one-vs-all classifier, d = {args.dim}, batch {args.batch}, {args.threads} thread(s); "
        f"soft labels: teacher score on every positive + {args.tau} neighbours a row; shortlist "
        f"K = {args.shortlist}. One step = targets from CSR rows + forward + loss + backward. Median "
        f"of {args.repeats} interleaved rounds on a shared, loaded machine; times are "
        f"{'process CPU time (single-threaded, so other jobs on the machine disturb it less than wall time)' if args.clock == 'cpu' else 'wall time'}. "
        "Target: ratio ≤ 1.05."),
        "",
        ("The *loss part* times only what differs between the variants (targets, loss, gradient "
        f"w.r.t. the logits; median of {3 * args.repeats} rounds), which the machine's load disturbs "
        "far less than whole steps; *ratio from parts* = (BCE step + LEVER part − BCE part) / BCE step."),
        "",
        ("| labels | form | BCE step (ms) | LEVER step (ms) | step ratio | BCE loss part (ms) "
        "| LEVER loss part (ms) | ratio from parts |"),
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        md.append(f"| {r['labels']:,} | {r['form']} | {r['bce_s'] * 1e3:.1f} | {r['lever_s'] * 1e3:.1f} | "
                  f"{r['ratio']:.3f} | {r['loss_part_bce_s'] * 1e3:.1f} | {r['loss_part_lever_s'] * 1e3:.1f} | "
                  f"{r['ratio_from_parts']:.3f} |")
    write_text_atomic(RESULTS / "loss_overhead.md", "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
