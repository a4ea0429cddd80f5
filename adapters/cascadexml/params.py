"""Typed settings of the CascadeXML backbone (``--bp KEY=VALUE``; dotted keys for the nested
parts, e.g. ``--bp tree.features=teacher``). ``CascadeXMLParams.skeleton()`` dumps them all.

Two presets (``--bp preset=NAME``; keys given next to it override the preset):

* ``cpu`` (default): frozen MiniLM, the mean-pooled state of its last layer cached once and read
  by every level, a trainable TF-IDF bag on the label level, a document-centroid label tree,
  classifiers only; sized for a 2-core CPU, measured on full WordNet and FOLDOC (docs/cascadexml.md).
* ``paper``: the paper's recipe (its Table 18 / the upstream README commands): the encoder
  fine-tuned end to end with [CLS] features of layers {5,6}, 8, 10, 12 (scaled to the encoder's
  depth), per-level dropouts 0.2/0.25/0.35/0.5, AdamW with encoder LR 1e-4 and classifier LR
  ×10, weight decay 0.05 / 0.005, beams 128/256/512, 2^3 children per cluster; and the loop's
  defaults: 15 epochs, batch 64, the three-phase one-cycle schedule with one warm-up epoch and β1
  cycling (``lever.train.schedule``), AMP on GPU (flags given to ``lever train`` still win).
"""

from __future__ import annotations

import dataclasses

from lever.utils.params import Params, ParamsError

TREE_FEATURES = ("tfidf", "centroids", "teacher")
POOLINGS = ("mean", "cls")
SCORES = ("weighted", "level")
PRESETS = ("cpu", "paper")


@dataclasses.dataclass
class TreeParams(Params):
    """The label tree: balanced spherical 2-means over label features, built once per run.

    features: ``tfidf`` (TF-IDF of the label texts), ``centroids`` (normalised sum of the TF-IDF
    rows of the label's training documents plus its own text; with ``teacher_weight`` μ > 0 the
    documents are weighted by ``Y + μ·T``, the ``lever_label_index`` hook, so labels the teacher
    relates share subtrees), or ``teacher`` (the label embeddings of the teacher folder
    ``teacher``: ``embeddings/lbl.npy``).
    walk_len > 0: the features are first smoothed through the label graph of random walks with
    restart (``walk_len`` hops per label, restart probability ``walk_restart``, each label's
    ``walk_top_k`` most visited labels; upstream: 400, 0.8, 10), keeping ``smooth_keep`` entries per
    sparse row (upstream's ECLARE-style graph-augmented centroids; ``label_graph``).
    depths: the cluster levels as tree depths ``b`` (2^b clusters each, coarse to fine, e.g. the
    paper's ``[10, 13, 16]``); empty: ``cluster_levels`` levels spaced by ``branch_bits``, the
    finest with about ``leaf_size`` labels per cluster (scaled down with L).
    """

    features: str = "centroids"
    teacher: str | None = None
    teacher_weight: float = 0.0
    walk_len: int = 0
    walk_restart: float = 0.8
    walk_top_k: int = 10
    smooth_keep: int = 1000
    depths: list[int] = dataclasses.field(default_factory=list)
    cluster_levels: int = 3
    branch_bits: int = 3
    leaf_size: int = 8
    seed: int = 0

    def validate(self, source: str = "tree") -> TreeParams:
        if self.features not in TREE_FEATURES:
            raise ParamsError(f"{source}.features={self.features!r}: expected one of {TREE_FEATURES}")
        if self.features == "teacher" and not self.teacher:
            raise ParamsError(f"{source}.features='teacher' needs {source}.teacher=TEACHER_FOLDER")
        if self.teacher_weight < 0:
            raise ParamsError(f"{source}.teacher_weight={self.teacher_weight!r}: expected a number >= 0")
        if self.walk_len < 0 or self.walk_top_k < 1 or self.smooth_keep < 1:
            raise ParamsError(f"{source}: walk_len={self.walk_len!r} (>= 0), walk_top_k={self.walk_top_k!r} "
                              f"and smooth_keep={self.smooth_keep!r} (>= 1) out of range")
        if not 0 <= self.walk_restart <= 1:
            raise ParamsError(f"{source}.walk_restart={self.walk_restart!r}: expected a probability in [0, 1]")
        if any(int(b) < 1 for b in self.depths) or list(self.depths) != sorted(set(self.depths)):
            raise ParamsError(f"{source}.depths={self.depths!r}: expected increasing depths >= 1")
        for name in ("cluster_levels", "branch_bits", "leaf_size"):
            if int(getattr(self, name)) < 1:
                raise ParamsError(f"{source}.{name}={getattr(self, name)!r}: expected an integer >= 1")
        return self


@dataclasses.dataclass
class CascadeEncoderParams(Params):
    """The encoder whose layers feed the levels.

    model: a Hugging Face / sentence-transformers folder (None: the packaged all-MiniLM-L6-v2).
    frozen: True caches the pooled states of the used layers once (CPU); False fine-tunes the
    encoder end to end (the paper). layers: per level, the encoder layers (1 = first block, −1 =
    the last) whose pooled states are concatenated (then a Linear back to the hidden size, as the
    paper's level 0); the last list repeats for the remaining levels. Default ``[[-1]]``: the last
    layer at every level (CPU: a frozen sentence encoder's lower layers were never trained for
    similarity; on full WordNet the last layer everywhere beat the recipe, docs/cascadexml.md).
    Empty: the paper's recipe scaled to the depth D, the last level D, each coarser level two
    layers lower, the coarsest two layers (the ``paper`` preset). pooling: ``mean`` (masked mean, unit norm; what frozen
    sentence encoders are trained for) or ``cls`` (the paper). tfidf: a trainable TF-IDF embedding
    bag (Renée's) concatenated to the label level's features.
    """

    model: str | None = None
    frozen: bool = True
    layers: list[list[int]] = dataclasses.field(default_factory=lambda: [[-1]])
    pooling: str = "mean"
    max_len: int = 32
    tfidf: bool = True
    bag_dim: int = 256
    tfidf_max_features: int = 50_000
    tfidf_ngram_max: int = 2
    tfidf_min_df: int = 2


