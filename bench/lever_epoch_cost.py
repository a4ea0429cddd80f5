"""What LEVER adds to an epoch: Renée with label rows against Renée with label rows + soft labels.

LEVER's targets ``t = λ·y + (1−λ)·p̂`` have ``nnz(t)`` entries per batch, so on top of a
label-rows epoch LEVER should cost a scatter of ``nnz(t)`` per step and little else. This times the
shared loop's per-step work on the same rows (documents + label rows, one seeded permutation, the
same steps) for each variant:

* ``label_rows``: no teacher (targets = y);
* ``lever_td0`` / ``lever_td5``: soft labels built with ``--tau-d 0`` / ``--tau-d 5``;
* ``lever_td5_hooks`` (``--hooks``): the same with the target hooks run per batch (what a run with a
  plugin implementing ``lever_targets`` pays) instead of the once-per-run target table.

Per step: the batch (targets, encoder inputs), Renée's ``forward_backward`` (encoder, fused
classifier step) and the optimizer steps, split into those parts. Variants run round-robin in
chunks of steps, so a change of machine load hits all of them alike. ``--profile`` adds a cProfile
of each variant's steps (top functions by own time).

usage: python bench/lever_epoch_cost.py --data runs/wordnet \\
          --soft-td0 runs/soft_zs_wordnet_td0.npz --soft-td5 runs/soft_zs_wordnet_td5.npz \\
          [--embeddings runs/zeroshot_wordnet] [--steps 200] [--batch-size 64] [--threads 1]
Writes bench/results/lever_epoch_cost.{json,md} (``--tag`` adds a suffix).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
PARTS = ("targets", "inputs", "forward_backward", "optimizer")


class Variant:
    """One variant's model, optimizers and batch builder, stepped on demand."""

    def __init__(self, name, dataset, soft_path, args, plugin_manager, cache_dir):
        import numpy as np
        import torch

        from lever.soft_labels import SoftLabels
        from lever.train.backbone import BuildContext
        from lever.train.distributed import DistEnv
        from lever.train.loop import build_optimizers
        from lever.train.params import LeverParams, OptimParams, RunParams, TrainParams
        from lever.train.rows import BatchBuilder, TrainRows
        from lever_adapters.renee.train import ReneeBackbone

        aug = dataset.with_label_rows()
        soft = SoftLabels.load(soft_path, dataset=dataset).csr if soft_path else None
        self.rows = TrainRows(Y=aug.Y.tocsr(), num_docs=aug.num_docs, soft=soft)
        self.name, self.np, self.torch = name, np, torch
        encoder = {"kind": "cached+tfidf", "embeddings": args.embeddings} if args.embeddings else {"kind": "tfidf"}
        self.backbone = ReneeBackbone({"encoder": encoder})
        torch.manual_seed(args.seed)
        ctx = BuildContext(dataset, self.rows, TrainParams(run=RunParams(seed=args.seed)),
                           torch.device("cpu"), DistEnv(), cache_dir, plugin_manager)
        self.module = self.backbone.build(ctx).train()
        self.optimizers = build_optimizers(
            self.backbone.param_groups(self.module), OptimParams()
        )
        t0 = time.perf_counter()
        loss_params = LeverParams(lam=args.lam).validate().loss_params("sum")
        self.builder = BatchBuilder(self.rows, self.backbone.batch_inputs, loss_params, plugin_manager)
        self.setup_s = time.perf_counter() - t0
        self.seconds = dict.fromkeys(PARTS, 0.0)
        self.target_nnz = 0
        self.steps = 0
        self.profile = cProfile.Profile() if args.profile else None

    def step(self, row_ids, global_rows: int, lr_factor: float) -> None:
        from lever.train.backbone import AmpContext
        from lever.train.rows import Batch

        torch = self.torch
        for _, opt, base in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = base * lr_factor
        if self.profile is not None:
            self.profile.enable()
        marks = [time.perf_counter()]
        targets = self.builder.targets(row_ids)
        marks.append(time.perf_counter())
        inputs = self.backbone.batch_inputs(row_ids)
        marks.append(time.perf_counter())
        for _, opt, _ in self.optimizers:
            opt.zero_grad(set_to_none=True)
        batch = Batch(torch.from_numpy(row_ids), targets, inputs, 1.0 / global_rows)
        self.backbone.forward_backward(self.module, batch, AmpContext(torch.device("cpu"), enabled=False))
        marks.append(time.perf_counter())
        for _, opt, _ in self.optimizers:
            opt.step()
        marks.append(time.perf_counter())
        if self.profile is not None:
            self.profile.disable()
        for part, a, b in zip(PARTS, marks, marks[1:]):
            self.seconds[part] += b - a
        self.target_nnz += targets.nnz
        self.steps += 1

    def result(self) -> dict:
        total = sum(self.seconds.values())
        out = {
            "steps": self.steps,
            "ms_per_step": 1000 * total / self.steps,
            "ms_per_step_parts": {k: 1000 * v / self.steps for k, v in self.seconds.items()},
            "target_nnz_per_step": self.target_nnz / self.steps,
            "builder_setup_s": self.setup_s,
            "soft_nnz": None if self.rows.soft is None else int(self.rows.soft.nnz),
        }
        if self.profile is not None:
            text = io.StringIO()
            pstats.Stats(self.profile, stream=text).sort_stats("tottime").print_stats(12)
            out["profile_top_tottime"] = text.getvalue().splitlines()[-20:]
        return out


