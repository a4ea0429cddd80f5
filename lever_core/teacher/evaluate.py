"""Teacher evaluation: exact kNN of documents over label embeddings, then the XC metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

REPORTED = (
    "P@1", "P@3", "P@5", "nDCG@5", "PSP@1", "PSP@3", "PSP@5", "C@1", "C@3", "C@5", "R@10", "R@100"
)


def exact_knn(
    queries: np.ndarray,
    keys: np.ndarray,
    k: int,
    filter: sp.spmatrix | None = None,
    chunk: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k keys by inner product for every query (chunked matmul, exact). Filtered pairs
    (non-zeros of ``filter``, queries × keys) are removed before the top-k is taken."""
    k = min(k, keys.shape[0])
    kt = torch.from_numpy(
        np.array(keys, dtype=np.float32)
    )  # a writable copy (keys may be a memmap)
    filt = sp.csr_matrix(filter) if filter is not None else None
    idx = np.empty((queries.shape[0], k), dtype=np.int64)
    val = np.empty((queries.shape[0], k), dtype=np.float32)
    for s in range(0, queries.shape[0], chunk):
        q = torch.from_numpy(np.array(queries[s : s + chunk], dtype=np.float32))
        scores = q @ kt.T
        if filt is not None:
            block = filt[s : s + chunk]
            rows = np.repeat(np.arange(block.shape[0]), np.diff(block.indptr))
            scores[torch.from_numpy(rows), torch.from_numpy(block.indices.astype(np.int64))] = (
                float("-inf")
            )
        v, i = scores.topk(k, dim=1)
        idx[s : s + len(q)], val[s : s + len(q)] = i.numpy(), v.numpy()
    idx[~np.isfinite(val)] = -1  # fewer than k unfiltered keys: padding, as lever.metrics expects
    return idx, val


def evaluate_embeddings(
    doc_emb: np.ndarray,
    lbl_emb: np.ndarray,
    Y: sp.spmatrix,
    inv_prop: np.ndarray,
    filter: sp.spmatrix | None = None,
    k: int = 100,
) -> dict[str, float]:
    """P/nDCG/PSP/C@1..5 and R@10/R@k (percent) of cosine retrieval of labels for documents."""
    from lever.metrics import evaluate

    idx, val = exact_knn(doc_emb, lbl_emb, k, filter=filter)
    full = evaluate(Y, (idx, val), inv_prop, k=k)
    return {key: float(full[key]) for key in REPORTED if key in full} | {
        f"R@{k}": float(full[f"R@{k}"])
    }


def dataset_inverse_propensity(
    dataset, a: float | None = None, b: float | None = None
) -> np.ndarray:
    """Inverse propensities of the dataset's train labels; A/B from lever_meta.json unless given."""
    from lever.metrics import inverse_propensity

    a = dataset.meta.propensity_a if a is None else a
    b = dataset.meta.propensity_b if b is None else b
    return inverse_propensity(dataset.trn_Y, a, b)


def evaluate_zero_shot(
    dataset,
    encoder: str | None = None,
    max_len: int = 32,
    k: int = 100,
    batch_size: int = 256,
    progress: bool = True,
) -> dict[str, float]:
    """Metrics of the untrained encoder, embedded exactly as a trained teacher would be."""
    from lever.teacher.model import embed, load_teacher_encoder

    model = load_teacher_encoder(encoder, max_len)
    lbl = embed(model, dataset.lbl_texts, batch_size, show_progress=progress)
    tst = embed(model, dataset.tst_texts, batch_size, show_progress=progress)
    return evaluate_embeddings(
        tst, lbl, dataset.tst_Y, dataset_inverse_propensity(dataset), dataset.tst_filter, k=k
    )


def teacher_test_topk(dataset, teacher: str | Path, k: int = 5, progress: bool = True):
    """The teacher alone on the test split: ``(indices, scores) [N_test, k]`` of exact cosine kNN
    over its label embeddings, the test filter applied; any teacher folder (zero-shot included)."""
    from lever.teacher.folder import TeacherFolder

    emb = TeacherFolder.read(teacher).embeddings(dataset, ("lbl", "tst"), progress=progress)
    return exact_knn(np.asarray(emb["tst"]), np.asarray(emb["lbl"]), k, filter=dataset.tst_filter)


def evaluate_teacher_folder(
    dataset, teacher: str | Path, progress: bool = True
) -> dict[str, float]:
    """Metrics of a teacher folder of any kind (lever.teacher.folder): its exported embeddings when
    they match the dataset, else embeddings recomputed from its model."""
    from lever.teacher.folder import TeacherFolder

    folder = TeacherFolder.read(teacher)
    emb = folder.embeddings(dataset, ("lbl", "tst"), progress=progress)
    p = folder.params
    a, b = (p.propensity_a, p.propensity_b) if p is not None else (None, None)
    inv = dataset_inverse_propensity(dataset, a, b)
    k = p.eval_k if p is not None else 100
    return evaluate_embeddings(
        np.asarray(emb["tst"]), np.asarray(emb["lbl"]), dataset.tst_Y, inv, dataset.tst_filter, k=k
    )
