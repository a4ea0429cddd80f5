"""``lever soft-labels build|stats|zero-shot-teacher``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

ZERO_SHOT = "zero-shot"


class _PrintConfig(argparse.Action):
    """Acts while parsing, so the required flags need not be given."""

    def __call__(self, parser, namespace, values, option_string=None):
        from lever.soft_labels.build import SoftLabelParams

        print(SoftLabelParams.skeleton())
        parser.exit(0)


def register(subparsers) -> None:
    p = subparsers.add_parser("soft-labels", help="build and inspect teacher soft labels")
    sub = p.add_subparsers(dest="soft_labels_command", required=True, metavar="ACTION")

    b = sub.add_parser(
        "build",
        help="teacher kNN + calibration -> SOFT.npz (+ SOFT.json, calibration report and diagram)",
    )
    b.add_argument("--data", required=True, help="dataset folder (lever data build)")
    b.add_argument(
        "--teacher",
        required=True,
        help=f"teacher folder with embeddings/{{trn,tst,lbl}}.npy, or '{ZERO_SHOT}' for an untrained "
        "encoder's embeddings (written to OUT's stem + '.teacher/')",
    )
    b.add_argument("--out", required=True, help="output .npz; SOFT.json and the calibration files go beside it")
    b.add_argument("--config", help="JSON of SoftLabelParams; flags given here override it")
    b.add_argument("--tau-l", type=int, default=None, help="positives per label row, self included [4]")
    b.add_argument("--tau-d", type=int, default=None, help="top tail labels up to this many documents [0]")
    b.add_argument("--calibration", choices=("linear", "platt"), default=None, help="[linear]")
    b.add_argument("--index", choices=("exact", "hnsw", "ivf"), default=None, help="kNN index [exact]")
    b.add_argument("--threshold", type=float, default=None, help="min calibrated score of an added pair [0.8]")
    b.add_argument("--doc-threshold", type=float, default=None, help="for label->document top-ups [= threshold]")
    b.add_argument("--use-gpu", choices=("auto", "yes", "no"), default=None, help="faiss GPU [auto]")
    b.add_argument("--seed", type=int, default=None, help="[0]")
    b.add_argument("--encoder", default=None, help="encoder of the zero-shot teacher [all-MiniLM-L6-v2]")
    b.add_argument("--max-len", type=int, default=32, help="token limit of the zero-shot teacher [32]")
    b.add_argument(
        "--print-config", action=_PrintConfig, nargs=0, help="print the full parameter skeleton (JSON) and exit"
    )
    b.set_defaults(func=_build)

    s = sub.add_parser("stats", help="rows, entries per row by kind, value histogram")
    s.add_argument("soft", help="SOFT.npz")
    s.add_argument("--data", help="dataset folder: check the fingerprint and split ground truth from added pairs")
    s.add_argument("--json", action="store_true", help="print JSON instead of text")
    s.set_defaults(func=_stats)

    d = sub.add_parser(
        "diagnose",
        help="teacher vs student per label-frequency decile on held-out documents (before distilling)",
    )
    d.add_argument("--data", required=True, help="dataset folder")
    d.add_argument("--teacher", required=True, help="teacher folder (embeddings/{trn,tst,lbl}.npy)")
    d.add_argument("--run", required=True, help="student run folder (lever train); a --lam auto run "
                   "is compared on its validation split, any other on the test split")
    d.add_argument("--k", type=int, default=5)
    d.add_argument("--plot", help="PNG of recall and PSP share per decile [RUN/diagnosis.png]")
    d.add_argument("--json", action="store_true", help="print JSON instead of text")
    d.add_argument("--device", default="auto")
    d.set_defaults(func=_diagnose)

    z = sub.add_parser("zero-shot-teacher", help="write a teacher folder from an untrained encoder")
    z.add_argument("--data", required=True, help="dataset folder")
    z.add_argument("--out", required=True, help="teacher folder to write")
    z.add_argument("--encoder", default=None, help="local model folder [all-MiniLM-L6-v2]")
    z.add_argument("--max-len", type=int, default=32, help="token limit, as lever teacher train [32]")
    z.add_argument("--batch-size", type=int, default=256)
    z.set_defaults(func=_zero_shot)


def _params(args):
    from lever.soft_labels.build import SoftLabelParams

    params = SoftLabelParams.load(args.config) if args.config else SoftLabelParams()
    return params.replace(
        tau_l=args.tau_l,
        tau_d=args.tau_d,
        calibration=args.calibration,
        index=args.index,
        threshold=args.threshold,
        doc_threshold=args.doc_threshold,
        use_gpu=args.use_gpu,
        seed=args.seed,
    ).validate(source=args.config or "command line")


def _build(args) -> int:
    from lever.data import XCDataset
    from lever.soft_labels.build import build_soft_labels
    from lever.soft_labels.calibration import save_reliability_diagram
    from lever.soft_labels.teacher_embeddings import write_zero_shot_teacher
    from lever.teacher.folder import TeacherFolder
    from lever.utils.atomic import write_json_atomic
    from lever.utils.seed import seed_everything

    params = _params(args)
    seed_everything(params.seed)
    out = Path(args.out)
    if out.suffix != ".npz":
        raise ValueError(f"--out {out}: expected a .npz file name")
    ds = XCDataset.load(args.data)
    fp = ds.fingerprint()
    if args.teacher == ZERO_SHOT:
        teacher_dir = out.with_name(out.stem + ".teacher")
        print(f"zero-shot teacher: embedding the dataset into {teacher_dir}")
        # only what the soft labels need; `lever soft-labels zero-shot-teacher` also embeds tst
        write_zero_shot_teacher(ds, teacher_dir, encoder=args.encoder, max_len=args.max_len, splits=("trn", "lbl"))
    else:
        teacher_dir = Path(args.teacher)
    # the one teacher-folder reader (any kind: finetune, frozen, zero-shot, bare embeddings)
    folder = TeacherFolder.read(teacher_dir)
    emb = folder.exported(ds, ("trn", "lbl"))
    folder.check_dataset(ds, f"dataset {args.data}")
    teacher = folder.describe()
    soft, report = build_soft_labels(
        ds.trn_Y,
        emb["trn"],
        emb["lbl"],
        params,
        meta={"dataset": ds.name, "dataset_root": str(ds.root), "dataset_fingerprint": fp, "teacher": teacher},
        progress=True,
    )
    soft.meta["timings"] = report["timings"]
    soft.save(out)
    params.save(out.with_name(out.stem + ".config.json"))
    calib = report.get("calibration", {})
    calib_json = out.with_name(out.stem + ".calibration.json")
    write_json_atomic(calib_json, {"teacher": teacher, "dataset": ds.name, **calib})
    png = out.with_name(out.stem + ".calibration.png")
    if report.get("curves"):
        save_reliability_diagram(
            png, report["curves"], params.calib_bins,
            title=f"{ds.name}, {teacher['kind']} teacher\n{teacher_dir.name}, held-out training pairs",
        )
    c = soft.meta["counts"]
    ece = calib.get("ece", {})
    print(
        f"wrote {out} ({soft.shape[0]} rows x {soft.shape[1]} labels, {soft.nnz} entries: "
        f"{c['gt_doc']} ground truth, {c['label_self']} label self, {c['label_neighbour']} label neighbours, "
        f"{c['doc_topup']} document top-ups)"
    )
    brier = calib.get("brier", {})
    print(
        "calibration: "
        + ", ".join(f"{k} ECE {v:.4f} Brier {brier.get(k, float('nan')):.4f}" for k, v in ece.items() if v is not None)
        + f"; teacher AUC {calib.get('teacher_auc') or float('nan'):.4f} (using {params.calibration}); diagram {png}"
    )
    return 0


def _histogram(values, bins: int = 10) -> dict[str, Any]:
    import numpy as np

    counts, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    return {"edges": [round(float(e), 4) for e in edges], "counts": counts.tolist()}


def _row_summary(counts) -> dict[str, float]:
    import numpy as np

    if counts.size == 0:
        return {"rows": 0}
    return {
        "rows": int(counts.size),
        "mean": float(counts.mean()),
        "min": int(counts.min()),
        "median": float(np.median(counts)),
        "p99": float(np.percentile(counts, 99)),
        "max": int(counts.max()),
        "zero_rows": int((counts == 0).sum()),
    }


def soft_label_stats(soft, dataset=None) -> dict[str, Any]:
    """Numbers describing a ``SoftLabels``; with the dataset, ground truth vs teacher-added too."""
    import numpy as np
    import scipy.sparse as sp

    csr = soft.csr
    n = soft.num_docs
    doc, lbl = csr[:n], csr[n:]
    per_row = np.diff(csr.indptr)
    out: dict[str, Any] = {
        "shape": list(csr.shape),
        "nnz": int(csr.nnz),
        "num_docs": n,
        "num_labels": soft.num_labels,
        "entries_per_row": {"document_rows": _row_summary(per_row[:n]), "label_rows": _row_summary(per_row[n:])},
        "values": {
            "all": _histogram(csr.data),
            "document_rows": _histogram(doc.data),
            "label_rows": _histogram(lbl.data),
            "min": float(csr.data.min()) if csr.nnz else None,
            "mean": float(csr.data.mean()) if csr.nnz else None,
            "max": float(csr.data.max()) if csr.nnz else None,
        },
        "entries_per_label_column": _row_summary(np.diff(csr.tocsc().indptr)),
        "build_counts": soft.meta.get("counts"),
        "calibration": soft.meta.get("calibration"),
        "tau_l": soft.meta.get("tau_l"),
        "tau_d": soft.meta.get("tau_d"),
        "dataset": soft.meta.get("dataset"),
    }
    # label row l's self entry is column l
    lbl_rows = np.repeat(np.arange(lbl.shape[0]), np.diff(lbl.indptr))
    is_self = lbl.indices == lbl_rows
    self_vals = lbl.data[is_self]
    out["label_self_entries"] = int(is_self.sum())
    out["label_rows_added_per_row"] = _row_summary(np.diff(lbl.indptr) - np.bincount(lbl_rows[is_self], minlength=lbl.shape[0]))
    if self_vals.size:
        out["label_self_value"] = {"min": float(self_vals.min()), "max": float(self_vals.max())}
    if dataset is not None:
        gt = sp.csr_matrix(dataset.trn_Y, dtype=np.float32)
        gt.data[:] = 1
        is_gt = doc.multiply(gt)
        is_gt.data[:] = 1
        n_gt = np.diff(is_gt.indptr)
        added = per_row[:n] - n_gt
        out["document_rows_by_kind"] = {
            "ground_truth": _row_summary(n_gt),
            "teacher_added": _row_summary(added),
            "ground_truth_missing_a_score": int(gt.nnz - is_gt.nnz),
        }
    return out


def _stats(args) -> int:
    from lever.soft_labels.labels import SoftLabels

    dataset = None
    if args.data:
        from lever.data import XCDataset

        dataset = XCDataset.load(args.data)
    soft = SoftLabels.load(args.soft, dataset=dataset)
    st = soft_label_stats(soft, dataset)
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    print(f"{args.soft}: {st['shape'][0]} rows ({st['num_docs']} documents + {st['num_labels']} label rows) "
          f"x {st['num_labels']} labels, {st['nnz']} entries")
    print(f"dataset {st['dataset']}, calibration {st['calibration']}, tau_l {st['tau_l']}, tau_d {st['tau_d']}")
    for kind, summ in st["entries_per_row"].items():
        print(f"  entries per row, {kind.replace('_', ' ')}: " + ", ".join(f"{k} {v:g}" for k, v in summ.items()))
    print("  label rows, added neighbours per row: "
          + ", ".join(f"{k} {v:g}" for k, v in st["label_rows_added_per_row"].items()))
    if "document_rows_by_kind" in st:
        for kind, summ in st["document_rows_by_kind"].items():
            if isinstance(summ, dict):
                print(f"  document rows, {kind} per row: " + ", ".join(f"{k} {v:g}" for k, v in summ.items()))
        print(f"  ground-truth pairs without a score: {st['document_rows_by_kind']['ground_truth_missing_a_score']}")
    if st["build_counts"]:
        print("  build counts: " + ", ".join(f"{k} {v}" for k, v in st["build_counts"].items()))
    h = st["values"]["all"]
    print(f"  values: min {st['values']['min']:.4f}, mean {st['values']['mean']:.4f}, max {st['values']['max']:.4f}")
    peak = max(h["counts"]) or 1
    for lo, hi, c in zip(h["edges"][:-1], h["edges"][1:], h["counts"]):
        print(f"    [{lo:.1f}, {hi:.1f}) {c:>10d} " + "#" * int(40 * c / peak))
    return 0


def _zero_shot(args) -> int:
    from lever.data import XCDataset
    from lever.soft_labels.teacher_embeddings import write_zero_shot_teacher

    ds = XCDataset.load(args.data)
    out = write_zero_shot_teacher(ds, args.out, encoder=args.encoder, max_len=args.max_len, batch_size=args.batch_size)
    print(f"wrote zero-shot teacher {out} (embeddings/trn,tst,lbl.npy, config.json)")
    return 0


def _diagnose(args) -> int:
    from lever.soft_labels.diagnose import diagnose, format_diagnosis, plot_diagnosis
    from lever.utils.atomic import write_json_atomic

    result = diagnose(args.data, args.teacher, args.run, k=args.k, device=args.device)
    plot = Path(args.plot) if args.plot else Path(args.run) / "diagnosis.png"
    plot_diagnosis(result, plot)
    write_json_atomic(plot.with_suffix(".json"), result)
    if args.json:
        print(json.dumps(result))
    else:
        print(format_diagnosis(result))
        print(f"plot: {plot}; JSON: {plot.with_suffix('.json')}")
    return 0
