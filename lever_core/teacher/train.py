"""Training the Siamese teacher on the one trainer (``lever.train.loop.Trainer``): NGAME-style
batches, in-batch hard negatives, periodic evaluation and the exported teacher folder.

Who does what:

* the :class:`~lever.train.loop.Trainer` runs epochs and steps, the AdamW group, the linear
  warm-up + decay schedule, AMP, gradient clipping, checkpoints (``T/checkpoints/step-N/``),
  resume from the last checkpointed step (printed, with tqdm progress) and the epoch log;
* :class:`SiameseTeacher` (the model family the trainer calls back, as it calls a backbone) draws
  each epoch's positives and its random or clustered item order (``on_epoch_start``), computes the
  in-batch loss of a step (``forward_backward``), adds the batch kind and pairs/s to the epoch
  record (``on_epoch_end``) and keeps the epoch's order, positives, clusters and stale embedding
  bank in the checkpoints (``extra_state``), so a resumed run equals an uninterrupted one;
* :class:`TeacherTrainer` slices the teacher's order into batches and evaluates every
  ``eval_every`` epochs; :func:`train_teacher` then exports the folder.

Teacher folder ``T`` (docs/teacher.md): ``T/encoder/`` (kind finetune) or ``T/tower.safetensors``
(kind frozen), ``T/embeddings/{trn,tst,lbl}.npy`` + ``meta.json``, ``T/config.json``,
``T/metrics.jsonl``, ``T/checkpoints/``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lever.teacher.batching import TokenTable, batch_slices, make_batcher
from lever.teacher.clustering import ClusterSchedule, batch_clusters, clustered_order
from lever.teacher.evaluate import dataset_inverse_propensity, evaluate_embeddings
from lever.teacher.losses import build_loss
from lever.teacher.model import (
    embed,
    encode_features,
    freeze_bottom_layers,
    load_teacher_encoder,
    resolve_device,
    save_encoder_atomic,
)
from lever.teacher.params import TeacherParams
from lever.train.backbone import Backbone, ParamGroup
from lever.train.checkpoint import latest_checkpoint
from lever.train.distributed import DistEnv
from lever.train.loop import Trainer
from lever.train.params import OptimParams, RunParams, TrainParams
from lever.utils.atomic import atomic_path, write_json_atomic, write_text_atomic
from lever.utils.seed import seed_everything


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array)


class SiameseTeacher(Backbone):
    """The fine-tuned Siamese teacher (kind ``finetune``): ``params.encoder`` embeds both sides.

    :class:`lever.teacher.frozen.FrozenTeacher` swaps the model for a tower over frozen features
    by overriding ``build_model``, ``encode_pair``, ``embed_split``, ``_epoch_order``,
    ``_fill_bank``, ``save_model`` and ``meta_extra``."""

    name = "teacher"
    saves_bank = True  # the stale bank cannot be recomputed, so checkpoints keep it

    def __init__(self, params: TeacherParams, dataset, out: str | Path, progress: bool = True):
        super().__init__(params)
        self.dataset, self.out, self.progress = dataset, Path(out), progress
        self.device = resolve_device(params.device)
        self.schedule = ClusterSchedule(
            params.cl_size, params.cl_start, params.cl_update, tuple(params.curr_steps)
        )
        seed_everything(params.seed)
        self.dim = self.build_model()
        self.batcher = make_batcher(params.batch_type, dataset.trn_Y)
        self.loss_fn = build_loss(params.loss, params.margin, params.num_negatives, params.temperature)
        self.bank = np.zeros((len(self.batcher), self.dim), dtype=np.float32)  # stale input side
        self.bank_filled = np.zeros(len(self.batcher), dtype=bool)
        self.clusters: list[np.ndarray] | None = None
        self.order: np.ndarray | None = None  # this epoch's item order
        self.epoch_pairs = 0
        self.inv_prop = dataset_inverse_propensity(dataset, params.propensity_a, params.propensity_b)

    # -- the model -------------------------------------------------------------------------------
    def build_model(self) -> int:
        """Load and partly freeze the encoder; sets ``module``/``trainable``, returns the dim."""
        p = self.params
        self.encoder = load_teacher_encoder(p.encoder, p.max_len, self.device)
        self.module = self.encoder
        freeze_bottom_layers(self.encoder, p.freeze_layers)
        self.trainable = [q for q in self.encoder.parameters() if q.requires_grad]
        if not self.trainable:
            raise ValueError(
                f"freeze_layers={p.freeze_layers} freezes the whole encoder {p.encoder!r}; "
                "use fewer frozen layers than the model has"
            )
        self._tables: dict[str, TokenTable] | None = None
        dim_of = getattr(self.encoder, "get_embedding_dimension", None)  # sentence-transformers >= 6
        return dim_of() if dim_of else self.encoder.get_sentence_embedding_dimension()

    @property
    def tables(self) -> dict[str, TokenTable]:
        """Label and train texts tokenised once, on first use (an export-only resume skips it)."""
        if self._tables is None:
            tok, n = self.encoder.tokenizer, self.params.max_len
            self._tables = {
                "lbl": TokenTable.build(tok, self.dataset.lbl_texts, n),
                "trn": TokenTable.build(tok, self.dataset.trn_texts, n),
            }
        return self._tables

    def param_groups(self, module: torch.nn.Module) -> list[ParamGroup]:
        p = self.params
        return [
            ParamGroup(
                "teacher", self.trainable, "adamw", lr=p.lr, weight_decay=p.weight_decay,
                eps=p.adam_eps,
            )
        ]

    def encode_pair(self, inputs: np.ndarray, sampled: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit-norm embeddings (with gradients) of the batch's inputs and sampled positives."""
        b = self.batcher
        fin = {k: v.to(self.device) for k, v in self.tables[b.input_side].features(inputs).items()}
        fout = {k: v.to(self.device) for k, v in self.tables[b.output_side].features(sampled).items()}
        return encode_features(self.encoder, fin), encode_features(self.encoder, fout)

    # -- the trainer's callbacks -----------------------------------------------------------------
    def on_epoch_start(self, module: torch.nn.Module, epoch: int) -> None:
        """Draw the epoch's positives and item order (random, or clustered on the bank). Epoch
        e's randomness depends only on (seed, e); a run resumed inside the epoch gets both back
        from :meth:`load_extra_state` instead (the weights have moved since)."""
        p = self.params
        rng = np.random.default_rng([p.seed, epoch])
        torch.manual_seed(p.seed * 1_000_003 + epoch)
        self.batcher.resample(rng)
        self.order = self._epoch_order(epoch, rng)
        self.epoch_pairs = 0

    def forward_backward(self, module: torch.nn.Module, items: np.ndarray, amp) -> float:
        """One batch of items: in-batch loss (co-positives masked), backward, bank update."""
        inputs, sampled, target = self.batcher.batch(items)
        with amp.autocast():
            e_in, e_out = self.encode_pair(inputs, sampled)
            loss = self.loss_fn(e_in @ e_out.T, target.to(self.device))
        amp.backward(loss)
        if self.saves_bank:
            self.bank[items] = e_in.detach().float().cpu().numpy()
            self.bank_filled[items] = True
        self.epoch_pairs += len(items)
        return float(loss.detach())

    def on_epoch_end(self, module: torch.nn.Module, epoch: int, record: dict[str, Any]) -> None:
        clustered = self.schedule.clustered(epoch)
        record["clustered"] = clustered
        record["cluster_size"] = self.schedule.cluster_size(epoch) if clustered else None
        record["pairs_per_s"] = round(self.epoch_pairs / max(record["seconds"], 1e-9), 2)

    def extra_state(self, module: torch.nn.Module) -> dict[str, Any]:
        state: dict[str, Any] = {"sampled": torch.from_numpy(np.asarray(self.batcher.sampled))}
        if self.order is not None:
            state["order"] = torch.from_numpy(np.asarray(self.order))
        if self.clusters is not None:
            state["cluster_members"] = torch.from_numpy(np.concatenate(self.clusters))
            state["cluster_sizes"] = torch.tensor([len(c) for c in self.clusters], dtype=torch.int64)
        if self.saves_bank:
            state["bank"] = torch.from_numpy(self.bank)
            state["bank_filled"] = torch.from_numpy(self.bank_filled)
        return state

    def load_extra_state(self, module: torch.nn.Module, state: dict[str, Any]) -> None:
        self.batcher.sampled = state["sampled"].cpu().numpy()
        self.order = state["order"].cpu().numpy() if "order" in state else None
        if "cluster_members" in state:
            members, sizes = state["cluster_members"].cpu().numpy(), state["cluster_sizes"].cpu().numpy()
            self.clusters = np.split(members, np.cumsum(sizes)[:-1])
        if self.saves_bank:
            self.bank = state["bank"].cpu().numpy().copy()
            self.bank_filled = state["bank_filled"].cpu().numpy().copy()

    # -- batches ---------------------------------------------------------------------------------
    def _fill_bank(self) -> None:
        """Embed items not yet seen in training (clustering from epoch 0) with the current model."""
        missing = np.flatnonzero(~self.bank_filled)
        if len(missing) == 0:
            return
        side = self.batcher.input_side
        texts = self.dataset.lbl_texts if side == "lbl" else self.dataset.trn_texts
        rows = self.batcher.inputs[missing]
        self.bank[missing] = embed(
            self.encoder, [texts[r] for r in rows], self.params.embed_batch_size,
            show_progress=self.progress,
        )
        self.bank_filled[missing] = True

    def _epoch_order(self, epoch: int, rng: np.random.Generator) -> np.ndarray:
        n = len(self.batcher)
        if not self.schedule.clustered(epoch):
            return rng.permutation(n)
        if self.schedule.refresh(epoch) or self.clusters is None:
            self._fill_bank()
            self.clusters = batch_clusters(self.bank, self.schedule.cluster_size(epoch), rng)
        return clustered_order(self.clusters, rng)

    # -- evaluation and export -------------------------------------------------------------------
    def embed_split(self, split: str) -> np.ndarray:
        texts = {"trn": self.dataset.trn_texts, "tst": self.dataset.tst_texts, "lbl": self.dataset.lbl_texts}
        return embed(self.encoder, texts[split], self.params.embed_batch_size, show_progress=self.progress)

    def evaluate(self, lbl: np.ndarray | None = None, tst: np.ndarray | None = None) -> dict:
        """kNN retrieval of the test documents among the label embeddings (filter applied)."""
        lbl = self.embed_split("lbl") if lbl is None else lbl
        tst = self.embed_split("tst") if tst is None else tst
        d = self.dataset
        return evaluate_embeddings(tst, lbl, d.tst_Y, self.inv_prop, d.tst_filter, k=self.params.eval_k)

    def save_model(self) -> None:
        save_encoder_atomic(self.encoder, self.out / "encoder")

    def meta_extra(self) -> dict:
        return {}


