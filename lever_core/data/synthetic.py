"""A small deterministic synthetic XC dataset with readable texts.

Used by tests, quick demos and benchmarks that need a dataset in seconds. Labels are topics with a
few keywords; a document draws 1-4 labels from a skewed (Zipf-like) distribution and is written
from its labels' keywords plus filler, so a real sentence encoder can find its labels. A few test
documents *are* labels (their text is the label text); those (document, label) pairs go in the
test filter, as reciprocal pairs do in the LF-* datasets.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from lever.data.dataset import DatasetMeta

TOPICS = [
    ("jazz music", "saxophone", "trumpet", "improvisation"),
    ("italian cooking", "pasta", "olive oil", "tomato sauce"),
    ("mountain hiking", "trail", "summit", "backpack"),
    ("astronomy", "telescope", "galaxy", "planet"),
    ("gardening", "soil", "seeds", "watering can"),
    ("football", "goal", "referee", "stadium"),
    ("chess", "bishop", "checkmate", "opening"),
    ("photography", "camera", "lens", "exposure"),
    ("baking bread", "flour", "yeast", "oven"),
    ("sailing", "boat", "wind", "harbor"),
    ("computer programming", "python", "compiler", "algorithm"),
    ("ancient rome", "emperor", "legion", "colosseum"),
    ("birds", "feathers", "nest", "migration"),
    ("coffee", "espresso", "roast", "beans"),
    ("painting", "canvas", "brush", "watercolor"),
    ("cycling", "bicycle", "pedal", "helmet"),
    ("volcanoes", "lava", "eruption", "magma"),
    ("medicine", "doctor", "vaccine", "hospital"),
    ("railways", "train", "station", "locomotive"),
    ("poetry", "verse", "rhyme", "sonnet"),
    ("tea", "green tea", "teapot", "leaves"),
    ("skiing", "snow", "slope", "ski lift"),
    ("dinosaurs", "fossil", "tyrannosaurus", "extinction"),
    ("cats", "kitten", "whiskers", "purring"),
    ("dogs", "puppy", "leash", "barking"),
    ("oceans", "waves", "coral reef", "tide"),
    ("film making", "director", "script", "camera crew"),
    ("electric cars", "battery", "charging", "motor"),
    ("cheese", "cheddar", "dairy", "aging"),
    ("knitting", "yarn", "needles", "sweater"),
    ("robots", "sensor", "actuator", "automation"),
    ("wine", "grapes", "vineyard", "cellar"),
    ("tennis", "racket", "serve", "court"),
    ("architecture", "building", "facade", "arch"),
    ("mathematics", "theorem", "proof", "equation"),
    ("insects", "beetle", "ants", "wings"),
    ("weather", "rain", "clouds", "forecast"),
    ("opera", "soprano", "aria", "orchestra"),
    ("cooking rice", "risotto", "sushi", "steamer"),
    ("bridges", "suspension", "cable", "river crossing"),
]
FILLER = ["a guide to", "notes on", "everything about", "a short story of", "questions about",
          "the history of", "tips for", "an introduction to", "my favourite", "a review of"]


def synthetic_dataset(
    num_train: int = 200,
    num_test: int = 60,
    num_labels: int = 40,
    *,
    seed: int = 0,
    num_reciprocal: int = 6,
) -> dict:
    """Keyword arguments for :func:`lever.data.write_dataset` describing a synthetic dataset."""
    if not 1 <= num_labels <= len(TOPICS):
        raise ValueError(f"num_labels must be in [1, {len(TOPICS)}], got {num_labels}")
    if num_reciprocal > min(num_test, num_labels):
        raise ValueError("num_reciprocal must not exceed num_test or num_labels")
    rng = np.random.default_rng(seed)
    topics = TOPICS[:num_labels]
    lbl_texts = [f"{t[0]}: {', '.join(t[1:])}" for t in topics]
    # Zipf-like popularity so a few labels are head and most are tail.
    popularity = 1.0 / np.arange(1, num_labels + 1) ** 1.1
    popularity /= popularity.sum()

    def make_doc() -> tuple[str, list[int]]:
        k = int(rng.integers(1, 5))
        labels = sorted(set(rng.choice(num_labels, size=k, p=popularity).tolist()))
        words = []
        for lab in labels:
            kws = topics[lab]
            words.append(kws[0])
            words.extend(rng.choice(kws[1:], size=2, replace=False).tolist())
        order = rng.permutation(len(words))
        text = f"{FILLER[int(rng.integers(len(FILLER)))]} " + " ".join(words[i] for i in order)
        return text, labels

    def split(n: int) -> tuple[list[str], sp.csr_matrix]:
        texts, rows, cols = [], [], []
        for i in range(n):
            text, labels = make_doc()
            texts.append(text)
            rows.extend([i] * len(labels))
            cols.extend(labels)
        Y = sp.csr_matrix(
            (np.ones(len(rows), np.float32), (rows, cols)), shape=(n, num_labels)
        )
        return texts, Y

    trn_texts, trn_Y = split(num_train)
    tst_texts, tst_Y = split(num_test)
    # Reciprocal pairs: these test documents are labels; their own label is filtered, not truth.
    docs = rng.choice(num_test, size=num_reciprocal, replace=False)
    labs = rng.choice(num_labels, size=num_reciprocal, replace=False)
    tst_Y = tst_Y.tolil()
    for d, lab in zip(docs.tolist(), labs.tolist()):
        tst_texts[d] = lbl_texts[lab]
        tst_Y[d, lab] = 0
        if tst_Y[d].nnz == 0:  # keep one related label so the row is not empty
            tst_Y[d, (lab + 1) % num_labels] = 1
    tst_Y = tst_Y.tocsr()
    tst_Y.eliminate_zeros()
    tst_filter = sp.csr_matrix(
        (np.ones(num_reciprocal, np.float32), (docs, labs)), shape=(num_test, num_labels)
    )
    meta = DatasetMeta(
        name="tiny-synthetic",
        source="lever.data.synthetic",
        extra={"seed": seed, "num_train": num_train, "num_test": num_test},
    )
    return {
        "trn_texts": trn_texts,
        "tst_texts": tst_texts,
        "lbl_texts": lbl_texts,
        "trn_Y": trn_Y,
        "tst_Y": tst_Y,
        "tst_filter": tst_filter,
        "meta": meta,
    }
