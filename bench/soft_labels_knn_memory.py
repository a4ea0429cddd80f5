"""Benchmark: memory of chunked exact kNN at the scale of LF-AmazonTitles-1.3M (1.3M labels, 384-d).

A 1.3M × 384 float32 database (2 GB, random unit vectors) is written to a memmapped ``.npy`` and
queried with ``lever.soft_labels.knn.knn(index="exact")`` for ``k`` = 15 (τ_l of that dataset) by a
sample of its own rows, in a child process. Reported: wall time, peak resident memory
(``ru_maxrss``, which also counts the file pages of the memmap that were touched) and the peak of
anonymous memory (``RssAnon``, sampled every 20 ms: what the search itself allocates), for the
default chunk sizes and a small-chunk setting. Query count is kept small so that it runs on a laptop;
memory does not depend on it beyond the num_queries × k answer.

Usage: .venv/bin/python bench/soft_labels_knn_memory.py [--rows 1300000] [--queries 2000]
Writes bench/results/soft_labels_knn_memory.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def rss_anon_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    return 0


def worker(args) -> None:
    import faiss  # noqa: F401

    from lever.soft_labels.knn import knn

    db = np.load(args.db, mmap_mode="r")
    rng = np.random.default_rng(0)
    q_ids = np.sort(rng.choice(db.shape[0], size=args.queries, replace=False))
    queries = np.ascontiguousarray(db[q_ids])
    peak = [rss_anon_kib()]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_anon_kib())
            time.sleep(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    t0 = time.perf_counter()
    _scores, ids = knn(queries, db, args.k, query_chunk=args.query_chunk, db_chunk=args.db_chunk)
    work = time.perf_counter() - t0
    stop.set()
    t.join()
    # each query is a database row: its best match is itself (a correctness check at scale)
    self_hit = float(np.mean(ids[:, 0] == q_ids))
    Path(args.out).write_text(json.dumps({"work_s": work, "peak_anon_mib": peak[0] / 1024, "self_hit": self_hit}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_300_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--k", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--db", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--query-chunk", type=int, default=16384, help=argparse.SUPPRESS)
    ap.add_argument("--db-chunk", type=int, default=262144, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return 0

    from lever.utils.atomic import write_json_atomic, write_text_atomic

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    rows = []
    with tempfile.TemporaryDirectory(prefix="knn_mem_", dir=ROOT / "runs" if (ROOT / "runs").exists() else None) as tmp:
        db_path = Path(tmp) / "db.npy"
        db = np.lib.format.open_memmap(db_path, mode="w+", dtype=np.float32, shape=(args.rows, args.dim))
        rng = np.random.default_rng(0)
        for s in range(0, args.rows, 100_000):
            x = rng.standard_normal((min(100_000, args.rows - s), args.dim), dtype=np.float32)
            db[s : s + x.shape[0]] = x / np.linalg.norm(x, axis=1, keepdims=True)
        db.flush()
        del db
        for q_chunk, db_chunk in ((16384, 262144), (1024, 65536)):
            out = Path(tmp) / f"r_{q_chunk}_{db_chunk}.json"
            cmd = [sys.executable, __file__, "--worker", "--db", str(db_path), "--out", str(out),
                   "--queries", str(args.queries), "--k", str(args.k),
                   "--query-chunk", str(q_chunk), "--db-chunk", str(db_chunk)]
            print(f"exact kNN, query_chunk={q_chunk}, db_chunk={db_chunk}", flush=True)
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, env=env)
            _, status, usage = os.wait4(proc.pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                raise RuntimeError("worker failed")
            rows.append({"query_chunk": q_chunk, "db_chunk": db_chunk, "wall_s": time.perf_counter() - t0,
                         "peak_rss_mib": usage.ru_maxrss / 1024, **json.loads(out.read_text())})
    res = {
        "benchmark": "soft_labels_knn_memory",
        "database": f"{args.rows} x {args.dim} float32 memmap ({args.rows * args.dim * 4 / 2**30:.2f} GiB)",
        "queries": args.queries,
        "k": args.k,
        "threads": args.threads,
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "note": "shared, loaded machine; peak RSS includes touched memmap file pages",
        "rows": rows,
    }
    lines = [
        f"# Exact kNN memory at scale: {res['database']}, {args.queries} queries, k={args.k}",
        "",
        f"{res['date']}, {args.threads} threads, {res['note']}.",
        "",
        "| query chunk | db chunk | wall s | work s | peak RSS MiB | peak anonymous MiB | self found first |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['query_chunk']} | {r['db_chunk']} | {r['wall_s']:.1f} | {r['work_s']:.1f} | "
                     f"{r['peak_rss_mib']:.0f} | {r['peak_anon_mib']:.0f} | {r['self_hit']:.4f} |")
    out_dir = Path(args.out_dir)
    write_json_atomic(out_dir / "soft_labels_knn_memory.json", res)
    write_text_atomic(out_dir / "soft_labels_knn_memory.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