def loop_params(params: TeacherParams, out: str | Path, total_steps: int,
                checkpoint_every_steps: int = 0) -> TrainParams:
    """The trainer's settings of a teacher run: ``params.epochs``, linear warm-up to the group's
    lr over ``min(warmup_steps, total_steps)`` steps then linear decay to 0 at the last step,
    clipping at ``grad_clip``, AMP on CUDA. Learning rate, weight decay and Adam's eps are the
    teacher's parameter group's (``SiameseTeacher.param_groups``)."""
    return TrainParams(
        backbone=SiameseTeacher.name,
        out=str(out),
        optim=OptimParams(
            epochs=params.epochs,
            schedule="linear",
            warmup_steps=min(params.warmup_steps, total_steps),
            max_grad_norm=params.grad_clip,
            amp=params.amp,
        ),
        run=RunParams(device=params.device, checkpoint_every_steps=checkpoint_every_steps, seed=params.seed),
    )


class TeacherTrainer(Trainer):
    """The :class:`~lever.train.loop.Trainer` over a teacher's batches: the epoch's item order in
    slices of ``batch_size`` (a lone last item is skipped: it has no in-batch negative), evaluated
    every ``eval_every`` epochs before the last (the last is evaluated by the export)."""

    def __init__(self, teacher: SiameseTeacher, show: bool = True, checkpoint_every_steps: int = 0):
        p = teacher.params
        self.backbone, self.module, self.trainable = teacher, teacher.module, teacher.trainable
        self.dataset, self.device, self.env, self.show = teacher.dataset, teacher.device, DistEnv(), show
        self.run_dir = teacher.out
        steps_per_epoch = math.ceil(len(teacher.batcher) / p.batch_size)
        self.params = loop_params(p, teacher.out, steps_per_epoch * p.epochs, checkpoint_every_steps)
        self.optim = self.params.optim
        self.init_loop(steps_per_epoch)
        self.checkpoint_every_epochs = p.checkpoint_every
        self.keep_checkpoints = p.keep_checkpoints

    def epoch_batches(self, epoch: int, start_step: int):
        teacher = self.backbone
        batches = batch_slices(teacher.order, teacher.params.batch_size)
        for step in range(start_step, len(batches)):
            if len(batches[step]) >= 2:
                yield step, [batches[step]]

    def evaluate_epoch(self, epoch: int) -> dict[str, float] | None:
        p = self.backbone.params
        if p.eval_every and (epoch + 1) % p.eval_every == 0 and epoch + 1 < p.epochs:
            return self.backbone.evaluate()
        return None


