"""The peers of a lever table on the same split, one command: napkinXC's PLT and Omikuji on TF-IDF
features, PECOS XR-Linear (libpecos pins numpy<2, so it trains in its own virtualenv, made on the
first run), and the zero-shot MiniLM retriever (exact kNN of test documents over label texts).

Every peer sees the same TF-IDF features (lever's featurizer, fitted on the training texts) and is
scored by lever.metrics with the test filter applied (peers without a filter predict their top 10
and the filtered labels are dropped before the top 5).

usage:
  python bench/peers.py --data runs/foldoc --out runs/peers_foldoc [--peers omikuji plt pecos zeroshot]
      [--tfidf-features 50000] [--pecos-venv runs/pecos_venv] [--threads 1] \
      [--zeroshot-folder runs/zeroshot_foldoc]

Writes OUT/<peer>/pred.npz (lever's prediction format, for `lever eval`) and
bench/results/peers_<dataset>.{json,md}; finished peers are re-scored, not retrained.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

RESULTS = Path(__file__).resolve().parent / "results"
PEERS = ("omikuji", "plt", "pecos", "zeroshot")
KS = (1, 3, 5)
TOP = 10  # predicted per document before the test filter


_TFIDF: dict = {}  # (dataset root, features) -> (featurizer, X_trn, X_tst): fitted once per invocation


def tfidf_features(args, ds):
    from lever_adapters.renee.features import TfidfFeaturizer

    key = (str(ds.root), args.tfidf_features)
    if key not in _TFIDF:
        tfidf = TfidfFeaturizer(args.tfidf_features).fit(list(ds.trn_texts))
        _TFIDF[key] = (tfidf, tfidf.transform(list(ds.trn_texts)), tfidf.transform(list(ds.tst_texts)))
    return _TFIDF[key]


def run_omikuji(args, ds):
    """Omikuji (Parabel/Bonsai-style trees) with its defaults on TF-IDF."""
    import omikuji

    from lever.data import write_legacy

    folder = Path(args.out) / "omikuji"
    folder.mkdir(parents=True, exist_ok=True)
    tfidf, X_trn, X_tst = tfidf_features(args, ds)
    data_file = folder / "trn.omikuji.txt"
    keep = X_trn.getnnz(axis=1) > 0  # Omikuji rejects rows without features (all words out of vocabulary)
    write_legacy(data_file, X_trn[keep], ds.trn_Y[keep])
    t0 = time.time()
    model = omikuji.Model.train_on_data(str(data_file), n_threads=getattr(args, "threads", 1))
    train_s = time.time() - t0
    idx = np.full((ds.num_test, TOP), -1, dtype=np.int64)
    sc = np.full((ds.num_test, TOP), -np.inf, dtype=np.float32)
    for r in range(ds.num_test):
        row = X_tst[r]
        for j, (label, score) in enumerate(model.predict(list(zip(row.indices.tolist(), row.data.tolist())), top_k=TOP)):
            idx[r, j], sc[r, j] = label, score
    info = {"train_seconds": train_s, "features": tfidf.vocab_size, "hyper_params": "omikuji defaults",
            "train_rows_without_features_dropped": int((~keep).sum())}
    return (idx, sc), info


def run_plt(args, ds):
    """napkinXC's PLT (probabilistic label tree, hierarchical k-means, liblinear nodes), defaults."""
    from napkinxc.models import PLT

    _, X_trn, X_tst = tfidf_features(args, ds)
    folder = Path(args.out) / "plt" / "model"
    folder.parent.mkdir(parents=True, exist_ok=True)
    Y = [row.indices.tolist() for row in ds.trn_Y.tocsr()]
    t0 = time.time()
    model = PLT(str(folder), threads=args.threads, seed=args.seed)
    model.fit(X_trn, Y)
    train_s = time.time() - t0
    idx = np.full((ds.num_test, TOP), -1, dtype=np.int64)
    sc = np.full((ds.num_test, TOP), -np.inf, dtype=np.float32)
    for r, row in enumerate(model.predict_proba(X_tst, top_k=TOP)):
        for j, (label, p) in enumerate(row):
            idx[r, j], sc[r, j] = label, p
    return (idx, sc), {"train_seconds": train_s, "hyper_params": "napkinXC PLT defaults"}


