"""Teacher quality on the WordNet dataset: the trained Siamese teacher vs the untrained encoder
(zero-shot), both retrieving labels for test documents by exact cosine kNN, with the dataset's
test filter; P@k, PSP@k, C@5 and recall@100 in percent.

The zero-shot encoder is truncated at the teacher's ``max_len`` so the two differ only by training.
Its embeddings are kept in a zero-shot teacher folder (runs/zero_shot_wordnet) because they cost
minutes on a CPU; matching splits of the soft-label run's zero-shot folder are reused.

Writes bench/results/teacher_quality_<dataset folder>.json and .md.

    .venv/bin/python bench/teacher_quality.py --data runs/wordnet --teacher runs/teacher_wordnet
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from lever.utils.atomic import write_json_atomic, write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
COLUMNS = ("P@1", "P@3", "P@5", "PSP@1", "PSP@3", "PSP@5", "C@5", "R@100")


def zero_shot(dataset, encoder: str | None, max_len: int, folder: Path, reuse: Path | None) -> dict:
    """Zero-shot metrics from a zero-shot teacher folder (lbl + tst embeddings) made by
    ``lever.soft_labels.write_zero_shot_teacher``, which resumes from splits already embedded.
    ``reuse``: another zero-shot folder (e.g. the soft-label run's) whose matching splits are
    copied first, so the same texts are not embedded twice on a busy machine."""
    import shutil

    import numpy as np

    from lever.soft_labels.teacher_embeddings import write_zero_shot_teacher
    from lever.teacher.evaluate import dataset_inverse_propensity, evaluate_embeddings

    if (
        reuse is not None
        and (reuse / "embeddings" / "meta.json").exists()
        and not (folder / "embeddings").exists()
    ):
        meta = json.loads((reuse / "embeddings" / "meta.json").read_text())
        if meta.get("fingerprint") == dataset.fingerprint() and meta.get("max_len") == max_len:
            (folder / "embeddings").mkdir(parents=True, exist_ok=True)
            meta["rows"] = {k: v for k, v in meta.get("rows", {}).items() if k in ("lbl", "tst")}
            for split in meta["rows"]:
                shutil.copy(
                    reuse / "embeddings" / f"{split}.npy", folder / "embeddings" / f"{split}.npy"
                )
            write_json_atomic(folder / "embeddings" / "meta.json", meta)
    t0 = time.perf_counter()
    write_zero_shot_teacher(
        dataset, folder, encoder=encoder, max_len=max_len, splits=("lbl", "tst")
    )
    secs = round(time.perf_counter() - t0, 1)
    lbl = np.load(folder / "embeddings" / "lbl.npy")
    tst = np.load(folder / "embeddings" / "tst.npy")
    metrics = evaluate_embeddings(
        tst, lbl, dataset.tst_Y, dataset_inverse_propensity(dataset), dataset.tst_filter, k=100
    )
    return metrics | {"seconds": secs}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=ROOT / "runs" / "wordnet")
    ap.add_argument("--teacher", type=Path, default=ROOT / "runs" / "teacher_wordnet")
    ap.add_argument(
        "--zero-shot-only", action="store_true", help="compute (and cache) the zero-shot row only"
    )
    ap.add_argument(
        "--zero-shot-folder",
        type=Path,
        default=None,
        help="where the zero-shot embeddings are kept [runs/zero_shot_<data folder>]",
    )
    ap.add_argument(
        "--reuse-zero-shot",
        type=Path,
        default=ROOT / "runs" / "soft_wordnet_zeroshot.teacher",
        help="a zero-shot teacher folder whose splits may be copied instead of recomputed",
    )
    args = ap.parse_args()

    from lever.data import XCDataset
    from lever.teacher.evaluate import evaluate_teacher_folder
    from lever.teacher.params import TeacherParams

    ds = XCDataset.load(args.data)
    params = (
        TeacherParams.load(args.teacher / "config.json")
        if (args.teacher / "config.json").exists()
        else TeacherParams()
    )
    zs_folder = args.zero_shot_folder or ROOT / "runs" / f"zero_shot_{args.data.name}"
    rows = {
        "zero-shot": zero_shot(
            ds,
            None if params.encoder == "all-MiniLM-L6-v2" else params.encoder,
            params.max_len,
            zs_folder,
            args.reuse_zero_shot,
        )
    }
    print(json.dumps(rows))
    if args.zero_shot_only:
        return
    t0 = time.perf_counter()
    rows["teacher"] = evaluate_teacher_folder(ds, args.teacher) | {
        "seconds": round(time.perf_counter() - t0, 1)
    }
    records = [
        json.loads(x)
        for x in (args.teacher / "metrics.jsonl").read_text().splitlines()
        if x.strip()
    ]
    train_s = sum(r.get("seconds", 0.0) for r in records)
    summary = {
        "dataset": str(args.data),
        "num_train": ds.num_train,
        "num_test": ds.num_test,
        "num_labels": ds.num_labels,
        "teacher": str(args.teacher),
        "teacher_params": params.to_dict(),
        "teacher_train_seconds": round(train_s, 1),
        "epochs": records,
        "results": rows,
        "teacher_beats_zero_shot_psp5": rows["teacher"]["PSP@5"] > rows["zero-shot"]["PSP@5"],
        "note": "shared, loaded machine (several helpers running at once); timings are indicative",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json_atomic(RESULTS / f"teacher_quality_{args.data.name}.json", summary)
    md = [
        "# Teacher quality on WordNet",
        "",
        (
            f"`{args.data.name}`: {ds.num_train:,} train / {ds.num_test:,} test documents, "
            f"{ds.num_labels:,} labels. "
            f"Exact cosine kNN over label embeddings, test filter applied, A/B = "
            f"{ds.meta.propensity_a}/{ds.meta.propensity_b}; percent. Teacher: {params.encoder}, "
            f"{params.epochs} epochs, {params.batch_type}-side batches, loss {params.loss}, "
            f"max_len {params.max_len}; training took {train_s / 60:.1f} min on a shared, loaded "
            "2-core CPU."
        ),
        "",
        "| model | " + " | ".join(COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    for name, m in rows.items():
        md.append(f"| {name} | " + " | ".join(f"{m[c]:.2f}" for c in COLUMNS) + " |")
    delta = {c: rows["teacher"][c] - rows["zero-shot"][c] for c in COLUMNS}
    md.append("| difference | " + " | ".join(f"{delta[c]:+.2f}" for c in COLUMNS) + " |")
    write_text_atomic(RESULTS / f"teacher_quality_{args.data.name}.md", "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
