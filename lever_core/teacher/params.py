"""Typed settings of the Siamese teacher, with the paper's per-dataset settings as named presets."""

from __future__ import annotations

import dataclasses

from lever.utils.params import Params, ParamsError

LOSSES = ("pairwise-logistic", "triplet", "softplus-hinge", "softmax")
BATCH_TYPES = ("label", "doc", "pair")
# finetune: the sentence encoder itself is trained (the GPU path). frozen: a small Siamese tower
# over cached frozen-encoder embeddings is trained (the CPU path, lever.teacher.frozen).
KINDS = ("finetune", "frozen")


@dataclasses.dataclass
class TeacherParams(Params):
    """Everything a teacher run depends on; saved as ``T/config.json``."""

    # The dataclass default stays "finetune" so configs written before `kind` existed still load
    # as what they are; `lever teacher train` picks frozen on CPU (see lever.teacher.cli).
    kind: str = "finetune"
    encoder: str = (
        "all-MiniLM-L6-v2"  # packaged default, or a local sentence-transformers/HF folder
    )
    max_len: int = 32  # tokens per text, as LEVER; batches are clipped to their longest text
    # The CPU default: one label-side epoch (~16k pairs on WordNet) with the embeddings and the
    # bottom 4 of MiniLM's 6 layers frozen, which roughly halves the cost of a training step.
    epochs: int = 1
    freeze_layers: int = 4  # token embeddings + this many bottom transformer layers stay fixed
    batch_size: int = 128
    lr: float = 1e-4
    weight_decay: float = 0.01
    adam_eps: float = 1e-6
    warmup_steps: int = 20
    grad_clip: float = 1.0  # max gradient norm; 0 disables clipping
    loss: str = "pairwise-logistic"  # pairwise-logistic (paper Eq. 9) | triplet | softplus-hinge
    margin: float = 0.3  # Δ of Eq. 9 / the hinge margin
    num_negatives: int = 10  # k hardest in-batch negatives per row
    batch_type: str = "label"  # label: (label, one of its documents); doc: (document, one label)
    cl_size: int = 8  # cluster size of negative-mining-aware batches
    cl_start: int = 1  # first epoch (0-based) with clustered batches; earlier epochs are random
    cl_update: int = 1  # re-cluster the stale embeddings every this many epochs
    curr_steps: list[int] = dataclasses.field(
        default_factory=list
    )  # cl_size doubles at these epochs
    # Evaluate on the test split every n epochs; 0 = only at the end, which the CPU default uses
    # because one evaluation embeds all labels and test documents (minutes on 2 cores).
    eval_every: int = 0
    checkpoint_every: int = 1  # checkpoint every n epochs
    keep_checkpoints: int = 1  # how many epoch checkpoints to keep on disk
    eval_k: int = 100  # neighbours retrieved for evaluation (recall@eval_k)
    embed_batch_size: int = 256
    propensity_a: float | None = None  # None: the dataset's lever_meta.json values
    propensity_b: float | None = None
    # Frozen-feature tower (kind "frozen"): x + W2·gelu(W1·x), then L2-normalised; W2 starts at
    # zero so the untrained tower is the frozen encoder itself (the zero-shot teacher).
    hidden: int = 1024
    temperature: float = 0.05  # of the "softmax" (InfoNCE) loss
    cache_dir: str | None = None  # frozen embeddings cache; None: T/cache
    amp: bool = True  # mixed precision, used only on CUDA
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0

    def validate(self, source: str = "teacher params") -> TeacherParams:
        checks = [
            (self.kind in KINDS, "kind", f"one of {KINDS}"),
            (self.kind == "frozen" or self.batch_type != "pair", "batch_type",
             "'label' or 'doc' for kind 'finetune' ('pair' is a frozen-teacher batch type)"),
            (self.hidden >= 1, "hidden", ">= 1"),
            (self.temperature > 0, "temperature", "> 0"),
            (self.loss in LOSSES, "loss", f"one of {LOSSES}"),
            (self.batch_type in BATCH_TYPES, "batch_type", f"one of {BATCH_TYPES}"),
            (self.max_len >= 2, "max_len", ">= 2"),
            (self.epochs >= 1, "epochs", ">= 1"),
            (self.freeze_layers >= 0, "freeze_layers", ">= 0"),
            (self.batch_size >= 2, "batch_size", ">= 2 (in-batch negatives need two items)"),
            (self.lr > 0, "lr", "> 0"),
            (self.num_negatives >= 1, "num_negatives", ">= 1"),
            (self.cl_size >= 2, "cl_size", ">= 2"),
            (self.cl_update >= 1, "cl_update", ">= 1"),
            (self.checkpoint_every >= 1, "checkpoint_every", ">= 1"),
            (self.eval_every >= 0, "eval_every", ">= 0"),
            (self.eval_k >= 5, "eval_k", ">= 5"),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise ParamsError(
                    f"{source}: field {name!r} = {getattr(self, name)!r}; expected {expected}"
                )
        return self


_README_CURRICULUM = [25, 50, 75, 100, 125, 150, 200]


def _paper(cl_size: int | None, margin: float, batch_size: int, epochs: int, **extra) -> dict:
    """Table 16 of the paper (teacher 'NGAME module'): LR 2e-4 everywhere; clustering refreshed
    every 5 epochs from epoch 10 as in the released README command; ``None`` = random batches."""
    d = {
        "lr": 2e-4,
        "margin": margin,
        "batch_size": batch_size,
        "epochs": epochs,
        "cl_update": 5,
        "cl_start": 10,
        "warmup_steps": 100,
        "eval_every": 5,
        "checkpoint_every": 5,
        "freeze_layers": 0,
        "kind": "finetune",
    }
    if cl_size is None:
        d.update(cl_start=10**9, cl_size=8)
    else:
        d["cl_size"] = cl_size
    d.update(extra)
    return d


# The frozen-feature tower's CPU defaults, chosen on FOLDOC and trained on full WordNet
# (bench/results/teacher_frozen_{foldoc,wordnet}.md).
# Loss: in-batch softmax (InfoNCE, τ 0.05), not Eq. 9. Measured on FOLDOC: with the centred MiniLM
# features the 10 hardest in-batch negatives of a row score on average 0.18 *above* its positive
# (cosine), so Eq. 9's loss at the start, mean softplus(s_neg − s_pos + 0.3) ≈ 0.89, is higher than
# that of a collapsed tower (every score equal: softplus(0.3) = 0.854). Shrinking the spread of all
# cosines is a descent direction, and the tower takes it (W2·gelu(b1), a constant vector, swamps
# the input: mean label–label cosine 0.996), with random batches as with clustered ones. Eq. 9 over
# all 1023 negatives does not collapse but learns nothing useful (P@5 2.6 vs zero-shot 9.0). The
# softmax loss cannot collapse (a collapsed tower scores log B, its worst value).
# Batches: random pairs; clustered batches (clusters of 8 documents from epoch 1) were worse on
# FOLDOC (PSP@5 19.2 vs 20.4, C@5 25.9 vs 27.1) and cost a clustering per epoch.
FROZEN_CPU: dict = {
    "kind": "frozen",
    "epochs": 10,
    "batch_size": 1024,
    "lr": 1e-3,
    "weight_decay": 0.0,
    "warmup_steps": 50,
    "batch_type": "pair",
    "loss": "softmax",
    "temperature": 0.05,
    "cl_size": 8,
    "cl_start": 10**9,  # random batches throughout; set e.g. 1 for clustered batches
    "cl_update": 1,
    "eval_every": 0,
}

PRESETS: dict[str, dict] = {
    # The default of `lever teacher train` on CPU: a tower over frozen MiniLM, minutes on 2 cores.
    "frozen-cpu": FROZEN_CPU,
    # Fine-tunes MiniLM on the WordNet dataset on a 2-core CPU (~1 h per epoch).
    "wordnet-cpu": {},
    # The README command's curriculum belongs to AmazonTitles-131K only; the paper gives no
    # curriculum for the other datasets, so they keep a fixed cluster size.
    "lf-amazontitles-131k": _paper(8, 0.3, 1600, 300, curr_steps=_README_CURRICULUM),
    "lf-amazon-131k": _paper(512, 0.3, 700, 400),
    "lf-aol-270k": _paper(None, 0.05, 3200, 300),
    "lf-wikiseealso-320k": _paper(512, 0.3, 1024, 300),
    "lf-wikipedia-500k": _paper(16, 0.3, 512, 40),
    "lf-wikihierarchy-1m": _paper(1024, 0.3, 6400, 300),
    "lf-amazontitles-1.3m": _paper(8, 0.3, 1600, 400),
}


def preset(name: str) -> TeacherParams:
    if name not in PRESETS:
        raise ParamsError(f"unknown teacher preset {name!r}; expected one of {sorted(PRESETS)}")
    return TeacherParams(**PRESETS[name]).validate(f"preset {name}")
