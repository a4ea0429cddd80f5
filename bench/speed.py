"""``make bench``: every speed benchmark on this machine, each figure beside its reference measured
in the same process, in one table (bench/results/speed.{json,md}).

1. **Classifier step vs bare GEMMs**: each backbone's own ``forward_backward`` on real batches of
   the dataset (the shared loop's rows, LEVER targets), with the encoder's output computed once
   beforehand and fed back as a leaf tensor, so the step times only the classifier part (Renée's
   fused step; ELIAS's cluster classifier + shortlist label classifier; CascadeXML's per-level
   classifiers). Beside it, the same shapes done with bare ``torch.mm`` (logits, weight gradient,
   input gradient: the physical limit; a shortlist level counts the batch's distinct candidates).
   Batches alternate between the two, so load changes hit both alike.
2. **LEVER epochs vs plain epochs** (``bench/lever_epoch_cost.py``): the shared loop's per-step
   time with soft labels against the same rows without them (label rows on in both), beside the
   paper's 1.14× / 3.29× / 4.86×.
3. **Soft-label build vs the released hnswlib recipe** (``bench/soft_labels_knn.py``; ``--skip-knn``
   leaves the section out, ``--skip-hnswlib`` keeps ours alone when bench/.venv-ref cannot be built).
4. **Prediction per 1,000 test documents** (exact top-5, test filter applied,
   ``lever.train.predict.predict_topk``) of a short run per backbone, trained into
   ``CACHE/runs/<backbone>`` unless there (resumable; a finished run is reused).

Inputs: the dataset (built with ``lever data build`` when missing), frozen MiniLM features for Renée
and ELIAS (``--features``; default ``runs/zeroshot_<name>`` when it fits the dataset, else the
zero-shot teacher written beside the soft labels), soft labels (``--soft``; default built by
``lever soft-labels build`` from that teacher into CACHE). Every figure carries the 1-minute load
average and the torch thread count.

usage: python bench/speed.py [--data runs/foldoc] [--cache runs/hb_speed] [--soft runs/soft_foldoc_frozen.npz]
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT / "bench"))

import lever_epoch_cost

BACKBONES = lever_epoch_cost.BACKBONES


def load_and_threads() -> dict:
    import torch

    return {"load_1m": round(os.getloadavg()[0], 2), "threads": torch.get_num_threads()}


def lever_cli(*argv: str) -> None:
    subprocess.run([sys.executable, "-m", "lever", *argv], check=True)


# -- inputs -------------------------------------------------------------------------------------
def prepare(args) -> tuple[Path, Path, Path]:
    """(dataset, features folder, soft labels), each built into the cache when missing."""
    from lever.data import XCDataset

    data, cache = Path(args.data), Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    if not (data / "lever_meta.json").exists():
        more = ["--max-docs", str(args.max_docs)] if args.max_docs else []
        lever_cli("data", "build", args.dataset, "--out", str(data), *more)
    ds = XCDataset.load(data)
    features = Path(args.features) if args.features else default_features(ds)
    soft = Path(args.soft) if args.soft else cache / "soft_labels.npz"
    if not soft.exists():
        teacher = str(features) if features else "zero-shot"
        lever_cli("soft-labels", "build", "--data", str(data), "--teacher", teacher, "--out", str(soft))
    if features is None:  # the zero-shot teacher lever soft-labels build wrote beside the soft labels
        features = soft.with_suffix(".teacher")
        if not (features / "embeddings" / "trn.npy").exists():
            lever_cli("soft-labels", "build", "--data", str(data), "--teacher", "zero-shot",
                      "--out", str(cache / "soft_zero_shot.npz"))
            features = cache / "soft_zero_shot.teacher"
    return data, features, soft


def default_features(ds) -> Path | None:
    """runs/zeroshot_<name> when its embeddings have this dataset's row counts."""
    folder = ROOT / "runs" / f"zeroshot_{ds.name}"
    want = {"trn": ds.num_train, "tst": ds.num_test, "lbl": ds.num_labels}
    for split, n in want.items():
        f = folder / "embeddings" / f"{split}.npy"
        if not f.exists() or np.load(f, mmap_mode="r").shape[0] != n:
            return None
    return folder


