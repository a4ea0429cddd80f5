"""Frozen-feature teacher on a dataset: training time and the teacher's kNN metrics for a few
settings, next to zero-shot MiniLM (the same cached features, no tower).

    OMP_NUM_THREADS=1 .venv/bin/python bench/teacher_frozen.py --data runs/foldoc \
        --cache-dir runs/cache --out runs/teacher_frozen_foldoc_v2 [--quick] [--variants a,b]
    OMP_NUM_THREADS=1 .venv/bin/python bench/teacher_frozen.py --data runs/wordnet \
        --cache-dir runs/cache --out runs/teacher_frozen_wordnet --quick

Writes bench/results/teacher_frozen_<data folder name>.{json,md}. The first variant (the preset
frozen-cpu defaults) trains into ``--out``, the teacher others use; the rest into ``--work``.
``--quick`` trains only the default. ``--rows FILE.jsonl`` adds rows measured earlier by this
script's code path (same fields) instead of retraining them; they are marked "earlier run".
Every row records ``cat /proc/loadavg`` at its end: timings on a shared 2-core machine are noisy.
The MiniLM features are embedded once into ``--cache-dir`` and reused.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
KEYS = ("P@1", "P@3", "P@5", "PSP@1", "PSP@3", "PSP@5", "C@1", "C@3", "C@5", "R@100")
RANDOM = 10**9  # cl_start: never clustered

# name -> overrides of preset frozen-cpu (the first row is the default, trained into --out)
VARIANTS = {
    "default (pair, softmax T=0.05, random batches)": {},
    "softmax T=0.05, clustered (8 docs) from epoch 1": {"cl_start": 1},
    "Eq.9 (pairwise-logistic, k=10), clustered from epoch 1 [old default]": {
        "loss": "pairwise-logistic",
        "cl_start": 1,
    },
    "Eq.9, random batches": {"loss": "pairwise-logistic"},
    "Eq.9 over all 1023 negatives, random batches": {
        "loss": "pairwise-logistic",
        "num_negatives": 1023,
    },
    "softmax T=0.1": {"temperature": 0.1},
    "softmax T=0.02": {"temperature": 0.02},
    "hidden 384": {"hidden": 384},
}


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="runs/wordnet")
    ap.add_argument("--cache-dir", default="runs/cache")
    ap.add_argument("--out", default="runs/teacher_frozen_wordnet")
    ap.add_argument("--work", default="runs/teacher_frozen_bench")
    ap.add_argument("--quick", action="store_true", help="only the default variant")
    ap.add_argument("--variants", help="comma-separated indices into VARIANTS (0 = default)")
    ap.add_argument("--rows", type=Path, help="JSONL of rows measured earlier, added as they are")
    args = ap.parse_args()

    import torch

    from lever.data import XCDataset
    from lever.teacher.evaluate import dataset_inverse_propensity, evaluate_embeddings
    from lever.teacher.params import preset
    from lever.teacher.train import train_teacher
    from lever.train.embeddings import frozen_embeddings

    tag = Path(args.data).name
    ds = XCDataset.load(args.data)
    t0 = time.perf_counter()
    feats = frozen_embeddings(ds, args.cache_dir, None, ("lbl", "tst", "trn"), max_len=32)
    embed_s = time.perf_counter() - t0
    zero = evaluate_embeddings(
        feats["tst"], feats["lbl"], ds.tst_Y, dataset_inverse_propensity(ds), ds.tst_filter
    )
    rows = [{"name": "zero-shot MiniLM (max_len 32)", "train_s": 0.0, "test": zero}]
    names = list(VARIANTS)
    if args.quick:
        picked = [0]
    elif args.variants:
        picked = [int(i) for i in args.variants.split(",")]
    else:
        picked = list(range(len(names)))
    for i in picked:
        name, over = names[i], VARIANTS[names[i]]
        params = preset("frozen-cpu").replace(cache_dir=args.cache_dir, **over)
        out = Path(args.out) if i == 0 else Path(args.work) / f"{tag}_v{i}"
        if out.exists():
            shutil.rmtree(out)
        t = time.perf_counter()
        test = train_teacher(ds, params, out, progress=False)
        secs = time.perf_counter() - t
        records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        lbl = np.load(out / "embeddings" / "lbl.npy")
        pick = np.random.default_rng(0).choice(len(lbl), min(2000, len(lbl)), replace=False)
        rows.append(
            {
                "name": name,
                "overrides": over,
                "train_s": round(secs, 1),  # training + export (embeddings, final evaluation)
                "epoch_s": [r["seconds"] for r in records if "seconds" in r],
                "loss": [round(r["loss"], 4) for r in records if "loss" in r],
                "mean_label_cosine": round(float((lbl[pick] @ lbl[pick].T).mean()), 3),
                "loadavg": _load(),
                "torch_threads": torch.get_num_threads(),
                "test": test,
                "folder": str(out),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    if args.rows is not None:
        for line in args.rows.read_text().splitlines():
            if line.strip():
                rows.append(json.loads(line) | {"earlier_run": True})
    report = {
        "dataset": ds.name,
        "feature_embedding_s": round(embed_s, 1),
        "base": preset("frozen-cpu").to_dict(),
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"teacher_frozen_{tag}.json").write_text(json.dumps(report, indent=2))
    lines = [
        f"# Frozen-feature teacher on {ds.name}",
        "",
        (
            f"MiniLM features (cached, max_len 32): {embed_s:.0f} s this run (0 when cached). "
            "train s = training + export (tower over all splits, final test evaluation); "
            "mean cos = mean pairwise cosine of 2000 label embeddings (≈1: collapsed)."
        ),
        "",
        "| variant | train s | s/epoch | load | mean cos | " + " | ".join(KEYS) + " |",
        "|---|---|---|---|---|" + "---|" * len(KEYS),
    ]
    for r in rows:
        cells = " | ".join(f"{r['test'].get(k, float('nan')):.2f}" for k in KEYS)
        ep = r.get("epoch_s") or []
        per = f"{np.mean(ep):.1f}" if ep else "-"
        name = r["name"] + (" (earlier run)" if r.get("earlier_run") else "")
        cos = r.get("mean_label_cosine", "-")
        lines.append(
            f"| {name} | {r['train_s']:.0f} | {per} | {r.get('loadavg', '-')} | {cos} | {cells} |"
        )
    (RESULTS / f"teacher_frozen_{tag}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