@dataclasses.dataclass
class CascadeXMLParams(Params):
    """CascadeXML settings (``TrainParams.backbone_params``); epochs, batch size, warm-up, soft
    labels, λ and seed are the shared loop's.

    beam: per cluster level, how many of its top clusters are expanded into the next level's
    candidates in training (the paper's ``--topk``; one value repeats). predict_beam: the same at
    prediction (empty: ``beam``); prediction has no teacher forcing, so a wider one loses fewer
    positives on the way down, at no training cost; whether it ranks better depends on the data
    (``bench/cascadexml_beam.py`` measures it on a finished run; docs/cascadexml.md). dropouts: per level, on its features
    (one value repeats). lr_clf / wd_clf: the per-level classifier tables (AdamW); lr_enc / wd_enc:
    the encoder, level projections and TF-IDF bag. score: prediction score of a label,
    ``weighted`` (log σ(z_label) + log σ(z_parent), the paper's default) or ``level`` (log σ(z)).
    """

    preset: str = "cpu"
    tree: TreeParams = dataclasses.field(default_factory=TreeParams)
    encoder: CascadeEncoderParams = dataclasses.field(default_factory=CascadeEncoderParams)
    beam: list[int] = dataclasses.field(default_factory=lambda: [8, 32, 64])
    predict_beam: list[int] = dataclasses.field(default_factory=list)
    dropouts: list[float] = dataclasses.field(default_factory=lambda: [0.2, 0.25, 0.3, 0.3])
    lr_clf: float = 0.02
    lr_enc: float = 0.005
    wd_clf: float = 1e-4
    wd_enc: float = 0.01
    score: str = "weighted"

    def validate(self) -> CascadeXMLParams:
        if self.preset not in PRESETS:
            raise ParamsError(f"backbone_params.preset={self.preset!r}: expected one of {PRESETS}")
        self.tree.validate("backbone_params.tree")
        enc = self.encoder
        if enc.pooling not in POOLINGS:
            raise ParamsError(f"backbone_params.encoder.pooling={enc.pooling!r}: expected one of {POOLINGS}")
        if any(not layers or 0 in layers for layers in enc.layers):
            raise ParamsError(
                f"backbone_params.encoder.layers={enc.layers!r}: expected non-empty lists of layer "
                "numbers (1 = the first, -1 = the last; 0 is none), one per level or the last repeating"
            )
        if not self.beam or min(self.beam) < 1:
            raise ParamsError(f"backbone_params.beam={self.beam!r}: expected integers >= 1, one per cluster level")
        if self.predict_beam and min(self.predict_beam) < 1:
            raise ParamsError(
                f"backbone_params.predict_beam={self.predict_beam!r}: expected integers >= 1 (empty: beam)")
        if not self.dropouts or not all(0 <= d < 1 for d in self.dropouts):
            raise ParamsError(f"backbone_params.dropouts={self.dropouts!r}: expected numbers in [0, 1)")
        if self.score not in SCORES:
            raise ParamsError(f"backbone_params.score={self.score!r}: expected one of {SCORES}")
        return self

    def per_level(self, values: list, levels: int, name: str) -> list:
        """``values`` stretched to ``levels`` entries: the last one repeats."""
        if len(values) > levels:
            raise ParamsError(
                f"backbone_params.{name} has {len(values)} entries but the tree has {levels} levels"
            )
        return list(values) + [values[-1]] * (levels - len(values))


PAPER = {
    "encoder": {"frozen": False, "pooling": "cls", "tfidf": False, "max_len": 128, "layers": []},
    "tree": {"branch_bits": 3, "leaf_size": 8, "cluster_levels": 3, "features": "centroids", "walk_len": 400},
    "beam": [128, 256, 512],
    "dropouts": [0.2, 0.25, 0.35, 0.5],
    "lr_enc": 1e-4,
    "lr_clf": 1e-3,
    "wd_enc": 0.05,
    "wd_clf": 0.005,
}


def nest_dotted(params: dict) -> dict:
    """``{"tree.features": "x"}`` → ``{"tree": {"features": "x"}}`` (the CLI's ``--bp`` form)."""
    out: dict = {}
    for key, value in params.items():
        head, _, rest = key.partition(".")
        if rest:
            part = out.setdefault(head, {})
            if not isinstance(part, dict):
                raise ParamsError(f"backbone_params: {head!r} given both as a value and as {key!r}")
            part.update(nest_dotted({rest: value}))
        elif isinstance(value, dict):
            out.setdefault(head, {}).update(nest_dotted(value))
        else:
            out[head] = value
    return out


def resolve_params(params: dict | None) -> CascadeXMLParams:
    """The preset named in ``params`` (default ``cpu``) overlaid with the keys given."""
    given = nest_dotted(dict(params or {}))
    base = nest_dotted(PAPER) if given.get("preset") == "paper" else {}
    merged = dict(base)
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return CascadeXMLParams.from_dict(merged, source="backbone_params (cascadexml)").validate()
