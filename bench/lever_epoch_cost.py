"""What LEVER adds to an epoch, per backbone: label rows alone against label rows + soft labels.

LEVER's targets ``t = λ·y + (1−λ)·p̂`` have ``nnz(t)`` entries per batch, so on top of a
label-rows epoch LEVER should cost a scatter of ``nnz(t)`` per step and little else (goal ≤ 1.1×;
the paper measured 1.14× / 3.29× / 4.86× for Renée / ELIAS / CascadeXML). This times the shared
loop itself (``lever.train.loop.Trainer``: its batches and its ``optimizer_step``, i.e. the
backbone's ``forward_backward`` and every optimizer of the stage) on the same rows (documents +
label rows, one seeded permutation, the same steps) for each variant:

* ``label_rows``: no teacher (targets = y);
* ``lever`` (or each ``--soft NAME=PATH``): with those soft labels;
* ``lever_hooks`` (``--hooks``): the first soft labels with the target hooks run per batch (what a
  run with a plugin implementing ``lever_targets`` pays) instead of the once-per-run target table.

Multi-stage backbones (ELIAS: clusters, then the learned adjacency) are timed in their last stage,
the label stage, after every earlier stage's start work (index, adjacency). Per step: the batch
(targets, encoder inputs) and the loop's optimizer step. Variants run round-robin in chunks of
steps, so a change of machine load hits all of them alike. ``--profile`` adds a cProfile of each
variant's steps (top functions by own time).

usage: python bench/lever_epoch_cost.py --data runs/foldoc --backbones renee,elias,cascadexml \\
          --soft lever=runs/soft_foldoc_frozen.npz [--embeddings runs/zeroshot_foldoc] [--steps 200]
Writes bench/results/lever_epoch_cost.{json,md} (``--tag`` adds a suffix).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import platform
import pstats
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
PARTS = ("batch", "step")
BACKBONES = ("renee", "elias", "cascadexml")
# The paper's LEVER-over-base training-time ratios (ICLR 2024).
PAPER_RATIO = {"renee": 1.14, "elias": 3.29, "cascadexml": 4.86}


def student_params(args, backbone: str, soft_labels: str | None, out: Path):
    """The run settings of one variant: the backbone's CPU defaults, label rows on, frozen
    features for Renée and ELIAS when given (CascadeXML caches its own encoder layers)."""
    from lever.train.params import LeverParams, OptimParams, RunParams, TrainParams

    features = {"encoder": {"embeddings": args.embeddings}} if args.embeddings and backbone != "cascadexml" else {}
    return TrainParams(
        data=str(args.data), backbone=backbone, out=str(out), backbone_params=features,
        lever=LeverParams(soft_labels=soft_labels, label_rows=True, lam=args.lam),
        optim=OptimParams(batch_size=args.batch_size),
        run=RunParams(seed=args.seed, device="cpu", cache_dir=str(Path(args.cache_dir) / backbone)),
    )


class Variant:
    """One variant's trainer (module, optimizers, batches), stepped on demand in its last stage."""

    def __init__(self, name: str, params, dataset, plugin_manager, profile: bool):
        import torch

        from lever.train.distributed import DistEnv
        from lever.train.loop import (
            Trainer,
            load_train_rows,
            make_backbone,
            resolve_backbone_defaults,
        )

        backbone = make_backbone(params, plugin_manager)
        params = resolve_backbone_defaults(params, backbone).validate()
        t0 = time.perf_counter()
        rows = load_train_rows(dataset, params)
        tr = Trainer(backbone, params, dataset, rows, torch.device("cpu"), DistEnv(), plugin_manager, False)
        last = len(tr.stages) - 1
        for stage in range(last + 1):  # every stage's start work, as a run does before the last
            tr.enter_stage(stage)
        tr.epoch, tr.global_step = sum(tr.stage_epochs[:last]), tr.stage_first_step(last)
        self.setup_s = time.perf_counter() - t0
        self.name, self.trainer, self.rows = name, tr, rows
        self.stage = tr.stages[last].name
        self.batches = self._epoch()
        self.profile = cProfile.Profile() if profile else None
        self.reset()

    def _epoch(self):
        tr = self.trainer
        tr.module.train()
        tr.backbone.on_epoch_start(tr.module, tr.epoch)
        return tr.epoch_batches(tr.epoch, 0)

    def reset(self) -> None:
        """Clocks to zero (after the warm-up)."""
        self.seconds = dict.fromkeys(PARTS, 0.0)
        self.target_nnz, self.steps = 0, 0
        if self.profile is not None:
            self.profile = cProfile.Profile()

    def step(self) -> None:
        if self.profile is not None:
            self.profile.enable()
        t0 = time.perf_counter()
        got = next(self.batches, None)
        if got is None:  # the epoch is over: the next one, as the loop goes on
            self.trainer.epoch += 1
            self.batches = self._epoch()
            got = next(self.batches)
        t1 = time.perf_counter()
        self.trainer.optimizer_step(got[1])
        t2 = time.perf_counter()
        if self.profile is not None:
            self.profile.disable()
        self.seconds["batch"] += t1 - t0
        self.seconds["step"] += t2 - t1
        self.target_nnz += sum(b.targets.nnz for b in got[1])
        self.steps += 1

    def result(self) -> dict:
        total = sum(self.seconds.values())
        out = {
            "stage": self.stage,
            "steps": self.steps,
            "ms_per_step": 1000 * total / self.steps,
            "ms_per_step_parts": {k: 1000 * v / self.steps for k, v in self.seconds.items()},
            "target_nnz_per_step": self.target_nnz / self.steps,
            "setup_s": self.setup_s,
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


def measure_backbone(args, backbone: str, dataset) -> dict:
    """Every variant of one backbone, stepped round-robin in chunks; their results and the load."""
    from lever.hooks import get_plugin_manager

    softs = dict(s.split("=", 1) for s in args.soft)
    specs = [("label_rows", None, get_plugin_manager())]
    specs += [(name, path, get_plugin_manager()) for name, path in softs.items()]
    if args.hooks:
        pm = get_plugin_manager()
        pm.register(_passthrough_plugin(), name="passthrough")
        specs.append((f"{next(iter(softs))}_hooks", next(iter(softs.values())), pm))
    out = Path(args.cache_dir) / "unused_run_folder"  # the trainer writes nothing before a checkpoint
    variants = [Variant(n, student_params(args, backbone, s, out), dataset, pm, args.profile) for n, s, pm in specs]
    for v in variants:  # warm-up (allocations, optimizer state), then reset the clocks
        for _ in range(args.warmup):
            v.step()
        v.reset()
    load = [os.getloadavg()[0]]
    for start in range(0, args.steps, args.chunk):
        for v in variants:
            for _ in range(min(args.chunk, args.steps - start)):
                v.step()
        load.append(os.getloadavg()[0])
    results = {v.name: v.result() for v in variants}
    base = results["label_rows"]["ms_per_step"]
    spe = variants[0].trainer.steps_per_epoch
    for r in results.values():
        r["vs_label_rows"] = r["ms_per_step"] / base
        r["epoch_s_estimate"] = r["ms_per_step"] / 1000 * spe
    return {
        "rows": variants[0].rows.num_rows,
        "batch_size": variants[0].trainer.optim.batch_size,
        "steps_per_epoch": spe,
        "encoder": "cached+tfidf" if args.embeddings and backbone != "cascadexml" else "backbone default",
        "paper_ratio": PAPER_RATIO.get(backbone),
        "loadavg_1m": [round(x, 2) for x in load],
        "threads": args.threads,
        "variants": results,
    }


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="runs/foldoc")
    ap.add_argument("--backbones", default="renee", help=f"comma-separated, of {', '.join(BACKBONES)}")
    ap.add_argument("--soft", action="append", default=None, metavar="NAME=PATH",
                    help="soft labels of a LEVER variant (repeatable; default lever=runs/soft_foldoc_frozen.npz)")
    ap.add_argument("--embeddings", help="frozen embeddings folder: Renée/ELIAS encoder cached+tfidf on it")
    ap.add_argument("--cache-dir", default="runs/cache/bench_lever_epoch_cost")
    ap.add_argument("--steps", type=int, default=200, help="timed steps per variant (may span epochs)")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps per variant first")
    ap.add_argument("--chunk", type=int, default=20, help="steps per variant per round-robin turn")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the backbone's")
    ap.add_argument("--lam", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hooks", action="store_true", help="add <first soft>_hooks (per-batch hook targets)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--tag", default="")
    return ap


def run(args) -> dict:
    """The report of every backbone (also what bench/speed.py calls)."""
    import torch

    from lever.data import XCDataset

    if args.soft is None:
        args.soft = ["lever=runs/soft_foldoc_frozen.npz"]
    torch.set_num_threads(args.threads)
    dataset = XCDataset.load(args.data)
    report = {
        "data": str(args.data),
        "labels": dataset.num_labels,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "backbones": {},
    }
    for backbone in args.backbones.split(","):
        if backbone not in BACKBONES:
            raise SystemExit(f"--backbones: {backbone!r}; expected some of {', '.join(BACKBONES)}")
        report["backbones"][backbone] = measure_backbone(args, backbone, dataset)
        print(markdown(report), flush=True)
    return report


def main() -> int:
    from lever.utils.atomic import write_json_atomic, write_text_atomic

    report = run(parser().parse_args())
    RESULTS.mkdir(exist_ok=True)
    tag = parser().parse_args().tag
    write_json_atomic(RESULTS / f"lever_epoch_cost{tag}.json", report)
    write_text_atomic(RESULTS / f"lever_epoch_cost{tag}.md", markdown(report))
    return 0


def markdown(report: dict) -> str:
    lines = [
        "# LEVER's epoch cost (label rows on in every variant)",
        "",
        f"{report['data']}: {report['labels']:,} labels; {report['machine']}.",
        "",
        ("| backbone | stage | variant | soft nnz | nnz(t)/step | ms/step | batch | step | × label rows "
         "| paper × | epoch (s, est.) | load 1m | threads |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for backbone, b in report["backbones"].items():
        load = f"{min(b['loadavg_1m']):.1f}–{max(b['loadavg_1m']):.1f}"
        for name, r in b["variants"].items():
            p = r["ms_per_step_parts"]
            soft = "—" if r["soft_nnz"] is None else f"{r['soft_nnz']:,}"
            paper = f"{b['paper_ratio']:.2f}" if name != "label_rows" and b["paper_ratio"] else ""
            lines.append(
                f"| {backbone} | {r['stage']} | {name} | {soft} | {r['target_nnz_per_step']:.0f} | "
                f"{r['ms_per_step']:.1f} | {p['batch']:.2f} | {p['step']:.1f} | {r['vs_label_rows']:.3f} | "
                f"{paper} | {r['epoch_s_estimate']:.0f} | {load} | {b['threads']} |"
            )
    lines += ["", "Per backbone: " + "; ".join(
        f"{k}: {b['rows']:,} rows, batch {b['batch_size']}, {b['steps_per_epoch']} steps/epoch, encoder {b['encoder']}"
        for k, b in report["backbones"].items())]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
