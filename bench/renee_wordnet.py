"""Renée on the WordNet XC dataset (CPU): plain, with label-as-datapoint rows, and with LEVER soft
labels, against Omikuji on TF-IDF features of the same split.

Every Renée variant is a real ``lever train --backbone renee`` run (the shared loop, resumable:
rerunning continues a run folder). For each, the test split is predicted (top-5, test filter
applied) and scored with lever.metrics (P, PSP, C @1/3/5) and the per-decile report/plot.

usage:
  OMP_NUM_THREADS=1 python bench/renee_wordnet.py --data runs/wordnet --out runs/renee_wordnet \
      --soft runs/soft_wordnet.npz [--embeddings runs/soft_wordnet_zeroshot.teacher] \
      [--variants omikuji renee renee_label_rows renee_lever] [--epochs 4]

``--embeddings`` (a teacher folder holding embeddings/{trn,tst,lbl}.npy, e.g. the zero-shot, i.e.
frozen MiniLM, teacher) switches the encoder from the TF-IDF bag to frozen MiniLM ⊕ TF-IDF bag.
Writes bench/results/renee_wordnet{,_<tag>}.{json,md} and decile plots beside them.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import run_omikuji  # the bench scripts share one Omikuji runner

RESULTS = Path(__file__).resolve().parent / "results"
KS = (1, 3, 5)
VARIANTS = ("omikuji", "renee", "renee_label_rows", "renee_lever")


def renee_params(args, variant: str):
    from lever.train.params import LeverParams, OptimParams, RunParams, TrainParams

    kind = args.encoder or ("cached+tfidf" if args.embeddings else "tfidf")
    encoder = {
        "kind": kind,
        "embeddings": args.embeddings if "cached" in kind else None,
        "max_len": args.max_len,
        "bag_dim": args.bag_dim,
        "dropout": args.dropout,
        "tfidf_max_features": args.tfidf_features,
    }
    return TrainParams(
        data=args.data,
        backbone="renee",
        out=str(Path(args.out) / variant),
        backbone_params={"encoder": encoder, "lr_clf": args.lr_clf, "lr_enc": args.lr_enc},
        lever=LeverParams(
            soft_labels=args.soft if variant == "renee_lever" else None, label_rows=variant != "renee"
        ),
        optim=OptimParams(epochs=args.epochs, batch_size=args.batch, warmup_steps=args.warmup),
        run=RunParams(eval_every=args.epochs, seed=args.seed, cache_dir=str(Path(args.out) / "cache")),
    )


def run_renee(args, variant: str, ds):
    import torch

    from lever.train.loop import load_trained, train
    from lever.train.predict import predict_topk

    params = renee_params(args, variant)
    t0 = time.time()
    train(params, progress=not args.quiet)
    wall = time.time() - t0
    log = [json.loads(x) for x in (Path(params.out) / "metrics.jsonl").read_text().splitlines()]
    backbone, module, _, _ = load_trained(params.out, device="cpu")
    idx, scores = predict_topk(
        backbone,
        module,
        ds.num_test,
        ds.num_labels,
        5,
        torch.device("cpu"),
        exclude=ds.tst_filter,
        progress=not args.quiet,
    )
    info = {
        "epoch_seconds": [r["seconds"] for r in log],
        "train_loss": [r["loss"] for r in log],
        "wall_seconds_this_invocation": wall,
        "config": json.loads((Path(params.out) / "config.json").read_text()),
    }
    return (idx, scores), info


def score(ds, preds, name: str, tag: str):
    from lever.metrics import XCMetrics, inverse_propensity
    from lever.metrics.deciles import decile_report, format_deciles, plot_deciles

    inv = inverse_propensity(ds.trn_Y, ds.meta.propensity_a, ds.meta.propensity_b)
    acc = XCMetrics(ds.tst_Y, inv, k=5, filter=ds.tst_filter)
    acc.update(np.arange(ds.num_test), preds)
    res = acc.summary()
    counts = np.asarray(ds.trn_Y.sum(0)).ravel()
    report = decile_report(acc, counts, k=5)
    plot_deciles(
        report,
        5,
        RESULTS / f"renee_wordnet{tag}_deciles_{name}.png",
        title=f"{name} on WordNet (k=5)",
    )
    return res, report, format_deciles(report, 5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="runs/wordnet")
    ap.add_argument("--out", default="runs/renee_wordnet")
    ap.add_argument("--soft", default="runs/soft_wordnet.npz")
    ap.add_argument(
        "--embeddings", default=None, help="teacher folder with embeddings/{trn,tst,lbl}.npy"
    )
    ap.add_argument(
        "--encoder",
        default=None,
        help="encoder kind (default: tfidf, or cached+tfidf with --embeddings)",
    )
    ap.add_argument(
        "--max-len", dest="max_len", type=int, default=32, help="tokens per text (transformer)"
    )
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr-clf", dest="lr_clf", type=float, default=0.05)
    ap.add_argument("--lr-enc", dest="lr_enc", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--dropout", type=float, default=0.6)
    ap.add_argument("--bag-dim", dest="bag_dim", type=int, default=256)
    ap.add_argument("--tfidf-features", dest="tfidf_features", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default="", help="suffix of the result files")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    from lever.data import XCDataset
    from lever.metrics import format_table
    from lever.utils.atomic import write_json_atomic, write_text_atomic

    ds = XCDataset.load(args.data)
    tag = f"_{args.tag}" if args.tag else ""
    out_json = RESULTS / f"renee_wordnet{tag}.json"
    done = {"runs": {}}
    for variant in args.variants:
        print(f"== {variant}", flush=True)
        if variant == "omikuji":
            preds, info = run_omikuji(args, ds)
        else:
            preds, info = run_renee(args, variant, ds)
        res, report, table = score(ds, preds, variant, tag)
        print(format_table(res, rows=("P", "PSP", "C")), "\n", table, flush=True)
        meta = {
            "dataset": args.data,
            "num_train": ds.num_train,
            "num_test": ds.num_test,
            "num_labels": ds.num_labels,
            "soft_labels": args.soft,
            "embeddings": args.embeddings,
            "args": vars(args),
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "loadavg": os.getloadavg(),
            "note": "CPU, shared machine under load from other jobs; times are wall-clock and noisy",
        }
        # Variants may run as parallel processes: merge into the file under a lock.
        Path(args.out).mkdir(parents=True, exist_ok=True)
        with open(Path(args.out) / f"results{tag}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            done = json.loads(out_json.read_text()) if out_json.exists() else {"runs": {}}
            done["runs"][variant] = {"metrics": res, "deciles": report, "info": info, "meta": meta}
            write_json_atomic(out_json, done)

    if not args.variants:  # report only: rebuild the markdown from what the runs wrote
        done = json.loads(out_json.read_text())
    runs = done["runs"]
    enc = {
        "tfidf": "TF-IDF bag",
        "cached+tfidf": "frozen MiniLM ⊕ TF-IDF bag",
        "transformer": "MiniLM fine-tuned end to end",
    }.get(args.encoder or ("cached+tfidf" if args.embeddings else "tfidf"))
    lines = [
        f"# Renée on {Path(args.data).name} (CPU), encoder: {enc}",
        "",
        (
            f"{ds.num_train:,} train / {ds.num_test:,} test documents, {ds.num_labels:,} labels; "
            "test filter applied; metrics in %."
        ),
        "",
        "| model | P@1 | P@3 | P@5 | PSP@1 | PSP@3 | PSP@5 | C@1 | C@3 | C@5 | s/epoch |",
        "|---|" + "---|" * 10,
    ]
    for name in VARIANTS:
        if name not in runs:
            continue
        m, info = runs[name]["metrics"], runs[name]["info"]
        ep = info.get("epoch_seconds")
        per_epoch = f"{np.median(ep):.0f}" if ep else f"{info.get('train_seconds', 0):.0f} (total)"
        vals = " | ".join(f"{m[f'{x}@{k}']:.2f}" for x in ("P", "PSP", "C") for k in KS)
        lines.append(f"| {name} | {vals} | {per_epoch} |")
    if "renee_lever" in runs:
        lev = np.median(runs["renee_lever"]["info"]["epoch_seconds"])
        for base in ("renee_label_rows", "renee"):
            if base in runs:
                ratio = lev / np.median(runs[base]["info"]["epoch_seconds"])
                lines.append(f"\nPer-epoch time, renee_lever / {base}: {ratio:.2f}x")
    for name in VARIANTS:
        if name in runs:
            from lever.metrics.deciles import format_deciles

            lines += [
                "",
                f"## Deciles at k=5: {name}",
                "",
                "```",
                format_deciles(runs[name]["deciles"], 5),
                "```",
                f"![{name}](renee_wordnet{tag}_deciles_{name}.png)",
            ]
    write_text_atomic(RESULTS / f"renee_wordnet{tag}.md", "\n".join(lines) + "\n")
    print("\n".join(lines[: 12 + len(runs)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
