"""The stages and cells of ``lever reproduce``.

Stages run once per output folder: the teacher (``lever.teacher`` API; the frozen tower on a CPU),
the soft labels (``lever.soft_labels`` build API, the config's τ) and, under ``--preset cpu``, the
frozen MiniLM features of the students (a zero-shot teacher folder, as bench/lever_tail.py feeds
them). A cell is one backbone without LEVER (``plain``), with label rows only (``label_rows``) or
with LEVER (``lever``), trained by the one trainer (``lever.train.loop.train``), predicted with the
test filter applied and evaluated with the config's propensity constants.

Resume: a stage or cell is done when its record (``OUT/stages/NAME.json``,
``OUT/cells/NAME.json``) exists, written atomically last; an interrupted cell resumes from its run
folder's checkpoint (the trainer does that).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from lever.reproduce.config import DatasetConfig, detect_config
from lever.reproduce.params import ReproduceParams, deep_merge
from lever.utils.atomic import write_json_atomic

VARIANT_ROWS = {"plain": "base", "label_rows": None, "lever": "lever"}  # -> published row


@dataclasses.dataclass
class Context:
    """What every stage and cell of one run sees."""

    params: ReproduceParams
    config: DatasetConfig
    recognised_by: str
    preset: str
    dataset: Any  # XCDataset
    out: Path
    progress: bool

    @property
    def propensity(self) -> tuple[float, float]:
        p, meta = self.config.propensity, self.dataset.meta
        return (meta.propensity_a if p.a is None else p.a, meta.propensity_b if p.b is None else p.b)


def variants(params: ReproduceParams) -> list[str]:
    return ["plain", "label_rows", "lever"] if params.label_rows else ["plain", "lever"]


def cell_name(backbone: str, variant: str) -> str:
    return backbone if variant == "plain" else f"{backbone}_{variant}"


def make_context(params: ReproduceParams, progress: bool = True) -> Context:
    from lever.data import XCDataset

    params = params.validate()
    config, how = detect_config(params.data, params.config)
    preset = params.preset or ("cpu" if config.kind == "builtin" else "paper")
    if preset == "paper" and config.kind == "builtin":
        raise ValueError(f"--preset paper: {config.name} is a built-in dataset with no paper settings; use --preset cpu")
    missing = [b for b in params.backbones if b not in config.cells]
    if missing:
        raise ValueError(f"config {config.name} has no cells for {missing}")
    out = Path(params.out)
    _check_same_run(out / "reproduce.json", params)
    dataset = XCDataset.load(params.data)
    out.mkdir(parents=True, exist_ok=True)
    params.save(out / "reproduce.json")
    return Context(params, config, how, preset, dataset, out, progress)


def _check_same_run(path: Path, params: ReproduceParams) -> None:
    """A rerun into the same folder must compute the same things (the backbones, the label-rows
    cells and the peers may change: finished cells are reused)."""
    if not path.exists():
        return
    old = ReproduceParams.load(path).to_dict()
    new = params.to_dict()
    changed = sorted(k for k in new if k not in ("backbones", "label_rows", "device", "peers") and old.get(k) != new[k])
    if changed:
        raise ValueError(
            f"{path}: this output folder was made with other settings ({', '.join(changed)}); "
            "rerun with the same ones to resume, or use a new --out"
        )


def stage(ctx: Context, name: str, run) -> dict[str, Any]:
    """Run a stage once: its record, with its wall time, is written last (atomically)."""
    path = ctx.out / "stages" / f"{name}.json"
    if path.exists():
        record = json.loads(path.read_text(encoding="utf-8"))
        print(f"stage {name}: done ({record['wall_seconds']:.0f} s), reused", flush=True)
        return record
    print(f"stage {name}: running", flush=True)
    t0 = time.time()
    record = run(ctx)
    record["wall_seconds"] = time.time() - t0
    write_json_atomic(path, record)
    return record


def run_teacher(ctx: Context) -> dict[str, Any]:
    """Train the teacher into OUT/teacher: the config's preset (paper Table 16, a fine-tuned
    encoder) under ``--preset paper`` with CUDA, else the frozen tower (preset frozen-cpu)."""
    import torch

    from lever.teacher.params import preset
    from lever.teacher.train import train_teacher

    paper = ctx.preset == "paper" and ctx.config.teacher.preset and torch.cuda.is_available()
    name = ctx.config.teacher.preset if paper else "frozen-cpu"
    a, b = ctx.propensity
    changes = {"seed": ctx.params.seed, "propensity_a": a, "propensity_b": b, "device": ctx.params.device}
    tp = preset(name).replace(**changes, **ctx.params.stage_overrides("teacher")).validate("reproduce teacher")
    folder = ctx.out / "teacher"
    metrics = train_teacher(ctx.dataset, tp, folder, resume=True, progress=ctx.progress)
    note = "" if paper or ctx.preset == "cpu" else f"no CUDA: the frozen-cpu teacher instead of {ctx.config.teacher.preset}"
    return {"folder": str(folder), "config": str(folder / "config.json"), "preset": name, "kind": tp.kind,
            "test": metrics, "note": note}


def given_teacher(ctx: Context) -> dict[str, Any]:
    from lever.teacher.folder import TeacherFolder

    folder = TeacherFolder.read(ctx.params.teacher)
    folder.check_dataset(ctx.dataset, f"dataset {ctx.params.data}")
    config = Path(ctx.params.teacher) / "config.json"
    return {"folder": str(ctx.params.teacher), "config": str(config) if config.exists() else None,
            "described": folder.describe(), "given": True}


def run_soft_labels(ctx: Context, teacher_dir: str) -> dict[str, Any]:
    """Soft labels of the teacher at the config's τ, into OUT/soft_labels.npz."""
    from lever.soft_labels.build import build_soft_labels
    from lever.teacher.folder import TeacherFolder

    sp = ctx.config.soft_label_params(ctx.params.seed).replace(**ctx.params.stage_overrides("soft_labels"))
    sp = sp.validate("reproduce soft labels")
    folder = TeacherFolder.read(teacher_dir)
    folder.check_dataset(ctx.dataset, f"dataset {ctx.params.data}")
    emb = folder.exported(ctx.dataset, ("trn", "lbl"))
    meta = {"dataset": ctx.dataset.name, "dataset_root": str(ctx.dataset.root),
            "dataset_fingerprint": ctx.dataset.fingerprint(), "teacher": folder.describe()}
    soft, report = build_soft_labels(ctx.dataset.trn_Y, emb["trn"], emb["lbl"], sp, meta=meta, progress=ctx.progress)
    soft.meta["timings"] = report["timings"]
    path = ctx.out / "soft_labels.npz"
    soft.save(path)
    sp.save(ctx.out / "soft_labels.config.json")
    return {"path": str(path), "config": str(ctx.out / "soft_labels.config.json"), "tau_l": sp.tau_l,
            "tau_d": sp.tau_d, "counts": soft.meta.get("counts")}