def epoch_args(args, data: Path, features: Path, soft: Path, **changes):
    argv = ["--data", str(data), "--soft", f"lever={soft}", "--embeddings", str(features),
            "--cache-dir", str(Path(args.cache) / "cache"), "--threads", str(args.threads), "--seed", "0"]
    ns = lever_epoch_cost.parser().parse_args(argv)
    for k, v in changes.items():
        setattr(ns, k, v)
    return ns


# -- 1. classifier step vs bare GEMMs --------------------------------------------------------------
class FixedOutput(__import__("torch").nn.Module):
    """Stands in for the encoder: returns the precomputed output of the current batch."""

    def __init__(self):
        super().__init__()
        self.value = None

    def forward(self, inputs):
        return self.value


def encoder_outputs(name: str, module, inputs):
    """The encoder's output for a batch (what the classifier part starts from), as leaves."""
    import torch

    with torch.no_grad():
        if name == "cascadexml":
            return [f.detach() for f in module.level_features(inputs)]
        return module.head(inputs).detach()


def as_leaves(out):
    if isinstance(out, list):
        return [t.clone().requires_grad_(True) for t in out]
    return out.clone().requires_grad_(True)


def swap_encoder(name: str, module) -> FixedOutput:
    fixed = FixedOutput()
    if name == "cascadexml":
        module.level_features = fixed.forward  # instance attribute: the per-level features
    else:
        module.head = fixed
    return fixed


def gemm_shapes(name: str, backbone, module, batch, out) -> list[tuple[int, int, int]]:
    """(B, d, n) of every classifier GEMM of the step (n: distinct candidates of a shortlist)."""
    import torch

    def distinct(ids, pad):
        return int(torch.unique(ids[ids < pad]).numel())

    if name == "renee":
        return [(out.shape[0], out.shape[1], module.classifier.shard_size)]
    with torch.no_grad():
        levels = backbone.training_levels(module, batch.inputs, batch.targets, backbone.hooks)
    if name == "elias":  # the cluster classifier (always computed) and the shortlisted labels
        label = next(lv for lv in levels if lv.ids is not None and lv.loss != "recall")
        b, d = out.shape
        return [(b, d, module.num_clusters), (b, d, distinct(label.ids, module.num_labels))]
    shapes = []
    for i, lv in enumerate(levels):
        b, d = out[i].shape
        shapes.append((b, d, lv.logits.shape[1] if lv.ids is None else distinct(lv.ids, module.num_nodes(i))))
    return shapes


class BareGemms:
    """Logits E·Wᵀ, weight gradient Gᵀ·E and input gradient G·W with torch.mm, buffers preallocated."""

    def __init__(self, shapes):
        import torch

        gen = torch.Generator().manual_seed(0)
        self.parts = []
        for b, d, n in shapes:
            e, w, g = (torch.randn(*s, generator=gen) for s in ((b, d), (n, d), (b, n)))
            self.parts.append((e, w, g, torch.empty(b, n), torch.empty(n, d), torch.empty(b, d)))

    def __call__(self):
        import torch

        for e, w, g, z, gw, ge in self.parts:
            torch.mm(e, w.t(), out=z)
            torch.mm(g.t(), e, out=gw)
            torch.mm(g, w, out=ge)


