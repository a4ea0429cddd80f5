"""Renée's hand-written classifier step against a plain autograd BCEWithLogits step.

For each label count L, one process per (method, L) runs a few classifier steps (forward, loss
gradient, both matmuls, SGD with momentum) on a batch of B embeddings of width d with sparse
targets, and reports the median step time, the process's peak resident set over the measured steps
(same weights, inputs and optimizer in both, so the difference is the classifier step's memory),
and the per-step transient (allocated and freed every step). The JSON also keeps the first step's
footprint above the set-up level.

* ``renee``: ``ova_bce_grads`` (one preallocated [B, L] buffer: logits → σ in place → σ − t in
  place; no dense target, no autograd graph over [B, L]).
* ``autograd``: ``logits = E @ Wᵀ`` with autograd, a dense target built from the sparse one (as
  Renée's ``--default-impl``), ``BCEWithLogitsLoss(reduction="sum")``, ``backward()``.

usage: python bench/renee_speed.py [--labels 17157 131072] [--batch 256] [--dim 384] [--steps 5]
Writes bench/results/renee_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def worker(method: str, labels: int, batch: int, dim: int, steps: int, positives: int) -> dict:
    import torch

    from lever.loss import SparseTargets
    from lever_adapters.renee.model import ova_bce_grads

    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(labels, dim) * 0.02)
    opt = torch.optim.SGD([w], lr=0.01, momentum=0.9)
    emb = torch.randn(batch, dim)
    rows = torch.arange(batch).repeat_interleave(positives)
    cols = torch.randint(0, labels, (batch * positives,))
    t = SparseTargets(rows, cols, torch.full((rows.numel(),), 0.75), (batch, labels))
    out = torch.empty(batch, labels)
    # one step before measuring fills the optimizer state (momentum buffer) for both methods
    times = []
    base_rss = None
    # pages of `out` are committed on first write, so this is before any classifier buffer exists
    setup_rss = _rss_kib("VmRSS")
    for i in range(steps + 1):
        t0 = time.perf_counter()
        if method == "renee":
            if w.grad is None:  # one gradient buffer for the run, as ReneeBackbone keeps it
                w.grad = torch.zeros_like(w)
            _, g_emb, _ = ova_bce_grads(emb, w.detach(), t, out=out, grad_weight=w.grad.zero_())
        else:
            e = emb.clone().requires_grad_(True)
            target = t.to_dense()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                e @ w.t(), target, reduction="sum"
            )
            loss.backward()
            g_emb = e.grad
        opt.step()
        if method != "renee":
            opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
        del g_emb
        if i == 0:
            footprint = _rss_kib("VmHWM") - setup_rss
            base_rss = _rss_kib("VmRSS")
            Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to now
    peak = _rss_kib("VmHWM")
    return {
        "method": method,
        "labels": labels,
        "step_s_median": statistics.median(times[1:]),
        "step_s_all": times[1:],
        # high-water mark over the measured steps (reset after the warm-up step) minus the resident
        # level then: what a step needs above weights, optimizer state, inputs and kept buffers
        "peak_extra_mib": max(0, peak - base_rss) / 1024.0,
        # first step's high-water mark above the set-up level: every buffer the classifier step
        # needs (kept or transient), including the SGD momentum buffer both methods create
        "footprint_mib": max(0, footprint) / 1024.0,
        "peak_rss_mib": peak / 1024.0,
        "steady_rss_mib": base_rss / 1024.0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", type=int, nargs="+", default=[17157, 131072])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument(
        "--positives", type=int, default=8, help="target entries per row (labels + teacher)"
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds per method (load noise)"
    )
    ap.add_argument("--render", action="store_true", help="rewrite the markdown from the JSON only")
    ap.add_argument("--worker", nargs=2, metavar=("METHOD", "LABELS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        res = worker(
            args.worker[0], int(args.worker[1]), args.batch, args.dim, args.steps, args.positives
        )
        print(json.dumps(res))
        return 0

    if args.render:
        from lever.utils.atomic import write_text_atomic

        saved = json.loads((RESULTS / "renee_speed.json").read_text())
        write_text_atomic(RESULTS / "renee_speed.md", render(saved["meta"], saved["results"]))
        return 0
    rows = []
    for labels in args.labels:
        per_method: dict[str, list[dict]] = {"autograd": [], "renee": []}
        # Alternating rounds, a fresh process each (the RSS high-water mark is per process), so
        # that load from other jobs on the shared machine hits both methods alike.
        for _ in range(args.rounds):
            for method, found in per_method.items():
                cmd = [
                    sys.executable,
                    __file__,
                    "--worker",
                    method,
                    str(labels),
                    "--batch",
                    str(args.batch),
                    "--dim",
                    str(args.dim),
                    "--steps",
                    str(args.steps),
                    "--positives",
                    str(args.positives),
                    "--threads",
                    str(args.threads),
                ]
                env = {
                    **os.environ,
                    "OMP_NUM_THREADS": str(args.threads),
                    "MKL_NUM_THREADS": str(args.threads),
                }
                done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
                found.append(json.loads(done.stdout.strip().splitlines()[-1]))
        for method, runs in per_method.items():
            steps = [t for r in runs for t in r["step_s_all"]]
            rows.append(
                {
                    "method": method,
                    "labels": labels,
                    "step_s_median": statistics.median(steps),
                    "step_s_min": min(steps),
                    "step_s_all": steps,
                    "peak_extra_mib": statistics.median(r["peak_extra_mib"] for r in runs),
                    "steady_rss_mib": statistics.median(r["steady_rss_mib"] for r in runs),
                    "footprint_mib": statistics.median(r["footprint_mib"] for r in runs),
                }
            )
            print(
                f"L={labels} {method}: median {rows[-1]['step_s_median']:.3f} s/step "
                f"(min {rows[-1]['step_s_min']:.3f}), peak +{rows[-1]['peak_extra_mib']:.0f} MiB",
                flush=True,
            )

    from lever.utils.atomic import write_json_atomic, write_text_atomic

    load = os.getloadavg()
    meta = {
        "batch": args.batch,
        "dim": args.dim,
        "steps": args.steps,
        "positives_per_row": args.positives,
        "threads": args.threads,
        "rounds": args.rounds,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "loadavg_at_end": load,
        "note": "CPU only, fp32; shared machine under load from other jobs: absolute times are noisy",
    }
    write_json_atomic(RESULTS / "renee_speed.json", {"meta": meta, "results": rows})
    write_text_atomic(RESULTS / "renee_speed.md", render(meta, rows))
    print(render(meta, rows))
    return 0


def render(meta: dict, rows: list[dict]) -> str:
    lines = [
        "# Renée classifier step vs autograd BCEWithLogits (CPU, fp32)",
        "",
        (
            f"B={meta['batch']}, d={meta['dim']}, {meta['positives_per_row']} target entries per row, "
            f"{meta['threads']} thread(s), median (and min) over {meta['rounds']} alternating rounds x "
            f"{meta['steps']} steps, each after one warm-up step; load average at end "
            f"{meta['loadavg_at_end'][0]:.1f} (shared machine). Peak RSS: the process's resident-set "
            "high-water mark over the measured steps (same weights, inputs and optimizer in both); "
            "per-step transient: how much of it is allocated and freed every step."
        ),
        "",
        (
            "| L | method | step time, median (min) s | speed-up (median) | peak RSS (MiB) | "
            "peak RSS ratio | per-step transient (MiB) |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    labels_seen = sorted({r["labels"] for r in rows})
    for labels in labels_seen:
        ref = next(r for r in rows if r["labels"] == labels and r["method"] == "autograd")
        ref_peak = ref["steady_rss_mib"] + ref["peak_extra_mib"]
        for r in (x for x in rows if x["labels"] == labels):
            peak = r["steady_rss_mib"] + r["peak_extra_mib"]
            lines.append(
                f"| {labels:,} | {r['method']} | {r['step_s_median']:.3f} ({r['step_s_min']:.3f}) | "
                f"{ref['step_s_median'] / r['step_s_median']:.2f}x | {peak:.0f} | "
                f"{peak / ref_peak:.2f} | {r['peak_extra_mib']:.0f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