def run_features(ctx: Context) -> dict[str, Any]:
    """Frozen sentence-encoder embeddings of every split (a zero-shot teacher folder) for the
    students under ``--preset cpu``."""
    from lever.soft_labels.teacher_embeddings import write_zero_shot_teacher

    given = ctx.params.stage_overrides("features")
    unknown = sorted(set(given) - {"encoder", "max_len"})
    if unknown:
        raise ValueError(f"--set features.{unknown[0]}: expected features.encoder or features.max_len")
    folder = ctx.out / "features"
    write_zero_shot_teacher(ctx.dataset, folder, encoder=given.get("encoder"), max_len=int(given.get("max_len", 32)),
                            progress=ctx.progress)
    return {"folder": str(folder), "config": str(folder / "config.json"),
            "encoder": given.get("encoder") or "all-MiniLM-L6-v2"}


def cell_params(ctx: Context, backbone: str, variant: str, soft_labels: str | None, features: str | None):
    """The cell's :class:`TrainParams`: the config's settings (``--preset paper``) or the
    backbone's CPU defaults on the frozen features (``--preset cpu``), then ``--set`` overrides."""
    from lever.train.params import TrainParams

    name = cell_name(backbone, variant)
    base = ctx.config.cells[backbone].train if ctx.preset == "paper" else {}
    if ctx.preset == "cpu" and features and backbone != "cascadexml":
        # CascadeXML reads several encoder layers, so it caches its own states (bench/lever_tail.py)
        base = deep_merge(base, {"backbone_params": {"encoder": {"embeddings": features}}})
    p = ctx.params
    merged = deep_merge(base, p.stage_overrides("all"), p.stage_overrides(backbone))
    bad = sorted(set(merged) & {"data", "out", "backbone"})
    if bad:
        raise ValueError(f"--set {backbone}.{bad[0]}: set by lever reproduce")
    merged = deep_merge(merged, {
        "data": p.data, "backbone": backbone, "out": str(ctx.out / "runs" / name),
        "lever": {"soft_labels": soft_labels if variant == "lever" else None,
                  "label_rows": variant != "plain", "lam": ctx.config.lam},
        "run": {"seed": p.seed, "device": p.device, "cache_dir": str(ctx.out / "cache" / backbone)},
    })
    return TrainParams.from_dict(merged, source=f"cell {name}")