def classifier_step(args, name: str, data, features, soft) -> dict:
    import torch

    from lever.data import XCDataset
    from lever.hooks import get_plugin_manager
    from lever.train.backbone import AmpContext

    ns = epoch_args(args, data, features, soft)
    ds = XCDataset.load(data)
    v = lever_epoch_cost.Variant("lever", lever_epoch_cost.student_params(ns, name, str(soft), Path(args.cache) / "unused"),
                                 ds, get_plugin_manager(), False)
    tr, backbone, module = v.trainer, v.trainer.backbone, v.trainer.module
    batches = []
    for _ in range(args.clf_batches):
        micro = next(v.batches)[1]
        batches.append(micro[0])
    outs = [encoder_outputs(name, module, b.inputs) for b in batches]
    fixed = swap_encoder(name, module)
    shapes = []
    for b, out in zip(batches, outs):
        fixed.value = as_leaves(out)
        shapes.append(gemm_shapes(name, backbone, module, b, out))
    gemms = [BareGemms(s) for s in shapes]
    amp = AmpContext(torch.device("cpu"), enabled=False)
    step_s, gemm_s, loads = [], [], []
    for r in range(args.clf_rounds + 1):  # round 0 warms up (buffers, caches) and is not counted
        for b, out, gemm in zip(batches, outs, gemms):
            fixed.value = as_leaves(out)
            for _, opt, _ in tr.optimizers:
                opt.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            backbone.forward_backward(module, b, amp)
            t1 = time.perf_counter()
            gemm()
            t2 = time.perf_counter()
            if r:
                step_s.append(t1 - t0)
                gemm_s.append(t2 - t1)
        loads.append(os.getloadavg()[0])
    step_ms, gemm_ms = 1000 * statistics.median(step_s), 1000 * statistics.median(gemm_s)
    return {
        "backbone": name, "stage": v.stage, "batches": len(batches), "rounds": args.clf_rounds,
        "gemm_shapes_first_batch": shapes[0], "step_ms": step_ms, "gemm_ms": gemm_ms,
        "ratio": step_ms / gemm_ms, "load_1m": [round(x, 2) for x in loads],
        "threads": torch.get_num_threads(),
    }


# -- 3. soft labels vs hnswlib -------------------------------------------------------------------
def soft_label_build(args, data: Path, features: Path) -> dict:
    import soft_labels_knn

    out_dir = Path(args.cache) / "soft_labels_knn"
    cmd = [sys.executable, str(ROOT / "bench" / "soft_labels_knn.py"), "--data", str(data), "--teacher",
           str(features), "--configs", args.knn_configs, "--indexes", args.knn_indexes,
           "--threads", str(args.threads), "--out-dir", str(out_dir)]
    note = ""
    if args.skip_hnswlib:
        cmd.append("--skip-reference")
        note = "--skip-hnswlib: the hnswlib reference left out"
    else:
        try:
            soft_labels_knn.ensure_reference_venv()
        except (subprocess.CalledProcessError, OSError) as e:
            cmd.append("--skip-reference")
            note = f"bench/.venv-ref (hnswlib) could not be built ({e}); the reference is left out"
    load = os.getloadavg()[0]
    subprocess.run(cmd, check=True)
    res = json.loads((out_dir / "soft_labels_knn.json").read_text())
    return {"rows": res["rows"], "note": note, "load_1m": round(load, 2), "threads": args.threads}


