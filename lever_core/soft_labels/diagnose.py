"""Teacher against student, per label-frequency decile, before distilling (``lever soft-labels
diagnose``).

LEVER moves the student towards the teacher; that helps on the labels where the teacher is the
better ranker and hurts elsewhere (paper Tables 11 and 15). This compares the two on held-out
documents, decile by decile (head first, equal training-positive mass per bin): recall@k of the
bin's positives and the bin's share of P@k and PSP@k.

Held-out documents: a ``--lam auto`` run's validation split, with the search's plain student
(``RUN/auto/cells/baseline``, trained without those documents) against the search's refit
teacher (``RUN/auto/teacher``, also trained without them) when there is one, else the given
teacher (which saw them: optimistic); for any other run the dataset's test split with the run's
own model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

WARNING = "LEVER is unlikely to help here; stronger teacher or --lam auto"


def _held_out(data: str | Path, teacher: str | Path, run: str | Path):
    """``(split name, dataset to score, student run folder, teacher doc and label embeddings,
    the teacher folder they come from)``."""
    from lever.data import XCDataset
    from lever.soft_labels.teacher_embeddings import load_teacher_embeddings

    ds = XCDataset.load(data)
    auto = Path(run) / "auto"
    refit = auto / "teacher"
    if (auto / "cells" / "baseline" / "model.safetensors").exists() and (refit / "embeddings" / "meta.json").exists():
        # The search refit the teacher without the validation documents: judge that one, since
        # the given teacher has seen (and largely memorised) them.
        val = XCDataset.load(auto / "data")
        emb = load_teacher_embeddings(refit, {"tst": val.num_test, "lbl": val.num_labels}, ("tst", "lbl"))
        return "validation", val, auto / "cells" / "baseline", emb["tst"], emb["lbl"], refit
    if (auto / "cells" / "baseline" / "model.safetensors").exists():
        val_rows = np.asarray(json.loads((auto / "split.json").read_text())["val_rows"], dtype=np.int64)
        emb = load_teacher_embeddings(teacher, {"trn": ds.num_train, "lbl": ds.num_labels})
        docs = np.asarray(emb["trn"][val_rows])
        return "validation", XCDataset.load(auto / "data"), auto / "cells" / "baseline", docs, emb["lbl"], teacher
    emb = load_teacher_embeddings(teacher, {"tst": ds.num_test, "lbl": ds.num_labels}, ("tst", "lbl"))
    return "test", ds, Path(run), emb["tst"], emb["lbl"], teacher


def _accumulate(ds, preds: tuple[np.ndarray, np.ndarray], k: int):
    from lever.metrics.propensity import inverse_propensity
    from lever.metrics.xc_metrics import XCMetrics

    inv_prop = inverse_propensity(ds.trn_Y, ds.meta.propensity_a, ds.meta.propensity_b)
    acc = XCMetrics(ds.tst_Y, inv_prop, k=k, filter=ds.tst_filter)
    acc.update(np.arange(ds.num_test), preds)
    return acc


def diagnose(data, teacher, run, k: int = 5, device: str = "auto", progress: bool = True) -> dict[str, Any]:
    """Overall and per-decile metrics of the teacher and the student on held-out documents."""
    from lever.metrics.deciles import decile_report
    from lever.metrics.propensity import label_counts
    from lever.teacher.evaluate import exact_knn
    from lever.train.loop import load_trained
    from lever.train.predict import predict_topk

    split, ds, student_run, docs, lbl, teacher = _held_out(data, teacher, run)
    backbone, module, _, _ = load_trained(student_run, ds.root, device)
    dev = next(module.parameters()).device
    student = predict_topk(backbone, module, ds.num_test, ds.num_labels, k, dev,
                           exclude=ds.tst_filter, progress=progress, desc="student")
    teach = exact_knn(docs, lbl, k, filter=ds.tst_filter)
    counts = label_counts(ds.trn_Y)
    out: dict[str, Any] = {"split": split, "num_docs": ds.num_test, "k": k,
                           "student_run": str(student_run), "teacher_folder": str(teacher)}
    for name, preds in (("student", student), ("teacher", teach)):
        acc = _accumulate(ds, preds, k)
        out[name] = {key: float(v) for key, v in acc.summary().items()}
        out[f"{name}_deciles"] = decile_report(acc, counts, k=k)
    bins = zip(out["student_deciles"], out["teacher_deciles"])
    out["teacher_better_bins"] = [s["bin"] for s, t in bins if t["R"] > s["R"]]
    out["warning"] = None if out["teacher_better_bins"] else WARNING
    return out


def format_diagnosis(d: dict[str, Any]) -> str:
    k = d["k"]
    head = f"{d['split']} split, {d['num_docs']} documents; teacher vs student @{k}"
    overall = "  ".join(
        f"{m}: student {d['student'][m]:.2f} teacher {d['teacher'][m]:.2f}"
        for m in (f"P@{k}", f"PSP@{k}", f"C@{k}")
    )
    header = (f"{'bin':>3} {'labels':>7} {'freq':>11} {'R student':>9} {'R teacher':>9} "
              f"{'PSP stud.':>9} {'PSP teach.':>10} {'P stud.':>7} {'P teach.':>8}")
    rows = [header]
    for s, t in zip(d["student_deciles"], d["teacher_deciles"]):
        freq = f"{s['min_train_freq']}-{s['max_train_freq']}"
        mark = " <- teacher" if s["bin"] in d["teacher_better_bins"] else ""
        rows.append(
            f"{s['bin']:>3} {s['num_labels']:>7} {freq:>11} {s['R']:>9.2f} {t['R']:>9.2f} "
            f"{s['PSP_contrib']:>9.2f} {t['PSP_contrib']:>10.2f} {s['P_contrib']:>7.2f} "
            f"{t['P_contrib']:>8.2f}{mark}"
        )
    lines = [head, overall, *rows]
    if d["warning"]:
        lines.append(f"warning: the teacher is weaker than the student on every decile. {d['warning']}")
    else:
        lines.append(f"the teacher leads on decile(s) {d['teacher_better_bins']} (recall@{k})")
    return "\n".join(lines)


def plot_diagnosis(d: dict[str, Any], path: str | Path) -> None:
    """Recall@k and PSP@k share per decile, student and teacher side by side."""
    from lever.utils.figures import pyplot, save_png

    plt = pyplot()
    bins = np.array([s["bin"] for s in d["student_deciles"]])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label in ((axes[0], "R", f"recall@{d['k']} (%)"),
                           (axes[1], "PSP_contrib", f"share of PSP@{d['k']} (points)")):
        for shift, who in ((-0.2, "student"), (0.2, "teacher")):
            ax.bar(bins + shift, [r[key] for r in d[f"{who}_deciles"]], width=0.4, label=who)
        ax.set_xlabel("label-frequency decile (1 = head)")
        ax.set_ylabel(label)
        ax.set_xticks(bins)
        ax.legend()
    fig.suptitle(f"teacher vs student on the {d['split']} split")
    fig.tight_layout()
    save_png(fig, path)