def _comparable(params) -> dict[str, Any]:
    from lever.train.params import RESUMABLE_CHANGES

    return {k: v for k, v in params.flat_dict().items() if k not in RESUMABLE_CHANGES}


def run_cell(ctx: Context, backbone: str, variant: str, tp) -> dict[str, Any]:
    """Train (or resume), predict with the test filter applied, evaluate; the cell's record."""
    import torch

    from lever.train.loop import load_trained, train
    from lever.train.predict import predict_topk, save_predictions, topk_to_csr

    ds, run_dir = ctx.dataset, Path(tp.out)
    t0 = time.time()
    if not (run_dir / "model.safetensors").exists():  # the final model is written last
        train(tp, progress=ctx.progress)
    backbone_obj, module, _, _ = load_trained(run_dir, device=ctx.params.device)
    device = next(iter(module.parameters()), torch.empty(0)).device
    t1 = time.time()
    idx, scores = predict_topk(backbone_obj, module, ds.num_test, ds.num_labels, 5, device,
                               exclude=ds.tst_filter, progress=ctx.progress)
    predict_s = time.time() - t1
    save_predictions(run_dir / "predictions.npz", topk_to_csr(idx, scores, ds.num_labels))
    metrics, deciles = evaluate(ctx, (idx, scores))
    log = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if x]
    published = published_row(ctx.config, backbone, variant)
    return {
        "cell": cell_name(backbone, variant), "backbone": backbone, "variant": variant,
        "metrics": metrics, "deciles": deciles, "published": published,
        "vs_published": None if published is None else {k: metrics[k] - v for k, v in published.items()},
        "wall_seconds": time.time() - t0, "train_seconds": sum(r.get("seconds", 0.0) for r in log),
        "predict_seconds": predict_s, "run_dir": str(run_dir), "config": str(run_dir / "config.json"),
        "requested": _comparable(tp),
    }


def evaluate(ctx: Context, preds) -> tuple[dict[str, float], list[dict]]:
    """P/PSP/C... @1..5 and the decile report of ``preds`` (top-k ``(indices, scores)`` or a
    score CSR, one row per test document), with the config's propensity constants."""
    from lever.metrics import XCMetrics, inverse_propensity
    from lever.metrics.deciles import decile_report
    from lever.metrics.propensity import label_counts

    ds = ctx.dataset
    inv = inverse_propensity(ds.trn_Y, *ctx.propensity)
    acc = XCMetrics(ds.tst_Y, inv, k=5, filter=ds.tst_filter)
    acc.update(np.arange(ds.num_test), preds)
    return acc.summary(), decile_report(acc, label_counts(ds.trn_Y), k=5)


def score_teacher(ctx: Context, teacher_dir: str) -> dict[str, Any]:
    """The teacher alone (exact kNN of the test documents over its label embeddings, filter
    applied): LEVER lifts a backbone's tail only where the teacher leads it there."""
    from lever.teacher.evaluate import teacher_test_topk

    preds = teacher_test_topk(ctx.dataset, teacher_dir, 5, progress=ctx.progress)
    metrics, deciles = evaluate(ctx, preds)
    return {"folder": teacher_dir, "metrics": metrics, "deciles": deciles}


def score_peer(ctx: Context, name: str, path: str) -> dict[str, Any]:
    """A peer's saved predictions (lever's ``.npz`` score CSR, e.g. from bench/peers.py or
    ``lever predict``) scored exactly like the cells."""
    import scipy.sparse as sp

    try:
        pred = sp.load_npz(path).tocsr()
    except (OSError, ValueError) as e:
        raise ValueError(f"--peer {name}={path}: not a scipy sparse .npz of predictions ({e})") from None
    expected = (ctx.dataset.num_test, ctx.dataset.num_labels)
    if pred.shape != expected:
        raise ValueError(f"--peer {name}={path}: shape {pred.shape}, expected (test documents, labels) = {expected}")
    metrics, deciles = evaluate(ctx, pred)
    return {"peer": name, "path": str(path), "metrics": metrics, "deciles": deciles}