# -- 4. prediction ---------------------------------------------------------------------------------
def prediction(args, name: str, data: Path, features: Path) -> dict:
    import torch

    from lever.train.loop import load_trained, train
    from lever.train.params import OptimParams, RunParams, TrainParams
    from lever.train.predict import predict_topk

    run_dir = Path(args.runs) / name
    bp = {"encoder": {"embeddings": str(features)}} if name != "cascadexml" else {}
    if name == "elias":  # a short run still passes through both of ELIAS's stages
        bp.update(warmup_epochs=0, stage1_epochs=1)
    params = TrainParams(
        data=str(data), backbone=name, out=str(run_dir), backbone_params=bp,
        optim=OptimParams(epochs=args.train_epochs),
        run=RunParams(seed=0, device="cpu", cache_dir=str(Path(args.cache) / "cache" / name)),
    )
    if not (run_dir / "model.safetensors").exists():  # the final model is written last
        train(params, progress=True)
    backbone, module, _, ds = load_trained(run_dir, device="cpu")
    n = min(args.predict_docs or ds.num_test, ds.num_test)
    exclude = ds.tst_filter[:n] if ds.tst_filter is not None else None
    predict_topk(backbone, module, min(n, 256), ds.num_labels, 5, torch.device("cpu"), exclude, progress=False)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    predict_topk(backbone, module, n, ds.num_labels, 5, torch.device("cpu"), exclude, progress=False)
    seconds = time.perf_counter() - t0
    return {"backbone": name, "docs": n, "seconds": seconds, "ms_per_1000_docs": 1000 * seconds / n * 1000,
            "run": str(run_dir), "load_1m": round(load, 2), "threads": torch.get_num_threads()}