PECOS_SCRIPT = """
import json, sys, time
import numpy as np, scipy.sparse as sp
from pecos.xmc import Indexer, LabelEmbeddingFactory
from pecos.xmc.xlinear.model import XLinearModel
folder = sys.argv[1]
X = sp.load_npz(folder + "/X_trn.npz").tocsr().astype(np.float32)
Y = sp.load_npz(folder + "/Y_trn.npz").tocsr().astype(np.float32)
Xt = sp.load_npz(folder + "/X_tst.npz").tocsr().astype(np.float32)
t0 = time.time()
chain = Indexer.gen(LabelEmbeddingFactory.create(Y, X, method="pifa"), seed=int(sys.argv[3]))
model = XLinearModel.train(X, Y, C=chain)
train_s = time.time() - t0
P = model.predict(Xt, only_topk=int(sys.argv[2])).tocsr()
sp.save_npz(folder + "/P_tst.npz", P)
json.dump({"train_seconds": train_s}, open(folder + "/pecos_info.json", "w"))
"""


def pecos_python(venv: Path) -> Path:
    """The virtualenv's python, made with libpecos (numpy<2) on first use."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "libpecos", "numpy<2", "scipy"], check=True)
    return python


def run_pecos(args, ds):
    """PECOS XR-Linear (PIFA label embeddings, hierarchical balanced k-means, its default solver)."""
    _, X_trn, X_tst = tfidf_features(args, ds)
    folder = Path(args.out) / "pecos"
    folder.mkdir(parents=True, exist_ok=True)
    for name, m in (("X_trn", X_trn), ("Y_trn", ds.trn_Y), ("X_tst", X_tst)):
        sp.save_npz(folder / f"{name}.npz", sp.csr_matrix(m, dtype=np.float32))
    python = pecos_python(Path(args.pecos_venv))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    subprocess.run([str(python), "-c", PECOS_SCRIPT, str(folder), str(TOP), str(args.seed)], check=True, env=env)
    P = sp.load_npz(folder / "P_tst.npz").tocsr()
    idx = np.full((ds.num_test, TOP), -1, dtype=np.int64)
    sc = np.full((ds.num_test, TOP), -np.inf, dtype=np.float32)
    for r in range(ds.num_test):
        lo, hi = P.indptr[r], P.indptr[r + 1]
        order = np.argsort(-P.data[lo:hi])[:TOP]
        idx[r, : order.size], sc[r, : order.size] = P.indices[lo:hi][order], P.data[lo:hi][order]
    info = json.loads((folder / "pecos_info.json").read_text())
    return (idx, sc), {**info, "hyper_params": "XR-Linear defaults, PIFA + hierarchical k-means"}


def run_zeroshot(args, ds):
    """The packaged MiniLM, untrained: test documents' nearest label texts (cosine, exact)."""
    from lever.teacher.evaluate import exact_knn, teacher_test_topk
    from lever.train.embeddings import frozen_embeddings

    t0 = time.time()
    if args.zeroshot_folder:  # embeddings computed before (`lever soft-labels zero-shot-teacher`)
        preds = teacher_test_topk(ds, args.zeroshot_folder, 5, progress=False)
    else:
        emb = frozen_embeddings(ds, Path(args.out) / "cache", splits=("lbl", "tst"))
        preds = exact_knn(np.asarray(emb["tst"]), np.asarray(emb["lbl"]), 5, filter=ds.tst_filter)
    return preds, {"seconds": time.time() - t0, "hyper_params": "all-MiniLM-L6-v2, mean pooling, no training"}


RUNNERS = {"omikuji": run_omikuji, "plt": run_plt, "pecos": run_pecos, "zeroshot": run_zeroshot}