def make_teacher(params: TeacherParams, dataset, out: str | Path, progress: bool = True) -> SiameseTeacher:
    """The teacher of ``params.kind``, its model built."""
    if params.kind == "frozen":
        from lever.teacher.frozen import FrozenTeacher

        return FrozenTeacher(params, dataset, out, progress)
    return SiameseTeacher(params, dataset, out, progress)


# Settings that may differ between the run that wrote a checkpoint and the one resuming it.
_RESUMABLE_CHANGES = {
    "epochs",
    "eval_every",
    "checkpoint_every",
    "keep_checkpoints",
    "embed_batch_size",
    "device",
    "eval_k",
    "cache_dir",
}


def _check_resumable(config: Path, params: TeacherParams) -> None:
    if not config.exists():
        raise ValueError(f"{config}: missing, but the folder holds checkpoints; train into a new folder")
    saved = TeacherParams.load(config).to_dict()
    now = params.to_dict()
    diff = sorted(k for k in now if k not in _RESUMABLE_CHANGES and saved.get(k) != now[k])
    if diff:
        raise ValueError(
            f"{config.parent}: checkpoint was made with different settings ({', '.join(diff)}); "
            "resume with the same parameters or train into a new folder"
        )


def train_teacher(
    dataset,
    params: TeacherParams,
    out: str | Path,
    resume: bool = False,
    progress: bool = True,
    checkpoint_every_steps: int = 0,
) -> dict:
    """Train a teacher of ``params.kind`` on ``dataset`` (an ``XCDataset``) into the folder
    ``out`` and export it; returns the final test metrics. ``resume``: continue from the folder's
    last checkpoint (otherwise a folder with checkpoints is refused). ``checkpoint_every_steps``
    adds checkpoints inside epochs (a run-control setting: the result does not depend on it)."""
    params = params.validate()
    out = Path(out)
    if any((out / "checkpoints").glob("epoch_*")):
        raise ValueError(
            f"{out / 'checkpoints'}: epoch_NNNN checkpoints of the teacher's former loop, which "
            "the trainer cannot resume; train into a new folder"
        )
    ckpt = latest_checkpoint(out)
    if ckpt is not None and not resume:
        raise ValueError(
            f"{out}: already holds checkpoints; pass --resume to continue, or use a new folder"
        )
    if ckpt is not None:
        _check_resumable(out / "config.json", params)
    out.mkdir(parents=True, exist_ok=True)
    teacher = make_teacher(params, dataset, out, progress)
    trainer = TeacherTrainer(teacher, progress, checkpoint_every_steps)
    if ckpt is not None:
        trainer.resume(ckpt)
    params.save(out / "config.json")
    trainer.run_epochs(None)
    return export(teacher)


