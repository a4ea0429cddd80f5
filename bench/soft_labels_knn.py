"""Benchmark: soft-label construction, ours (faiss) against the released LEVER pipeline's kNN step.

Both sides start from the same teacher embeddings of one dataset (WordNet by default):

* **official**: hnswlib, space "ip", M=100, efConstruction=300, efSearch=500; one index over the
  training documents and one over the labels, each queried with every label for 100 neighbours
  (``bench/hnswlib_reference.py``, run in its own venv ``bench/.venv-ref`` because hnswlib only
  ships an sdist and must be compiled; our environment never gets it).
* **ours**: ``lever.soft_labels.build_soft_labels`` (ground-truth scoring, τ_l label neighbours,
  τ_d top-ups; linear calibration, so no fitting) with each index kind; plus ``ours k=100``, the
  same 100-neighbour work as the official script done by exact faiss search, which is also the
  ground truth for recall.

Reported per method: wall time of the child process, time of the work itself (embeddings loaded),
peak resident memory (``ru_maxrss`` of the child), and recall against exact search:
``entry recall`` = share of the soft-label entries an exact build adds (label→label neighbours and
label→document top-ups) that the method adds too; ``recall@τ_l`` / ``recall@100`` = share of the
exact label→label (and label→document) neighbour lists found (self included).

Usage: .venv/bin/python bench/soft_labels_knn.py [--data runs/wordnet] [--teacher auto] [--threads 2]
Writes bench/results/soft_labels_knn.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REF_VENV = ROOT / "bench" / ".venv-ref"
REF_SCRIPT = ROOT / "bench" / "hnswlib_reference.py"
K_OFFICIAL = 100


def ensure_reference_venv() -> Path:
    """bench/.venv-ref with numpy + hnswlib (compiled from its sdist with g++ on first use)."""
    py = REF_VENV / "bin" / "python"
    if py.exists() and subprocess.run([py, "-c", "import hnswlib"], check=False, capture_output=True).returncode == 0:
        return py
    print(f"creating {REF_VENV} (numpy + hnswlib, compiles hnswlib once)", flush=True)
    base = getattr(sys, "_base_executable", None) or "python3"
    subprocess.run([base, "-m", "venv", str(REF_VENV)], check=True)
    subprocess.run([py, "-m", "pip", "install", "-q", "numpy", "hnswlib"], check=True)
    return py


def run_measured(cmd: list[str], env: dict[str, str]) -> dict:
    """Run a child process; wall time and its peak RSS (ru_maxrss, KiB on Linux)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(c) for c in cmd], env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"benchmark child failed ({os.waitstatus_to_exitcode(status)}): {' '.join(map(str, cmd))}")
    return {"wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024}


def resolve_teacher(arg: str, data: Path) -> tuple[Path, str]:
    if arg != "auto":
        from lever.soft_labels.teacher_embeddings import teacher_config

        cfg = teacher_config(arg)
        kind = cfg.get("kind") or ("trained" if "loss" in cfg else "unknown")
        encoder = str(cfg.get("encoder", "?"))
        encoder = "all-MiniLM-L6-v2" if "minilm" in encoder.lower() else encoder
        return Path(arg), f"{kind} teacher from {encoder}, max_len {cfg.get('max_len', '?')}"
    trained = ROOT / "runs" / "teacher_wordnet"
    if all((trained / "embeddings" / f"{s}.npy").exists() for s in ("trn", "lbl")):
        return trained, "trained (runs/teacher_wordnet)"
    zs = ROOT / "runs" / "soft_wordnet_zeroshot.teacher"
    if not all((zs / "embeddings" / f"{s}.npy").exists() for s in ("trn", "lbl")):
        from lever.data import XCDataset
        from lever.soft_labels.teacher_embeddings import write_zero_shot_teacher

        write_zero_shot_teacher(XCDataset.load(data), zs)
    return zs, "zero-shot MiniLM (untrained all-MiniLM-L6-v2)"


# -- workers (run as child processes so that time and peak memory are theirs alone) -------------


def worker_ours(args) -> None:
    import faiss  # noqa: F401  (imported before the clock starts, as hnswlib is on the other side)
    import scipy.sparse as sp

    from lever.data import XCDataset
    from lever.soft_labels.build import SoftLabelParams, build_soft_labels
    from lever.soft_labels.calibration import Calibrator
    from lever.soft_labels.teacher_embeddings import load_teacher_embeddings

    ds = XCDataset.load(args.data)
    emb = load_teacher_embeddings(args.teacher, {"trn": ds.num_train, "lbl": ds.num_labels})
    t0 = time.perf_counter()
    params = SoftLabelParams(tau_l=args.tau_l, tau_d=args.tau_d, index=args.index, threshold=args.threshold)
    soft, report = build_soft_labels(ds.trn_Y, emb["trn"], emb["lbl"], params, calibrator=Calibrator("linear"))
    work = time.perf_counter() - t0
    sp.save_npz(args.worker_out, soft.csr)
    Path(args.worker_out + ".json").write_text(json.dumps({"work_s": work, "timings": report["timings"]}))


def worker_exact100(args) -> None:
    import faiss  # noqa: F401

    from lever.data import XCDataset
    from lever.soft_labels.knn import knn
    from lever.soft_labels.teacher_embeddings import load_teacher_embeddings

    ds = XCDataset.load(args.data)
    emb = load_teacher_embeddings(args.teacher, {"trn": ds.num_train, "lbl": ds.num_labels})
    t0 = time.perf_counter()
    lbl = np.ascontiguousarray(emb["lbl"])
    doc_s, doc_i = knn(lbl, emb["trn"], K_OFFICIAL)
    lbl_s, lbl_i = knn(lbl, lbl, K_OFFICIAL)
    work = time.perf_counter() - t0
    np.savez(args.worker_out, doc_scores=doc_s, doc_ids=doc_i, lbl_scores=lbl_s, lbl_ids=lbl_i)
    Path(args.worker_out + ".json").write_text(json.dumps({"work_s": work}))


# -- recall -------------------------------------------------------------------------------------


def added_entries(csr, trn_Y) -> set[tuple[int, int]]:
    """(row, label) pairs a build added on top of ground truth and label self entries."""
    import scipy.sparse as sp

    _n, L = trn_Y.shape
    gt = sp.vstack([trn_Y, sp.identity(L, format="csr", dtype=np.float32)], format="csr")
    gt.data[:] = 1
    pattern = csr.copy()
    pattern.data[:] = 1
    added = (pattern - pattern.multiply(gt)).tocoo()
    added.eliminate_zeros()
    return set(zip(added.row.tolist(), added.col.tolist()))


def entries_from_lists(lbl_s, lbl_i, doc_s, doc_i, trn_Y, tau_l, tau_d, threshold) -> set[tuple[int, int]]:
    """The build's selection rules applied to given (possibly approximate) neighbour lists."""
    from lever.soft_labels.build import select_doc_topups, select_label_neighbours
    from lever.soft_labels.calibration import Calibrator

    cal = Calibrator("linear")
    n, L = trn_Y.shape
    out: set[tuple[int, int]] = set()
    if tau_l > 1:
        r, c, _ = select_label_neighbours(np.arange(L), lbl_i[:, :tau_l], cal(lbl_s[:, :tau_l]), tau_l, threshold)
        out |= set(zip((n + r).tolist(), c.tolist()))
    if tau_d > 0:
        freq = np.diff(trn_Y.tocsc().indptr)
        tail = np.flatnonzero(freq < tau_d)
        coo = trn_Y.tocoo()
        keys = np.sort(coo.row.astype(np.int64) * L + coo.col)
        d, lab, _ = select_doc_topups(
            tail, tau_d - freq[tail], doc_i[tail, :tau_d], cal(doc_s[tail, :tau_d]), keys, L, threshold
        )
        out |= set(zip(d.tolist(), lab.tolist()))
    return out


def neighbour_recall(approx_ids, exact_ids, k) -> float:
    from lever.soft_labels.knn import recall_at_k

    return recall_at_k(approx_ids[:, :k], exact_ids[:, :k])


# -- main ---------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / "runs" / "wordnet"))
    ap.add_argument("--teacher", default="auto", help="teacher folder, or auto: runs/teacher_wordnet, else zero-shot")
    ap.add_argument("--configs", default="4:0,4:15", help="τ_l:τ_d pairs to build, comma separated")
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--indexes", default="exact,hnsw,ivf", help="our index kinds to run")
    ap.add_argument("--skip-reference", action="store_true", help="do not run the hnswlib reference")
    ap.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--worker", choices=("ours", "exact100"), help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    ap.add_argument("--index", default="exact", help=argparse.SUPPRESS)
    ap.add_argument("--tau-l", type=int, default=4, help=argparse.SUPPRESS)
    ap.add_argument("--tau-d", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker == "ours":
        worker_ours(args)
        return 0
    if args.worker == "exact100":
        worker_exact100(args)
        return 0

    from lever.data import XCDataset

    data = Path(args.data)
    ds = XCDataset.load(data)
    teacher, teacher_kind = resolve_teacher(args.teacher, data)
    trn_path, lbl_path = teacher / "embeddings" / "trn.npy", teacher / "embeddings" / "lbl.npy"
    dim = int(np.load(lbl_path, mmap_mode="r").shape[1])
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               OPENBLAS_NUM_THREADS=str(args.threads), PYTHONUNBUFFERED="1")
    configs = [tuple(int(x) for x in c.split(":")) for c in args.configs.split(",")]
    me = [sys.executable, __file__, "--data", str(data), "--teacher", str(teacher), "--threshold", str(args.threshold)]
    rows: list[dict] = []
    header = {
        "benchmark": "soft_labels_knn",
        "dataset": ds.name,
        "data": str(data),
        "num_train": ds.num_train,
        "num_labels": ds.num_labels,
        "dim": dim,
        "teacher": str(teacher),
        "teacher_kind": teacher_kind,
        "threshold": args.threshold,
        "threads": args.threads,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; shared with other jobs",
    }
    out_dir = Path(args.out_dir)

    def write_results(final: bool) -> None:
        # rewritten after every measured row, so an interrupted run still leaves its numbers
        from lever.utils.atomic import write_json_atomic, write_text_atomic

        official = {r["config"]: r for r in rows if r["method"].startswith("official")}
        for r in rows:
            ref = official.get(r["config"]) or next(iter(official.values()), None)
            if ref and not r["method"].startswith("official"):
                r["speedup_wall_vs_official"] = ref["wall_s"] / r["wall_s"]
                r["speedup_work_vs_official"] = ref["work_s"] / r["work_s"]
        result = {**header, "complete": final, "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                  "rows": rows}
        write_json_atomic(out_dir / "soft_labels_knn.json", result)
        write_text_atomic(out_dir / "soft_labels_knn.md", to_markdown(result))
        if final:
            print(to_markdown(result))

    import scipy.sparse as sp

    with tempfile.TemporaryDirectory(prefix="bench_soft_") as tmp:
        tmp = Path(tmp)
        print("ours, exact k=100 (also the recall ground truth)", flush=True)
        m = run_measured([*me, "--worker", "exact100", "--worker-out", tmp / "exact100.npz"], env)
        m.update(json.loads((tmp / "exact100.npz.json").read_text()))
        exact = dict(np.load(tmp / "exact100.npz"))
        rows.append({"method": "ours exact, k=100 on both (official's work)", "config": "k=100", **m,
                     "recall@100_labels": 1.0, "recall@100_docs": 1.0})
        write_results(final=False)
        exact_entries = {
            (tl, td): entries_from_lists(exact["lbl_scores"], exact["lbl_ids"], exact["doc_scores"],
                                         exact["doc_ids"], ds.trn_Y, tl, td, args.threshold)
            for tl, td in configs
        }
        if not args.skip_reference:
            py = ensure_reference_venv()
            print("official method: hnswlib M=100 efC=300 efS=500, k=100 on both", flush=True)
            m = run_measured([py, REF_SCRIPT, trn_path, lbl_path, tmp / "ref.npz", args.threads], env)
            ref = dict(np.load(tmp / "ref.npz"))
            t = ref["timings"]
            m.update(work_s=float(t[5]), doc_build_s=float(t[1]), doc_query_s=float(t[2]),
                     lbl_build_s=float(t[3]), lbl_query_s=float(t[4]))
            base = {"method": "official (hnswlib)", **m,
                    "recall@100_labels": neighbour_recall(ref["lbl_ids"], exact["lbl_ids"], K_OFFICIAL),
                    "recall@100_docs": neighbour_recall(ref["doc_ids"], exact["doc_ids"], K_OFFICIAL)}
            for tl, td in configs:
                got = entries_from_lists(ref["lbl_scores"], ref["lbl_ids"], ref["doc_scores"], ref["doc_ids"],
                                         ds.trn_Y, tl, td, args.threshold)
                want = exact_entries[(tl, td)]
                rows.append({**base, "config": f"tau_l={tl}, tau_d={td}",
                             f"recall@{tl}_labels": neighbour_recall(ref["lbl_ids"], exact["lbl_ids"], tl),
                             "entry_recall": len(got & want) / max(len(want), 1), "entries": len(got)})
                write_results(final=False)
        runs = [(index, tl, td) for index in args.indexes.split(",") for tl, td in configs]
        for index, tl, td in runs:
            print(f"ours, index={index}, tau_l={tl}, tau_d={td}", flush=True)
            out = tmp / f"ours_{index}_{tl}_{td}.npz"
            m = run_measured([*me, "--worker", "ours", "--index", index, "--tau-l", tl, "--tau-d", td,
                              "--worker-out", out], env)
            m.update(json.loads(Path(str(out) + ".json").read_text()))
            got = added_entries(sp.load_npz(out), ds.trn_Y)
            want = exact_entries[(tl, td)]
            rows.append({"method": f"ours ({index})", "config": f"tau_l={tl}, tau_d={td}", **m,
                         "entry_recall": len(got & want) / max(len(want), 1), "entries": len(got)})
            write_results(final=False)
    write_results(final=True)
    return 0


def to_markdown(res: dict) -> str:
    def f(v, fmt):
        return "–" if v is None else format(v, fmt)

    lines = [
        f"# Soft-label construction: ours vs the official pipeline ({res['dataset']})",
        "",
        (f"{res['num_train']} training documents, {res['num_labels']} labels, {res['dim']}-d teacher "
        f"embeddings ({res['teacher_kind']}); {res['threads']} threads each; threshold {res['threshold']} "
        f"on (1+cos)/2. {res['machine']}, {res['date']}: timings from a shared, loaded machine."),
        "",
        ("| method | config | wall s | work s | peak RSS MiB | added entries | entry recall | "
        "recall@τ_l (labels) | recall@100 labels / docs | speed-up (wall / work) |"),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        tl = next((k for k in r if k.startswith("recall@") and k.endswith("_labels") and "100" not in k), None)
        r100 = (f"{f(r.get('recall@100_labels'), '.4f')} / {f(r.get('recall@100_docs'), '.4f')}"
                if "recall@100_labels" in r else "–")
        sp_ = (f"{f(r.get('speedup_wall_vs_official'), '.1f')}× / {f(r.get('speedup_work_vs_official'), '.1f')}×"
               if "speedup_wall_vs_official" in r else "–")
        lines.append(
            f"| {r['method']} | {r['config']} | {r['wall_s']:.1f} | {f(r.get('work_s'), '.1f')} | "
            f"{r['peak_rss_mib']:.0f} | {r.get('entries', '–')} | {f(r.get('entry_recall'), '.4f')} | {f(r.get(tl) if tl else None, '.4f')} "
            f"| {r100} | {sp_} |"
        )
    lines += [
        "",
        ("entry recall: share of the entries an exact build adds (label→label neighbours, label→document "
        "top-ups) that the method adds too. The official script always does 100-NN searches on both "
        "indexes; ours searches only what τ_l and τ_d need (k = τ_l labels; k = τ_d documents for "
        "labels with fewer than τ_d documents). `ours exact, k=100` does the official amount of work."),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
