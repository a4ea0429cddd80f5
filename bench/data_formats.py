"""Read/write speed of lever.data's XC formats, and the WordNet dataset build.

Synthetic matrices from fixed seeds:

- ``labels``: ``--rows`` points (default 1M) x 131,073 labels, 0-4 labels a row (mean 2, like
  LF-AmazonTitles-131K's 2.29), values 1.
- ``bow``: 300k points x 40,000 features, 0-60 features a row (mean 30), float values.

Each matrix is written and read as sparse text (``rows cols`` header) and as ``.npz``. The
reference is a plain per-token Python parser (what a straightforward reader does), run on the
same text file. The WordNet row times ``lever data build wordnet`` on the full noun hierarchy.
Every measurement runs in its own subprocess so its peak RSS (VmHWM) is its own.

Writes bench/results/data_formats.json and .md.

    OMP_NUM_THREADS=1 .venv/bin/python bench/data_formats.py
    OMP_NUM_THREADS=1 .venv/bin/python bench/data_formats.py --rows 200000   # quicker
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

RESULTS = Path(__file__).resolve().parent / "results"


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def make_matrix(kind: str, rows: int) -> sp.csr_matrix:
    rng = np.random.default_rng(0 if kind == "labels" else 1)
    cols, per_row = (131_073, 2) if kind == "labels" else (40_000, 30)
    counts = rng.integers(0, 2 * per_row + 1, size=rows)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    m = sp.csr_matrix(
        (rng.random(indptr[-1]).astype(np.float32), rng.integers(0, cols, indptr[-1]), indptr),
        shape=(rows, cols),
    )
    m.sum_duplicates()
    if kind == "labels":
        m.data[:] = 1
    return m


def naive_read(path: Path) -> sp.csr_matrix:
    with open(path, encoding="utf-8") as fh:
        n, d = map(int, fh.readline().split())
        indptr, indices, data = [0], [], []
        for line in fh:
            for tok in line.split():
                i, v = tok.split(":")
                indices.append(int(i))
                data.append(float(v))
            indptr.append(len(indices))
    return sp.csr_matrix((np.asarray(data, np.float32), indices, indptr), shape=(n, d))


def _child(task: str, kind: str, rows: int, workdir: Path) -> dict:
    from lever.data import read_matrix, write_matrix

    txt, npz = workdir / f"{kind}.txt", workdir / f"{kind}.npz"
    if task == "write":
        m = make_matrix(kind, rows)
        out = {}
        for path in (txt, npz):
            t = time.perf_counter()
            write_matrix(path, m)
            out[path.suffix] = time.perf_counter() - t
        return {"nnz": int(m.nnz), "write_txt_s": out[".txt"], "write_npz_s": out[".npz"],
                "txt_mb": txt.stat().st_size / 1e6, "npz_mb": npz.stat().st_size / 1e6}
    if task == "wordnet":
        from lever.data.wordnet import build_wordnet_dataset

        t = time.perf_counter()
        built = build_wordnet_dataset(workdir / "wordnet")
        return {"seconds": time.perf_counter() - t, "parse_s": built.parse_seconds,
                "train": built.num_train, "test": built.num_test, "labels": built.num_labels,
                "peak_rss_mib": _peak_rss_mib()}
    path = npz if task == "read_npz" else txt
    reader = naive_read if task == "read_naive" else read_matrix
    t = time.perf_counter()
    m = reader(path)
    seconds = time.perf_counter() - t
    peak = _peak_rss_mib()  # before the check below allocates its own temporaries
    ref = make_matrix(kind, rows)
    assert (abs(m - ref) > 0).nnz == 0, "read back a different matrix"
    return {"seconds": seconds, "peak_rss_mib": peak}


def _run_child(task: str, kind: str, rows: int, workdir: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", task, kind, str(rows), str(workdir)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows of the label matrix")
    ap.add_argument("--bow-rows", type=int, default=300_000)
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        task, kind, rows, workdir = args.child
        print(json.dumps(_child(task, kind, int(rows), Path(workdir))))
        return

    results = {"machine": platform.platform(), "note": "shared, loaded 2-core machine",
               "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for kind, rows in (("labels", args.rows), ("bow", args.bow_rows)):
            w = _run_child("write", kind, rows, work)
            row = {"matrix": kind, "rows": rows, **w}
            for task in ("read_txt", "read_npz", "read_naive"):
                r = _run_child(task, kind, rows, work)
                row[f"{task}_s"] = r["seconds"]
                row[f"{task}_peak_rss_mib"] = r["peak_rss_mib"]
            results["runs"].append(row)
            print(json.dumps(row))
        results["wordnet"] = _run_child("wordnet", "-", 0, work)
        print(json.dumps(results["wordnet"]))

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "data_formats.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# XC data formats: read/write speed",
        "",
        ("Synthetic matrices from fixed seeds; each timing in its own process. "
        "Shared, loaded 2-core machine."),
        "",
        ("| matrix | rows | nnz | text MB | write text (s) | read text (s) | read text, naive "
        "per-token Python (s) | write npz (s) | read npz (s) | peak RSS read text (MiB) |"),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        lines.append(
            f"| {r['matrix']} | {r['rows']:,} | {r['nnz']:,} | {r['txt_mb']:.0f} | "
            f"{r['write_txt_s']:.2f} | {r['read_txt_s']:.2f} | {r['read_naive_s']:.2f} | "
            f"{r['write_npz_s']:.2f} | {r['read_npz_s']:.2f} | {r['read_txt_peak_rss_mib']:.0f} |"
        )
    wn = results["wordnet"]
    lines += [
        "",
        (f"`lever data build wordnet` (full WordNet 3.0 nouns): {wn['seconds']:.1f} s total, "
        f"data.noun parse {wn['parse_s']:.1f} s, peak RSS {wn['peak_rss_mib']:.0f} MiB; "
        f"{wn['train']:,} train / {wn['test']:,} test documents, {wn['labels']:,} labels."),
    ]
    (RESULTS / "data_formats.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
