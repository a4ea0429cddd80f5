"""Fused LEVER gradient against dense-target BCE: time and peak memory of one classifier step.

B = ``--batch`` rows (512), L = ``--labels`` (131,072), d = ``--dim`` (384): a linear classifier
W [L, d] over inputs x [B, d]. Soft labels as in ``bench/loss_overhead.py`` (teacher score on each
positive + ``--tau`` neighbours a row). One step yields ``W.grad`` and the input gradient:

- ``bce-dense-target``: what a plain PyTorch loop does for soft targets: a dense [B, L] target
  from the CSR rows (``t = λ·y + (1−λ)·p̂`` densified), ``binary_cross_entropy_with_logits``,
  autograd backward.
- ``lever-dense``: ``soft_targets`` + ``LeverBCELoss`` (sparse targets) with autograd.
- ``lever-fused``: no autograd for the classifier: ``σ(z)`` in place, ``LeverFusedBCE.grad_``
  turns it into ``σ(z) − t``, then the two backward GEMMs (Renée's scheme).
- ``lever-fused+loss``: the same plus the loss value from the probabilities.

Each variant runs in its own subprocess. Peak memory is the step's own: the kernel's peak-RSS
counter is reset (``/proc/self/clear_refs``) after setup, and ``VmHWM − VmRSS`` is read after the
step; the median over ``--repeats`` steps is reported, with the median step time. Writes
bench/results/fused_memory.json and .md.

    OMP_NUM_THREADS=1 .venv/bin/python bench/fused_memory.py
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loss_overhead import make_rows

RESULTS = Path(__file__).resolve().parent / "results"
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
clock = CLOCKS["cpu"]
VARIANTS = ("bce-dense-target", "lever-dense", "lever-fused", "lever-fused+loss")


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> None:
    # "5" resets the peak RSS counter (VmHWM) to the current RSS (Linux >= 4.0)
    Path("/proc/self/clear_refs").write_text("5")


def worker(args) -> dict:
    import torch
    import torch.nn.functional as F

    from lever.loss import LeverBCELoss, LeverFusedBCE, soft_targets

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    B, L, d = args.batch, args.labels, args.dim
    y_all, soft_all = make_rows(4 * B, L, args.tau, seed=1)
    W = (0.01 * torch.randn(L, d)).requires_grad_()
    x_all = torch.randn(4 * B, d)
    rng = np.random.default_rng(2)
    fused, dense = LeverFusedBCE("sum"), LeverBCELoss("sum")

    def step(variant: str) -> tuple[float, float, float]:
        ids = rng.choice(4 * B, B, replace=False)
        x = x_all[ids].clone().requires_grad_()
        y_rows, soft_rows = y_all[ids], soft_all[ids]
        W.grad = None
        base = _status_mib("VmRSS")
        _reset_peak()
        t0 = clock()
        loss = float("nan")
        if variant == "bce-dense-target":
            t = torch.from_numpy((0.5 * y_rows + 0.5 * soft_rows).toarray())
            out = F.binary_cross_entropy_with_logits(x @ W.T, t, reduction="sum")
            out.backward()
            loss = out.item()
        elif variant == "lever-dense":
            out = dense(x @ W.T, soft_targets(ids, y_rows, soft_rows, 0.5, "mix"))
            out.backward()
            loss = out.item()
        else:
            targets = soft_targets(ids, y_rows, soft_rows, 0.5, "mix")
            with torch.no_grad():
                p = torch.sigmoid_(x @ W.T)
                if variant == "lever-fused+loss":
                    loss = fused.loss_value(p, targets).item()
                fused.grad_(p, targets)
                W.grad = p.T @ x
                x.grad = p @ W
                del p
        dt = clock() - t0
        peak = _status_mib("VmHWM") - base
        return dt, peak, loss

    step(args.variant)  # warm-up
    runs = [step(args.variant) for _ in range(args.repeats)]
    return {
        "variant": args.variant,
        "batch": B,
        "labels": L,
        "dim": d,
        "time_s": statistics.median(r[0] for r in runs),
        "peak_mib": statistics.median(r[1] for r in runs),
        "times_s": [r[0] for r in runs],
        "peaks_mib": [r[1] for r in runs],
        "loss": runs[-1][2],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--labels", type=int, default=131072)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--tau", type=int, default=15)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                    help="cpu: process CPU time (robust to other jobs on a shared machine); wall")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--variant", default="lever-fused", help=argparse.SUPPRESS)
    args = ap.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    if args.worker:
        print(json.dumps(worker(args)))
        return

    results = []
    for variant in args.variants:
        cmd = [sys.executable, __file__, "--worker", "--variant", variant]
        for k in ("batch", "labels", "dim", "tau", "repeats", "threads", "clock"):
            cmd += [f"--{k}", str(getattr(args, k))]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        res = json.loads(out.strip().splitlines()[-1])
        print(f"{variant:>18}: {res['time_s'] * 1e3:8.1f} ms  peak +{res['peak_mib']:7.1f} MiB  loss {res['loss']:.6g}",
              flush=True)
        results.append(res)

    from lever.utils.atomic import write_json_atomic, write_text_atomic

    by = {r["variant"]: r for r in results}
    ref = by.get("bce-dense-target")
    summary = {
        "config": {k: getattr(args, k) for k in ("batch", "labels", "dim", "tau", "repeats", "threads", "clock")},
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "note": "shared machine (2 cores, several jobs); medians over steps"},
        "target": "lever-fused peak memory <= bce-dense-target / 2",
        "results": results,
    }
    if ref is not None and "lever-fused" in by:
        summary["memory_reduction"] = ref["peak_mib"] / by["lever-fused"]["peak_mib"]
        summary["speedup"] = ref["time_s"] / by["lever-fused"]["time_s"]
    write_json_atomic(RESULTS / "fused_memory.json", summary)
    md = [
        "# Fused LEVER gradient vs dense-target BCE",
        "",
        (f"One classifier step (W.grad and the input gradient), B = {args.batch}, L = {args.labels:,}, "
        f"d = {args.dim}, float32 on CPU, {args.threads} thread(s); soft labels: teacher score on "
        f"each positive + {args.tau} neighbours a row. Peak = the step's own peak RSS above the "
        f"RSS before it (VmHWM reset through /proc/self/clear_refs). Median of {args.repeats} steps, "
        "one subprocess per variant, shared loaded machine; times are "
        f"{'process CPU time' if args.clock == 'cpu' else 'wall time'}. "
        "Target: fused peak ≤ ½ of dense-target BCE."),
        "",
        "| variant | step time (ms) | step peak memory (MiB) | peak vs dense-target BCE | loss |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        rel = f"{r['peak_mib'] / ref['peak_mib']:.2f}×" if ref else "–"
        loss = "not computed" if r["loss"] != r["loss"] else f"{r['loss']:.6g}"  # NaN: grad only
        md.append(f"| {r['variant']} | {r['time_s'] * 1e3:.0f} | {r['peak_mib']:.0f} | {rel} | {loss} |")
    if "memory_reduction" in summary:
        md += ["", (f"lever-fused uses {summary['memory_reduction']:.2f}× less step memory and is "
               f"{summary['speedup']:.2f}× as fast as dense-target BCE.")]
    write_text_atomic(RESULTS / "fused_memory.md", "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