def filtered_top5(ds, preds) -> tuple[np.ndarray, np.ndarray]:
    """The top 5 of each row after dropping padding and the test filter's labels."""
    idx, sc = preds
    idx, sc = np.array(idx, dtype=np.int64), np.array(sc, dtype=np.float32)
    rows = np.repeat(np.arange(idx.shape[0])[:, None], idx.shape[1], 1)
    drop = idx < 0
    flt = sp.csr_matrix(ds.tst_filter) if ds.tst_filter is not None else None
    if flt is not None and flt.nnz:
        drop |= np.asarray(flt[rows.ravel(), np.maximum(idx, 0).ravel()]).reshape(idx.shape) > 0
    sc = np.where(drop, -np.inf, sc)
    order = np.argsort(-sc, axis=1, kind="stable")[:, :5]
    idx, sc = np.take_along_axis(idx, order, 1), np.take_along_axis(sc, order, 1)
    return np.where(np.isfinite(sc), idx, -1), sc


def score(ds, preds) -> dict:
    from lever.metrics import evaluate, inverse_propensity
    from lever.train import topk_to_csr

    idx, sc = filtered_top5(ds, preds)
    inv = inverse_propensity(ds.trn_Y, ds.meta.propensity_a, ds.meta.propensity_b)
    pred = topk_to_csr(idx, np.where(idx >= 0, sc, 0.0), ds.num_labels)
    return evaluate(ds.tst_Y, pred, inv, k=5, filter=ds.tst_filter), pred


def markdown(ds, runs: dict) -> str:
    lines = [f"# Peers on {ds.name} (CPU, TF-IDF of the training texts; zero-shot: MiniLM)", "",
             (f"{ds.num_train:,} train / {ds.num_test:,} test documents, {ds.num_labels:,} labels; test "
              "filter applied; metrics in %."), "",
             "| peer | P@1 | P@3 | P@5 | PSP@1 | PSP@3 | PSP@5 | C@1 | C@3 | C@5 | train s |", "|---|" + "---|" * 10]
    for name in PEERS:
        if name in runs:
            m, info = runs[name]["metrics"], runs[name]["info"]
            vals = " | ".join(f"{m[f'{x}@{k}']:.2f}" for x in ("P", "PSP", "C") for k in KS)
            secs = info.get("train_seconds", info.get("seconds"))
            lines.append(f"| {name} | {vals} | {secs:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--peers", nargs="+", default=list(PEERS), choices=PEERS)
    ap.add_argument("--tfidf-features", dest="tfidf_features", type=int, default=50_000)
    ap.add_argument("--pecos-venv", dest="pecos_venv", default="runs/pecos_venv")
    ap.add_argument("--zeroshot-folder", dest="zeroshot_folder", default=None,
                    help="a zero-shot teacher folder whose embeddings to reuse (else computed and cached)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from lever.data import XCDataset
    from lever.train.predict import save_predictions
    from lever.utils.atomic import atomic_path, write_json_atomic, write_text_atomic

    ds = XCDataset.load(args.data)
    out_json = RESULTS / f"peers_{ds.name}.json"
    done = json.loads(out_json.read_text()) if out_json.exists() else {"runs": {}}
    for name in args.peers:
        print(f"== {name}", flush=True)
        folder = Path(args.out) / name
        raw, raw_info = folder / "top.npz", folder / "info.json"
        if raw.exists() and raw_info.exists():  # trained before: re-score only
            with np.load(raw) as z:
                preds = (z["idx"], z["scores"])
            info = json.loads(raw_info.read_text())
        else:
            preds, info = RUNNERS[name](args, ds)
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(raw, suffix=".npz") as tmp:
                np.savez(tmp, idx=np.asarray(preds[0]), scores=np.asarray(preds[1]))
            write_json_atomic(raw_info, info)
        metrics, pred = score(ds, preds)
        save_predictions(folder / "pred.npz", pred)
        print(" ".join(f"{k} {metrics[k]:.2f}" for k in ("P@1", "P@5", "PSP@5", "C@5")), flush=True)
        done["runs"][name] = {"metrics": metrics, "info": info, "args": vars(args),
                              "meta": {"cpu_count": os.cpu_count(), "machine": platform.machine(),
                                       "loadavg": os.getloadavg()}}
        write_json_atomic(out_json, done)
    text = markdown(ds, done["runs"])
    write_text_atomic(RESULTS / f"peers_{ds.name}.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