def _passthrough_plugin():
    """Implements both target hooks without answering, so the builder runs them per batch."""
    from lever.hooks import hookimpl

    class Passthrough:
        @hookimpl
        def lever_teacher_rows(self, row_ids, soft_labels):
            return None

        @hookimpl
        def lever_targets(self, row_ids, y_rows, soft_rows, params, label_lam):
            return None

    return Passthrough()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="runs/wordnet")
    ap.add_argument("--soft-td0", default="runs/soft_zs_wordnet_td0.npz")
    ap.add_argument("--soft-td5", default="runs/soft_zs_wordnet_td5.npz")
    ap.add_argument("--embeddings", help="teacher folder: encoder cached+tfidf on its embeddings (default: tfidf)")
    ap.add_argument("--cache-dir", default="runs/cache/bench_lever_epoch_cost")
    ap.add_argument("--steps", type=int, default=200, help="timed steps per variant (may span epochs)")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps per variant first")
    ap.add_argument("--chunk", type=int, default=20, help="steps per variant per round-robin turn")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr-warmup", type=int, default=20, help="warm-up steps of the cosine schedule")
    ap.add_argument("--lam", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hooks", action="store_true", help="add lever_td5_hooks (per-batch hook targets)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()

    import numpy as np
    import torch

    from lever.data import XCDataset
    from lever.hooks import get_plugin_manager
    from lever.train.rows import GlobalBatchSampler
    from lever.train.schedule import lr_factor

    torch.set_num_threads(args.threads)
    dataset = XCDataset.load(args.data)
    specs = [("label_rows", None, get_plugin_manager()), ("lever_td0", args.soft_td0, get_plugin_manager()),
             ("lever_td5", args.soft_td5, get_plugin_manager())]
    if args.hooks:
        pm = get_plugin_manager()
        pm.register(_passthrough_plugin(), name="passthrough")
        specs.append(("lever_td5_hooks", args.soft_td5, pm))
    variants = [Variant(n, dataset, s, args, pm, Path(args.cache_dir)) for n, s, pm in specs]
    num_rows = variants[0].rows.num_rows
    sampler = GlobalBatchSampler(num_rows, args.batch_size, seed=args.seed)
    perms = {}
    total = args.warmup + args.steps

    def rows_of(i):
        """Global step i: its rows (epoch after epoch, as the loop) and the loop's lr factor."""
        epoch, step = divmod(i, sampler.steps_per_epoch())
        perm = perms.setdefault(epoch, sampler.permutation(epoch))
        micro, n = sampler.step_rows(epoch, step, perm)
        return np.asarray(micro[0], dtype=np.int64), n, lr_factor(i, total, args.lr_warmup, "cosine")

    for v in variants:  # warm-up (allocations, optimizer state), then reset the clocks
        for step in range(args.warmup):
            v.step(*rows_of(step))
        v.seconds, v.target_nnz, v.steps = dict.fromkeys(PARTS, 0.0), 0, 0
        if v.profile is not None:
            v.profile = cProfile.Profile()
    load = [os.getloadavg()]
    for start in range(args.warmup, args.warmup + args.steps, args.chunk):
        for v in variants:
            for step in range(start, min(start + args.chunk, args.warmup + args.steps)):
                v.step(*rows_of(step))
        load.append(os.getloadavg())

    results = {v.name: v.result() for v in variants}
    base = results["label_rows"]["ms_per_step"]
    for r in results.values():
        r["vs_label_rows"] = r["ms_per_step"] / base
        r["epoch_s_estimate"] = r["ms_per_step"] / 1000 * sampler.steps_per_epoch()
    report = {
        "data": str(args.data),
        "rows": num_rows,
        "labels": dataset.num_labels,
        "batch_size": args.batch_size,
        "steps_per_epoch": sampler.steps_per_epoch(),
        "encoder": "cached+tfidf" if args.embeddings else "tfidf",
        "threads": args.threads,
        "loadavg_1m": [round(x[0], 2) for x in load],
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "variants": results,
    }
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"lever_epoch_cost{args.tag}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    stem.with_suffix(".md").write_text(_markdown(report))
    print(_markdown(report))
    return 0


def _markdown(report: dict) -> str:
    lines = [
        "# LEVER's epoch cost (Renée, label rows on in every variant)",
        "",
        (f"{report['data']}: {report['rows']:,} rows (documents + labels) × {report['labels']:,} labels, "
        f"batch {report['batch_size']}, {report['steps_per_epoch']} steps/epoch, encoder {report['encoder']}, "
        f"{report['threads']} thread(s); 1-min load average during the run: {report['loadavg_1m']}."),
        "",
        ("| variant | soft nnz | nnz(t)/step | ms/step | targets | inputs | forward_backward | optimizer "
        "| × label rows | epoch (s, est.) |"),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report["variants"].items():
        p = r["ms_per_step_parts"]
        soft = "—" if r["soft_nnz"] is None else f"{r['soft_nnz']:,}"
        lines.append(
            f"| {name} | {soft} | {r['target_nnz_per_step']:.0f} | {r['ms_per_step']:.1f} | {p['targets']:.2f} "
            f"| {p['inputs']:.2f} | {p['forward_backward']:.1f} | {p['optimizer']:.1f} | "
            f"{r['vs_label_rows']:.3f} | {r['epoch_s_estimate']:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