# -- the table --------------------------------------------------------------------------------------
def markdown(report: dict) -> str:
    m = report["meta"]
    lines = ["# Speed, side by side (`make bench`)", "",
             (f"{m['data']}: {m['train']:,} train / {m['test']:,} test documents, {m['labels']:,} labels; "
             f"features {m['features']}; soft labels {m['soft']}; {m['machine']}. "
             "Load: 1-minute load average while measuring (shared machine)."), ""]
    if "classifier" in report:
        lines += ["## 1. Classifier step vs bare GEMMs (same shapes, same process)", "",
                  "| backbone | stage | GEMM shapes (B, d, n), first batch | step ms | bare torch.mm ms | × | load 1m | threads |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in report["classifier"]:
            shapes = ", ".join(f"({b}, {d}, {n:,})" for b, d, n in r["gemm_shapes_first_batch"])
            lines.append(f"| {r['backbone']} | {r['stage']} | {shapes} | {r['step_ms']:.2f} | {r['gemm_ms']:.2f} | "
                         f"{r['ratio']:.2f} | {min(r['load_1m']):.1f}–{max(r['load_1m']):.1f} | {r['threads']} |")
        lines.append("")
    if "epochs" in report:
        lines += ["## 2. LEVER epochs vs plain epochs (label rows on in both; goal ≤ 1.1×)", "",
                  "| backbone | stage | plain ms/step | LEVER ms/step | LEVER × | paper × | load 1m | threads |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, b in report["epochs"]["backbones"].items():
            base, lev = b["variants"]["label_rows"], b["variants"]["lever"]
            lines.append(f"| {name} | {lev['stage']} | {base['ms_per_step']:.1f} | {lev['ms_per_step']:.1f} | "
                         f"{lev['vs_label_rows']:.3f} | {b['paper_ratio']:.2f} | "
                         f"{min(b['loadavg_1m']):.1f}–{max(b['loadavg_1m']):.1f} | {b['threads']} |")
        lines.append("")
    if "soft_labels" in report:
        s = report["soft_labels"]
        lines += ["## 3. Soft-label build vs the released hnswlib recipe", "",
                  "| method | config | wall s | work s | peak RSS MiB | entry recall | × official (work) | load 1m | threads |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in s["rows"]:
            rec = r.get("entry_recall")
            sp = r.get("speedup_work_vs_official")
            lines.append(f"| {r['method']} | {r['config']} | {r['wall_s']:.2f} | {r.get('work_s', float('nan')):.2f} | "
                         f"{r['peak_rss_mib']:.0f} | {'' if rec is None else f'{rec:.4f}'} | "
                         f"{'' if sp is None else f'{sp:.2f}'} | {s['load_1m']:.1f} | {s['threads']} |")
        if s["note"]:
            lines.append(f"\n{s['note']}")
        lines.append("")
    if "prediction" in report:
        lines += ["## 4. Prediction (exact top-5, test filter applied)", "",
                  "| backbone | test docs | s | ms per 1,000 docs | load 1m | threads |", "|---|---|---|---|---|---|"]
        for r in report["prediction"]:
            lines.append(f"| {r['backbone']} | {r['docs']:,} | {r['seconds']:.2f} | {r['ms_per_1000_docs']:.0f} | "
                         f"{r['load_1m']:.1f} | {r['threads']} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="runs/foldoc", help="dataset folder (built when missing)")
    ap.add_argument("--dataset", default="foldoc", help="lever data build NAME for a missing --data")
    ap.add_argument("--max-docs", type=int, default=0, help="slice for a missing --data (0: all)")
    ap.add_argument("--features", help="frozen embeddings folder (default: runs/zeroshot_<name> if it fits)")
    ap.add_argument("--soft", help="soft labels .npz (default: built into --cache)")
    ap.add_argument("--cache", default="runs/hb_speed", help="built inputs, feature caches and trained runs")
    ap.add_argument("--runs", help="trained runs for prediction (default: CACHE/runs)")
    ap.add_argument("--backbones", default=",".join(BACKBONES))
    ap.add_argument("--parts", default="classifier,epochs,soft_labels,prediction")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clf-batches", type=int, default=8, help="batches of the classifier comparison")
    ap.add_argument("--clf-rounds", type=int, default=5, help="timed passes over them")
    ap.add_argument("--epoch-steps", type=int, default=100, help="timed steps per variant (section 2)")
    ap.add_argument("--epoch-warmup", type=int, default=10)
    ap.add_argument("--epoch-chunk", type=int, default=20)
    ap.add_argument("--knn-configs", default="4:0", help="τ_l:τ_d pairs (bench/soft_labels_knn.py)")
    ap.add_argument("--knn-indexes", default="exact,hnsw")
    ap.add_argument("--skip-knn", action="store_true", help="leave section 3 out")
    ap.add_argument("--skip-hnswlib", action="store_true", help="section 3 without the hnswlib reference")
    ap.add_argument("--train-epochs", type=int, default=2, help="epochs of the short runs (section 4)")
    ap.add_argument("--predict-docs", type=int, default=0, help="test documents to predict (0: all)")
    ap.add_argument("--out", default=str(RESULTS / "speed"), help="output stem (.json and .md)")
    args = ap.parse_args(argv)
    args.runs = args.runs or str(Path(args.cache) / "runs")
    parts = set(args.parts.split(","))
    if args.skip_knn:
        parts.discard("soft_labels")
    backbones = args.backbones.split(",")

    import torch

    from lever.data import XCDataset
    from lever.utils.atomic import write_json_atomic, write_text_atomic

    torch.set_num_threads(args.threads)
    data, features, soft = prepare(args)
    ds = XCDataset.load(data)
    report = {"meta": {"data": str(data), "train": ds.num_train, "test": ds.num_test, "labels": ds.num_labels,
                       "features": str(features), "soft": str(soft),
                       "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                       "args": vars(args), "started": time.strftime("%Y-%m-%d %H:%M:%S")}}
    out = Path(args.out)

    def save():  # after every section, so an interrupted run keeps what it measured
        write_json_atomic(out.with_suffix(".json"), report)
        write_text_atomic(out.with_suffix(".md"), markdown(report))

    if "classifier" in parts:
        report["classifier"] = [classifier_step(args, b, data, features, soft) for b in backbones]
        save()
    if "epochs" in parts:
        ns = epoch_args(args, data, features, soft, backbones=",".join(backbones), steps=args.epoch_steps,
                        warmup=args.epoch_warmup, chunk=args.epoch_chunk)
        report["epochs"] = lever_epoch_cost.run(ns)
        save()
    if "soft_labels" in parts:
        report["soft_labels"] = soft_label_build(args, data, features)
        save()
    if "prediction" in parts:
        report["prediction"] = [prediction(args, b, data, features) for b in backbones]
        save()
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
