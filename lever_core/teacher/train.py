"""Training the Siamese teacher: NGAME-style batches, in-batch hard negatives, checkpoints that
resume to the same result, periodic evaluation and the exported teacher folder.

Teacher folder ``T`` (docs/architecture.md): ``T/encoder/`` (kind finetune) or
``T/tower.safetensors`` (kind frozen), ``T/embeddings/{trn,tst,lbl}.npy``, ``T/config.json``,
``T/metrics.jsonl``, ``T/checkpoints/epoch_NNNN/``.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from lever.teacher.batching import TokenTable, batch_slices, make_batcher
from lever.teacher.clustering import (
    ClusterSchedule,
    balanced_kmeans,
    clustered_order,
    num_clusters_for,
)
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
from lever.utils.atomic import atomic_path, write_json_atomic, write_text_atomic
from lever.utils.seed import seed_everything

CHECKPOINT_PREFIX = "epoch_"


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array)


class TeacherTrainer:
    """Trains ``params.encoder`` on ``dataset`` (an ``XCDataset``) into the folder ``out``."""

    def __init__(self, dataset, params: TeacherParams, out: str | Path, progress: bool = True):
        self.dataset = dataset
        self.params = params.validate()
        self.out = Path(out)
        self.progress = progress
        self.device = resolve_device(params.device)
        self.use_amp = params.amp and self.device.type == "cuda"
        self.schedule = ClusterSchedule(
            params.cl_size, params.cl_start, params.cl_update, tuple(params.curr_steps)
        )
        self.metrics: list[dict] = []

    # -- setup ---------------------------------------------------------------------------------

    # Kind-specific parts (lever.teacher.frozen.FrozenTeacherTrainer overrides these): the model,
    # one training step, split embeddings and what the exported folder holds besides embeddings.
    saves_bank = True  # the stale bank cannot be recomputed, so checkpoints keep it

    def _build(self) -> None:
        p = self.params
        seed_everything(p.seed)
        self.dim = self._build_model()
        self.batcher = make_batcher(p.batch_type, self.dataset.trn_Y)
        self.loss_fn = build_loss(p.loss, p.margin, p.num_negatives, p.temperature)
        self.optimizer = torch.optim.AdamW(
            self.trainable, lr=p.lr, eps=p.adam_eps, weight_decay=p.weight_decay
        )
        self.steps_per_epoch = math.ceil(len(self.batcher) / p.batch_size)
        total = self.steps_per_epoch * p.epochs
        warmup = min(p.warmup_steps, total)
        # Linear warm-up to lr, then linear decay to 0 at the last step.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: (
                (s + 1) / max(1, warmup)
                if s < warmup
                else max(0.0, (total - s) / max(1, total - warmup))
            ),
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.bank = np.zeros(
            (len(self.batcher), self.dim), dtype=np.float32
        )  # stale input-side embeddings
        self.bank_filled = np.zeros(len(self.batcher), dtype=bool)
        self.clusters: list[np.ndarray] | None = None
        self.global_step = 0
        self.start_epoch = 0

    def _build_model(self) -> int:
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
        dim_of = getattr(
            self.encoder, "get_embedding_dimension", None
        )  # sentence-transformers >= 6
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

    # -- checkpoints ---------------------------------------------------------------------------

    @property
    def checkpoint_dir(self) -> Path:
        return self.out / "checkpoints"

    def latest_checkpoint(self) -> Path | None:
        done = sorted(
            d
            for d in self.checkpoint_dir.glob(f"{CHECKPOINT_PREFIX}*")
            if (d / "state.json").exists()
        )
        return done[-1] if done else None

    def save_checkpoint(self, epoch: int) -> Path:
        from safetensors.torch import save_file

        final = self.checkpoint_dir / f"{CHECKPOINT_PREFIX}{epoch + 1:04d}"
        tmp = self.checkpoint_dir / f".{final.name}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.module.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        torch.save(
            {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "torch_rng": torch.get_rng_state(),
            },
            tmp / "trainer.pt",
        )
        if self.saves_bank:
            np.save(tmp / "bank.npy", self.bank)
            np.save(tmp / "bank_filled.npy", self.bank_filled)
        if self.clusters is not None:
            np.savez(
                tmp / "clusters.npz",
                members=np.concatenate(self.clusters),
                sizes=np.array([len(c) for c in self.clusters], dtype=np.int64),
            )
        # state.json last: its presence marks a complete checkpoint.
        write_json_atomic(
            tmp / "state.json",
            {"epoch": epoch, "global_step": self.global_step, "params": self.params.to_dict()},
        )
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        kept = sorted(self.checkpoint_dir.glob(f"{CHECKPOINT_PREFIX}*"))
        for old in kept[: -self.params.keep_checkpoints]:
            shutil.rmtree(old)
        return final

    def load_checkpoint(self, ckpt: Path) -> None:
        from safetensors.torch import load_file

        state = json.loads((ckpt / "state.json").read_text())
        saved = {k: v for k, v in state["params"].items() if k not in _RESUMABLE_CHANGES}
        now = {k: v for k, v in self.params.to_dict().items() if k not in _RESUMABLE_CHANGES}
        if saved != now:
            diff = sorted(k for k in now if saved.get(k) != now[k])
            raise ValueError(
                f"{ckpt}: checkpoint was made with different settings ({', '.join(diff)}); "
                "resume with the same parameters or train into a new folder"
            )
        self.module.load_state_dict(
            load_file(str(ckpt / "model.safetensors"), device=str(self.device))
        )
        trainer = torch.load(ckpt / "trainer.pt", weights_only=True, map_location=self.device)
        self.optimizer.load_state_dict(trainer["optimizer"])
        self.scheduler.load_state_dict(trainer["scheduler"])
        self.scaler.load_state_dict(trainer["scaler"])
        torch.set_rng_state(trainer["torch_rng"].cpu())
        if self.saves_bank:
            self.bank = np.load(ckpt / "bank.npy")
            self.bank_filled = np.load(ckpt / "bank_filled.npy")
        if (ckpt / "clusters.npz").exists():
            with np.load(ckpt / "clusters.npz", allow_pickle=False) as z:
                self.clusters = np.split(z["members"], np.cumsum(z["sizes"])[:-1])
        self.global_step = int(state["global_step"])
        self.start_epoch = int(state["epoch"]) + 1

    # -- training ------------------------------------------------------------------------------

    def _fill_bank(self) -> None:
        """Embed items not yet seen in training (clustering from epoch 0) with the current model."""
        missing = np.flatnonzero(~self.bank_filled)
        if len(missing) == 0:
            return
        side = self.batcher.input_side
        texts = self.dataset.lbl_texts if side == "lbl" else self.dataset.trn_texts
        rows = self.batcher.inputs[missing]
        self.bank[missing] = embed(
            self.encoder,
            [texts[r] for r in rows],
            self.params.embed_batch_size,
            show_progress=self.progress,
        )
        self.bank_filled[missing] = True

    def _epoch_order(self, epoch: int, rng: np.random.Generator) -> np.ndarray:
        n = len(self.batcher)
        if not self.schedule.clustered(epoch):
            return rng.permutation(n)
        if self.schedule.refresh(epoch) or self.clusters is None:
            self._fill_bank()
            k = num_clusters_for(n, self.schedule.cluster_size(epoch))
            self.clusters = balanced_kmeans(self.bank, k, rng)
        return clustered_order(self.clusters, rng)

    def _encode_pair(
        self, inputs: np.ndarray, sampled: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit-norm embeddings (with gradients) of the batch's inputs and sampled positives."""
        b = self.batcher
        fin = {k: v.to(self.device) for k, v in self.tables[b.input_side].features(inputs).items()}
        fout = {
            k: v.to(self.device) for k, v in self.tables[b.output_side].features(sampled).items()
        }
        return encode_features(self.encoder, fin), encode_features(self.encoder, fout)

    def _step(self, items: np.ndarray) -> float:
        inputs, sampled, target = self.batcher.batch(items)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
            e_in, e_out = self._encode_pair(inputs, sampled)
            loss = self.loss_fn(e_in @ e_out.T, target.to(self.device))
        self.scaler.scale(loss).backward()
        if self.params.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.trainable, self.params.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.global_step += 1
        if self.saves_bank:
            self.bank[items] = e_in.detach().float().cpu().numpy()
            self.bank_filled[items] = True
        return float(loss.detach())

    def train_epoch(self, epoch: int) -> dict:
        p = self.params
        # Epoch e's randomness depends only on (seed, e), so a resumed run replays it exactly.
        rng = np.random.default_rng([p.seed, epoch])
        torch.manual_seed(p.seed * 1_000_003 + epoch)
        self.batcher.resample(rng)
        order = self._epoch_order(epoch, rng)
        self.module.train()
        losses, t0 = [], time.perf_counter()
        bar = tqdm(
            batch_slices(order, p.batch_size),
            desc=f"teacher epoch {epoch + 1}/{p.epochs}",
            disable=not self.progress,
            leave=False,
        )
        pairs = 0
        for items in bar:
            if len(items) < 2:  # a lone item has no in-batch negative
                continue
            losses.append(self._step(items))
            pairs += len(items)
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        secs = time.perf_counter() - t0
        return {
            "epoch": epoch + 1,
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "clustered": self.schedule.clustered(epoch),
            "cluster_size": self.schedule.cluster_size(epoch)
            if self.schedule.clustered(epoch)
            else None,
            "lr": self.scheduler.get_last_lr()[0],
            "seconds": round(secs, 2),
            "pairs_per_s": round(pairs / max(secs, 1e-9), 2),
            "step": self.global_step,
        }

    def embed_split(self, split: str) -> np.ndarray:
        texts = {
            "trn": self.dataset.trn_texts,
            "tst": self.dataset.tst_texts,
            "lbl": self.dataset.lbl_texts,
        }[split]
        return embed(self.encoder, texts, self.params.embed_batch_size, show_progress=self.progress)

    def evaluate(self, lbl: np.ndarray | None = None, tst: np.ndarray | None = None) -> dict:
        lbl = self.embed_split("lbl") if lbl is None else lbl
        tst = self.embed_split("tst") if tst is None else tst
        return evaluate_embeddings(
            tst,
            lbl,
            self.dataset.tst_Y,
            self.inv_prop,
            self.dataset.tst_filter,
            k=self.params.eval_k,
        )

    def _write_metrics(self) -> None:
        write_text_atomic(
            self.out / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in self.metrics)
        )

    def fit(self, resume: bool = False) -> dict:
        """Train, checkpointing and evaluating as configured; export the teacher folder. Returns the
        final test metrics."""
        p = self.params
        self.out.mkdir(parents=True, exist_ok=True)
        self._build()
        self.inv_prop = dataset_inverse_propensity(self.dataset, p.propensity_a, p.propensity_b)
        ckpt = self.latest_checkpoint() if resume else None
        if ckpt is not None:
            self.load_checkpoint(ckpt)
            if self.progress:
                tqdm.write(f"resuming from {ckpt} (epoch {self.start_epoch + 1} of {p.epochs})")
            if (self.out / "metrics.jsonl").exists():
                self.metrics = [
                    json.loads(line)
                    for line in (self.out / "metrics.jsonl").read_text().splitlines()
                    if line.strip() and json.loads(line).get("epoch", 0) <= self.start_epoch
                ]
        elif self.checkpoint_dir.exists() and any(self.checkpoint_dir.iterdir()):
            raise ValueError(
                f"{self.out}: already holds checkpoints; pass --resume to continue, or use a new "
                "folder"
            )
        p.save(self.out / "config.json")
        for epoch in range(self.start_epoch, p.epochs):
            record = self.train_epoch(epoch)
            last = epoch == p.epochs - 1
            if not last and p.eval_every and (epoch + 1) % p.eval_every == 0:
                record["test"] = self.evaluate()
            self.metrics.append(record)
            self._write_metrics()
            if self.progress:
                tqdm.write(json.dumps(record))
            if last or (epoch + 1) % p.checkpoint_every == 0:
                self.save_checkpoint(epoch)
        return self.export()

    def export(self) -> dict:
        """Save the model and the lbl/tst/trn embeddings. The test metrics are computed and
        logged as soon as lbl and tst exist, before the (largest) train split is embedded."""
        self._save_model()
        emb = {}
        for split in ("lbl", "tst"):
            emb[split] = self.embed_split(split)
            save_npy_atomic(self.out / "embeddings" / f"{split}.npy", emb[split])
        final = {
            "epoch": self.params.epochs,
            "final": True,
            "test": self.evaluate(emb["lbl"], emb["tst"]),
        }
        self.metrics = [m for m in self.metrics if not m.get("final")] + [final]
        self._write_metrics()
        if self.progress:
            tqdm.write(json.dumps(final))
        emb["trn"] = self.embed_split("trn")
        save_npy_atomic(self.out / "embeddings" / "trn.npy", emb["trn"])
        # meta.json last: the dataset fingerprint the soft-label stage checks.
        fingerprint = self.dataset.fingerprint() if hasattr(self.dataset, "fingerprint") else None
        write_json_atomic(
            self.out / "embeddings" / "meta.json",
            {
                "dataset": getattr(self.dataset, "name", None),
                "fingerprint": fingerprint,
                "rows": {s: int(a.shape[0]) for s, a in emb.items()},
                "dim": int(emb["lbl"].shape[1]),
                "max_len": self.params.max_len,
                "normalised": True,
                "kind": self.params.kind,
                **self._meta_extra(),
            },
        )
        return final["test"]

    def _save_model(self) -> None:
        save_encoder_atomic(self.encoder, self.out / "encoder")

    def _meta_extra(self) -> dict:
        return {}


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


def train_teacher(
    dataset, params: TeacherParams, out: str | Path, resume: bool = False, progress: bool = True
) -> dict:
    if params.kind == "frozen":
        from lever.teacher.frozen import FrozenTeacherTrainer

        return FrozenTeacherTrainer(dataset, params, out, progress=progress).fit(resume=resume)
    return TeacherTrainer(dataset, params, out, progress=progress).fit(resume=resume)
