"""The released LEVER pipeline's kNN step, for comparison (runs in bench/.venv-ref: numpy + hnswlib).

What `create_teacher_distilled_dataset.py` does (ecosystem notes §1.6, re-implemented here from
that description, not copied): two hnswlib indexes with space "ip", M=100, efConstruction=300,
efSearch=500 (one over the training documents, one over the labels), each queried with every
label embedding for 100 neighbours. Scores are returned as cosines (hnswlib gives 1 − ⟨u, v⟩).

Usage: python hnswlib_reference.py TRN.npy LBL.npy OUT.npz THREADS
Writes label→label and label→document (scores, ids) and the timings to OUT.npz.
"""

from __future__ import annotations

import sys
import time

import hnswlib
import numpy as np

M, EF_CONSTRUCTION, EF_SEARCH, K = 100, 300, 500, 100


def index_and_query(database: np.ndarray, queries: np.ndarray, threads: int):
    t0 = time.perf_counter()
    index = hnswlib.Index(space="ip", dim=database.shape[1])
    index.init_index(max_elements=database.shape[0], ef_construction=EF_CONSTRUCTION, M=M, random_seed=100)
    index.add_items(database, np.arange(database.shape[0]), num_threads=threads)
    built = time.perf_counter()
    index.set_ef(EF_SEARCH)
    ids, dist = index.knn_query(queries, k=min(K, database.shape[0]), num_threads=threads)
    done = time.perf_counter()
    return (1.0 - dist).astype(np.float32), ids.astype(np.int64), built - t0, done - built


def main() -> None:
    trn_path, lbl_path, out_path, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    t0 = time.perf_counter()
    trn = np.ascontiguousarray(np.load(trn_path), dtype=np.float32)
    lbl = np.ascontiguousarray(np.load(lbl_path), dtype=np.float32)
    t_load = time.perf_counter() - t0
    t1 = time.perf_counter()
    doc_s, doc_i, doc_build, doc_query = index_and_query(trn, lbl, threads)
    lbl_s, lbl_i, lbl_build, lbl_query = index_and_query(lbl, lbl, threads)
    work = time.perf_counter() - t1
    np.savez(
        out_path,
        doc_scores=doc_s,
        doc_ids=doc_i,
        lbl_scores=lbl_s,
        lbl_ids=lbl_i,
        timings=np.array([t_load, doc_build, doc_query, lbl_build, lbl_query, work]),
    )


if __name__ == "__main__":
    main()