def export(teacher: SiameseTeacher) -> dict:
    """Save the model and the lbl/tst/trn embeddings. The test metrics are computed and logged
    as soon as lbl and tst exist, before the (largest) train split is embedded."""
    out, params, dataset = teacher.out, teacher.params, teacher.dataset
    teacher.save_model()
    emb = {}
    for split in ("lbl", "tst"):
        emb[split] = teacher.embed_split(split)
        save_npy_atomic(out / "embeddings" / f"{split}.npy", emb[split])
    final = {"epoch": params.epochs, "final": True, "test": teacher.evaluate(emb["lbl"], emb["tst"])}
    log = out / "metrics.jsonl"
    lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
    kept = [x for x in lines if x.strip() and not json.loads(x).get("final")]
    write_text_atomic(log, "".join(x + "\n" for x in [*kept, json.dumps(final)]))
    if teacher.progress:
        print(json.dumps(final))
    emb["trn"] = teacher.embed_split("trn")
    save_npy_atomic(out / "embeddings" / "trn.npy", emb["trn"])
    # meta.json last: the dataset fingerprint the soft-label stage checks.
    fingerprint = dataset.fingerprint() if hasattr(dataset, "fingerprint") else None
    write_json_atomic(
        out / "embeddings" / "meta.json",
        {
            "dataset": getattr(dataset, "name", None),
            "fingerprint": fingerprint,
            "rows": {s: int(a.shape[0]) for s, a in emb.items()},
            "dim": int(emb["lbl"].shape[1]),
            "max_len": params.max_len,
            "normalised": True,
            "kind": params.kind,
            **teacher.meta_extra(),
        },
    )
    return final["test"]