def published_row(config: DatasetConfig, backbone: str, variant: str) -> dict[str, float] | None:
    cell = config.cells.get(backbone)
    row = VARIANT_ROWS[variant]
    if cell is None or not cell.published or row is None:
        return None
    return dict(cell.published[row])


def _eta(done_seconds: list[float], remaining: int) -> str:
    if not done_seconds:
        return "ETA: after the first cell"
    left = remaining * sum(done_seconds) / len(done_seconds)
    return f"ETA {left / 60:.1f} min for {remaining} cell(s) (mean {np.mean(done_seconds) / 60:.1f} min/cell)"


def _summary_line(record: dict[str, Any]) -> str:
    m, pub = record["metrics"], record["published"]
    parts = []
    for key in ("P@5", "PSP@5", "C@5"):
        text = f"{key} {m[key]:.2f}"
        if pub:
            text += f" (paper {pub[key]:.2f}, {m[key] - pub[key]:+.2f})"
        parts.append(text)
    return ", ".join(parts)


def run_cells(ctx: Context, soft_labels: str, features: str | None) -> dict[str, dict[str, Any]]:
    """Every cell in order, skipping finished ones; one progress line per cell with its ETA."""
    todo = [(b, v) for b in ctx.params.backbones for v in variants(ctx.params)]
    records: dict[str, dict[str, Any]] = {}
    done_seconds: list[float] = []
    for i, (backbone, variant) in enumerate(todo):
        name = cell_name(backbone, variant)
        path = ctx.out / "cells" / f"{name}.json"
        tp = cell_params(ctx, backbone, variant, soft_labels, features)
        head = f"[{i + 1}/{len(todo)}] {name}"
        if path.exists():
            record = json.loads(path.read_text(encoding="utf-8"))
            if record["requested"] != _comparable(tp):
                diff = sorted(k for k in set(record["requested"]) | set(_comparable(tp))
                              if record["requested"].get(k) != _comparable(tp).get(k))
                raise ValueError(f"{path}: finished with other settings ({', '.join(diff)}); use a new --out")
            done_seconds.append(record["wall_seconds"])
            print(f"{head}: done, skipped ({record['wall_seconds']:.0f} s) — {_summary_line(record)}", flush=True)
        else:
            print(f"{head}: training — {_eta(done_seconds, len(todo) - i)}", flush=True)
            record = run_cell(ctx, backbone, variant, tp)
            write_json_atomic(path, record)
            done_seconds.append(record["wall_seconds"])
            print(f"{head}: {record['wall_seconds']:.0f} s — {_summary_line(record)}", flush=True)
        records[name] = record
    return records


def reproduce(params: ReproduceParams, progress: bool = True) -> dict[str, Any]:
    """The whole run: stages, cells, then the table, its JSON and the plots (lever.reproduce.report)."""
    from lever.reproduce.report import write_report

    ctx = make_context(params, progress)
    print(f"{ctx.dataset.name}: config {ctx.config.name} ({ctx.recognised_by}), preset {ctx.preset}, "
          f"A/B {ctx.propensity[0]}/{ctx.propensity[1]}", flush=True)
    stages = {"teacher": stage(ctx, "teacher", given_teacher if params.teacher else run_teacher)}
    stages["soft_labels"] = stage(ctx, "soft_labels", lambda c: run_soft_labels(c, stages["teacher"]["folder"]))
    features = None
    if ctx.preset == "cpu":
        if params.features:
            features = params.features
            stages["features"] = {"folder": features, "given": True, "wall_seconds": 0.0}
        else:
            stages["features"] = stage(ctx, "features", run_features)
            features = stages["features"]["folder"]
    teacher = stage(ctx, "teacher_scores", lambda c: score_teacher(c, stages["teacher"]["folder"]))
    peers = {name: score_peer(ctx, name, path) for name, path in params.peers.items()}
    records = run_cells(ctx, stages["soft_labels"]["path"], features)
    return write_report(ctx, stages, records, teacher, peers)
