"""The training loop every backbone shares (``lever train``): :class:`Trainer`.

Training runs in the backbone's stages (``Backbone.stages``: one by default), each with its own
optimizer groups and warm-up + decay schedule over its own steps; the backbone is called back per
stage (``on_stage_start``), epoch (``on_epoch_start``) and optimizer step (``on_step_end``), and its
``extra_state`` is saved in every checkpoint. Per optimizer step: this process's ``grad_accum`` micro-batches go through
``Backbone.forward_backward`` (loss × 1/rows-in-global-batch, gradients accumulated), gradients are
summed over processes, optionally clipped, and every parameter group's optimizer steps at
``base lr × schedule(step)``. Every ``eval_every`` epochs rank 0 evaluates on the test split
(filter applied) and appends the metrics to ``metrics.jsonl``; every epoch (and every
``checkpoint_every_steps``) a checkpoint is written, from which a rerun of the same command resumes
to the same result.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from lever.hooks.manager import get_plugin_manager, scoped_hooks
from lever.train.backbone import (
    AmpContext,
    Backbone,
    BuildContext,
    ParamGroup,
    shortlists_file,
    stage_epochs,
    to_device,
)
from lever.train.checkpoint import KEEP, latest_checkpoint, load_checkpoint, save_checkpoint
from lever.train.distributed import (
    DistEnv,
    all_reduce_sum,
    broadcast_parameters,
    init_distributed,
    shutdown_distributed,
    sum_gradients,
)
from lever.train.params import AUTO, RESUMABLE_CHANGES, OptimParams, TrainParams
from lever.train.predict import predict_topk
from lever.train.rows import BatchBuilder, GlobalBatchSampler, TrainRows
from lever.train.schedule import adam_beta1, lr_factor
from lever.utils.params import ParamsError
from lever.utils.seed import seed_everything


@dataclasses.dataclass
class TrainResult:
    run_dir: Path
    epochs_done: int
    finished: bool
    metrics: dict[str, float] | None  # final test metrics (rank 0, when finished)


def resolve_device(device: str, env: DistEnv) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and env.enabled:
        device = f"cuda:{env.local_rank}"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


def load_train_rows(dataset, params: TrainParams) -> TrainRows:
    """Docs (and with ``label_rows`` the label-as-datapoint rows) with their soft labels."""
    lever = params.lever
    if lever.label_rows:
        aug = dataset.with_label_rows()
        Y, num_docs = aug.Y.tocsr(), aug.num_docs
    else:
        Y, num_docs = dataset.trn_Y.tocsr(), dataset.num_train
    soft = None
    if lever.soft_labels:
        from lever.soft_labels import SoftLabels

        labels = SoftLabels.load(lever.soft_labels, dataset=dataset)
        soft = labels.csr if lever.label_rows else labels.csr[:num_docs]
        if soft.shape != Y.shape:
            raise ValueError(
                f"{lever.soft_labels}: soft labels have shape {soft.shape}, but the training rows "
                f"{'(docs + labels) ' if lever.label_rows else '(docs only) '}have shape {Y.shape}"
            )
    return TrainRows(Y=Y, num_docs=num_docs, soft=soft)


def build_optimizers(
    groups: list[ParamGroup], params: OptimParams
) -> list[tuple[str, torch.optim.Optimizer, float]]:
    """One optimizer per group; returns ``(name, optimizer, base lr)``."""
    unknown = sorted(set(params.group_lr) - {g.name for g in groups})
    if unknown:
        raise ParamsError(
            f"TrainParams.optim.group_lr names {unknown}; "
            f"this backbone's groups are {[g.name for g in groups]}"
        )
    out = []
    for g in groups:
        lr = params.group_lr.get(g.name, params.lr if params.lr is not None else g.lr)
        wd = params.weight_decay if params.weight_decay is not None else g.weight_decay
        if g.optimizer == "sgd":
            opt = torch.optim.SGD(g.params, lr=lr, momentum=g.momentum, weight_decay=wd)
        elif g.optimizer == "adam":
            opt = torch.optim.Adam(g.params, lr=lr, betas=g.betas, eps=g.eps, weight_decay=wd)
        else:
            opt = torch.optim.AdamW(g.params, lr=lr, betas=g.betas, eps=g.eps, weight_decay=wd)
        out.append((g.name, opt, float(lr)))
    return out


def make_backbone(params: TrainParams, plugin_manager) -> Backbone:
    from lever.hooks.registry import make_backbone as make

    return make(params.backbone, params.backbone_params, plugin_manager)


def resolve_backbone_defaults(params: TrainParams, backbone: Backbone) -> TrainParams:
    """``params`` with the backbone's loop defaults and every backbone setting filled in."""
    params = params.with_defaults(backbone.train_defaults)
    return dataclasses.replace(params, backbone_params=backbone.params.to_dict())


def _check_resumable(saved: Path, params: TrainParams) -> None:
    old = TrainParams.load(saved).flat_dict()  # a config.json of the old flat form loads too
    new = params.flat_dict()
    diff = sorted(
        k for k in set(old) | set(new) if k not in RESUMABLE_CHANGES and old.get(k) != new.get(k)
    )
    if diff:
        details = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff)
        raise RuntimeError(
            f"{saved}: the run folder holds a checkpoint of a different configuration ({details}); "
            "use a new --out folder, or repeat the original settings to resume"
        )


def evaluate_module(
    backbone: Backbone, module, dataset, k: int, device, progress: bool, env: DistEnv | None = None
) -> dict[str, float] | None:
    """Test metrics (filter applied) on rank 0; ``None`` on the other ranks. Backbones with
    ``collective_predict`` (model-parallel parts) predict on every rank together."""
    from lever.metrics import evaluate, inverse_propensity

    env = env or DistEnv()
    result = None
    if env.is_main or backbone.collective_predict:
        indices, scores = predict_topk(
            backbone,
            module,
            dataset.num_test,
            dataset.num_labels,
            k,
            device,
            exclude=dataset.tst_filter,
            progress=progress and env.is_main,
            desc="evaluate",
        )
        if env.is_main:
            meta = dataset.meta
            inv_prop = inverse_propensity(dataset.trn_Y, meta.propensity_a, meta.propensity_b)
            result = evaluate(
                dataset.tst_Y, (indices, scores), inv_prop, k=k, filter=dataset.tst_filter
            )
    env.barrier()
    return result


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def _drop_records_after(path: Path, epochs_done: int) -> None:
    """Keep the log records of the epochs a resumed run does not repeat: a run stopped between
    logging an epoch and checkpointing it would otherwise log that epoch twice."""
    from lever.utils.atomic import write_text_atomic

    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [x for x in lines if x.strip() and json.loads(x).get("epoch", 0) <= epochs_done]
    if len(kept) != len(lines):
        write_text_atomic(path, "".join(x + "\n" for x in kept))


def _iterate_steps(
    sampler: GlobalBatchSampler, builder: BatchBuilder, epoch: int, start_step: int, workers: int
):
    """``(step, [Batch per micro-batch])``; with workers, DataLoader workers build the batches."""
    items = [
        (step, m, rows, n)
        for step, micro, n in sampler.epoch(epoch, start_step)
        for m, rows in enumerate(micro)
    ]
    if workers == 0:
        batches = (builder(rows, n) for _, _, rows, n in items)
    else:
        loader = torch.utils.data.DataLoader(
            _BuildDataset(items, builder),
            batch_size=None,
            shuffle=False,
            num_workers=workers,
            collate_fn=_identity,
            persistent_workers=False,
        )
        batches = iter(loader)
    current, bucket = None, []
    for (step, m, _, _), batch in zip(items, batches):
        if m == 0 and bucket:
            yield current, bucket
            bucket = []
        current = step
        bucket.append(batch)
    if bucket:
        yield current, bucket


class _BuildDataset(torch.utils.data.Dataset):
    def __init__(self, items, builder):
        self.items, self.builder = items, builder

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        _, _, rows, n = self.items[i]
        return self.builder(rows, n)


def _identity(x):
    return x


def train(
    params: TrainParams,
    *,
    stop_after_epochs: int | None = None,
    progress: bool = True,
    plugin_manager=None,
) -> TrainResult:
    """Train ``params.backbone`` on ``params.data`` into ``params.out``; resumes from the run
    folder's latest checkpoint when there is one. ``stop_after_epochs`` ends this invocation after
    that many epochs (checkpointed), e.g. for time-sliced jobs."""
    from lever.data import XCDataset

    plugin_manager = plugin_manager or get_plugin_manager()
    backbone = make_backbone(params, plugin_manager)
    # The saved config names every setting, the backbone's defaults included.
    params = resolve_backbone_defaults(params, backbone).validate()
    if params.lever.lam == AUTO:
        from lever.train.auto import resolve_auto

        params, _ = resolve_auto(params, progress)
        params = params.validate()
    run_dir = Path(params.out)
    device_name = params.run.device
    env = init_distributed(
        device_name if device_name != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    try:
        device = resolve_device(device_name, env)
        ckpt = latest_checkpoint(run_dir)
        if ckpt is not None:
            _check_resumable(run_dir / "config.json", params)
        dataset = XCDataset.load(params.data)
        rows = load_train_rows(dataset, params)  # bad inputs fail before the run folder is made
        if env.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            params.save(run_dir / "config.json")
        trainer = Trainer(
            backbone, params, dataset, rows, device, env, plugin_manager, progress and env.is_main
        )
        if ckpt is not None:
            trainer.resume(ckpt)
        if not trainer.run_epochs(stop_after_epochs):
            env.barrier()
            return TrainResult(run_dir, trainer.epoch, False, None)
        metrics = _finish(
            run_dir, backbone, trainer.module, dataset, params, device, env, trainer.show
        )
        env.barrier()  # nobody tears the process group down while another rank still uses it
        return TrainResult(run_dir, trainer.epoch, True, metrics)
    finally:
        shutdown_distributed(env)


class Trainer:
    """The loop of one run: stages (each with its optimizers and schedule), per-step and
    per-epoch callbacks of the backbone, checkpoints holding the backbone's ``extra_state``,
    evaluation. Built once per invocation; ``resume`` continues from a checkpoint."""

    def __init__(self, backbone, params: TrainParams, dataset, rows, device, env, pm, show):
        self.backbone, self.params, self.dataset, self.rows = backbone, params, dataset, rows
        self.optim, run = params.optim, params.run
        self.device, self.env, self.show = device, env, show
        self.run_dir = Path(params.out)
        seed_everything(run.seed)
        cache_dir = Path(run.cache_dir) if run.cache_dir else self.run_dir / "cache"
        hooks = scoped_hooks(pm, params.backbone)
        # The loop's losses are sums; it scales them by 1 / rows in the global batch.
        loss_params = params.lever.loss_params("sum")
        backbone.attach(hooks, loss_params)
        ctx = BuildContext(dataset, rows, params, device, env, cache_dir, hooks, show)
        self.module = backbone.build(ctx).to(device)
        self.trainable = [p for p in self.module.parameters() if p.requires_grad]
        broadcast_parameters(self.trainable, env)
        self.sampler = GlobalBatchSampler(
            rows.num_rows, self.optim.batch_size, env.world_size, env.rank, self.optim.grad_accum,
            run.seed,
        )
        self.builder = BatchBuilder(rows, backbone.batch_inputs, loss_params, hooks)
        # Different ranks draw different dropout masks; the init above was identical everywhere.
        torch.manual_seed(run.seed * 1000 + 1 + env.rank)
        self.init_loop(self.sampler.steps_per_epoch())

    def init_loop(self, steps_per_epoch: int) -> None:
        """The loop's own state, once ``backbone``, ``module``, ``trainable``, ``params``,
        ``optim``, ``device``, ``env``, ``show`` and ``run_dir`` are set. A subclass that brings
        its own batches (the teacher, ``lever.teacher.train``) calls it from its ``__init__`` and
        overrides :meth:`epoch_batches` and :meth:`evaluate_epoch`."""
        self.stages = self.backbone.stages(self.module)
        self.stage_epochs = stage_epochs(self.stages, self.optim.epochs)
        self.amp = AmpContext(self.device, self.optim.amp)
        self.steps_per_epoch = steps_per_epoch
        self.stage: int | None = None  # the stage whose optimizers are built
        self.optimizers: list[tuple[str, torch.optim.Optimizer, float]] = []
        self.epoch, self.start_step, self.global_step = 0, 0, 0
        self.epoch_loss, self.epoch_steps = 0.0, 0
        self.checkpoint_every_epochs = 1  # the last epoch is always checkpointed
        self.keep_checkpoints = KEEP

    def epoch_batches(self, epoch: int, start_step: int):
        """``(step, [micro-batch, ...])`` of ``epoch`` from ``start_step`` on."""
        return _iterate_steps(self.sampler, self.builder, epoch, start_step, self.params.run.num_workers)

    def evaluate_epoch(self, epoch: int) -> dict[str, float] | None:
        """Test metrics every ``eval_every`` epochs and after the last (rank 0), else None."""
        p = self.params.run
        if (epoch + 1) % p.eval_every and epoch + 1 != self.optim.epochs:
            return None
        return evaluate_module(
            self.backbone, self.module, self.dataset, p.eval_k, self.device, self.show, self.env
        )

    # -- stages ----------------------------------------------------------------------------------
    def stage_of(self, epoch: int) -> int:
        ends = np.cumsum(self.stage_epochs)
        return int(np.searchsorted(ends, epoch, side="right"))

    def stage_first_step(self, stage: int) -> int:
        return sum(self.stage_epochs[:stage]) * self.steps_per_epoch

    def enter_stage(self, stage: int, start: bool = True) -> None:
        """Build ``stage``'s optimizers; ``start``: it begins now (``on_stage_start`` runs)."""
        if start:
            self.backbone.on_stage_start(self.module, self.stages[stage])
        self.stage = stage
        self.optimizers = build_optimizers(self.stages[stage].param_groups, self.optim)

    def schedule_point(self) -> tuple[float, float | None]:
        """(learning-rate factor, Adam β1 or None) of the stage's current step."""
        p = self.optim
        step = self.global_step - self.stage_first_step(self.stage)
        args = (step, self.stage_epochs[self.stage] * self.steps_per_epoch, p.warmup_steps, p.schedule,
                self.steps_per_epoch)
        return lr_factor(*args), adam_beta1(*args)

    # -- checkpoints -----------------------------------------------------------------------------
    def checkpoint(self, next_epoch: int, next_step: int) -> None:
        state = {
            "epoch": next_epoch,
            "next_step": next_step,
            "global_step": self.global_step,
            "epoch_loss": self.epoch_loss,
            "epoch_steps": self.epoch_steps,
            "stage": self.stage,
            "optimizers": [opt.state_dict() for _, opt, _ in self.optimizers],
            "scaler": self.amp.scaler.state_dict(),
            "backbone": self.backbone.extra_state(self.module),
        }
        env = self.env
        save_checkpoint(
            self.run_dir, self.module, state, env.rank, env.world_size, env.barrier,
            keep=self.keep_checkpoints,
        )
        shares = self.backbone.shortlist_shares()
        if shares is not None and env.is_main:
            from lever.utils.atomic import write_json_atomic

            write_json_atomic(self.run_dir / shortlists_file(self.backbone.name), {"levels": shares})

    def resume(self, ckpt: Path) -> None:
        env = self.env
        state = load_checkpoint(ckpt, self.module, env.rank, self.device)
        if int(state["world_size"]) != env.world_size:
            raise RuntimeError(
                f"{ckpt}: saved with {state['world_size']} processes, resumed with "
                f"{env.world_size}; the global batch would change, so resume with the same number "
                "of processes"
            )
        self.backbone.load_extra_state(self.module, state.get("backbone", {}))
        self.enter_stage(int(state.get("stage", 0)), start=False)
        for (_, opt, _), saved in zip(self.optimizers, state["optimizers"]):
            opt.load_state_dict(saved)
        self.amp.scaler.load_state_dict(state["scaler"])
        self.epoch, self.start_step = int(state["epoch"]), int(state["next_step"])
        self.global_step = int(state["global_step"])
        self.epoch_loss, self.epoch_steps = float(state["epoch_loss"]), int(state["epoch_steps"])
        if env.is_main:
            _drop_records_after(self.run_dir / "metrics.jsonl", self.epoch)
        if self.show:
            print(f"resuming {self.run_dir} from {ckpt.name} (epoch {self.epoch + 1}, step {self.start_step})")

    # -- the loop --------------------------------------------------------------------------------
    def run_epochs(self, stop_after_epochs: int | None) -> bool:
        """Train to the last epoch (True) or stop after ``stop_after_epochs`` of them (False)."""
        done_here = 0
        while self.epoch < self.optim.epochs:
            self.run_epoch()
            done_here += 1
            if stop_after_epochs is not None and done_here >= stop_after_epochs:
                return self.epoch >= self.optim.epochs
        return True

    def run_epoch(self) -> None:
        p, epoch = self.params.run, self.epoch
        if self.stage_of(epoch) != self.stage:
            self.enter_stage(self.stage_of(epoch))
        t_epoch = time.time()
        self.module.train()
        if self.start_step == 0:  # resumed inside the epoch: its start is in extra_state
            self.backbone.on_epoch_start(self.module, epoch)
        bar = tqdm(total=self.steps_per_epoch, initial=self.start_step,
                   desc=f"epoch {epoch + 1}/{self.optim.epochs}", disable=not self.show, leave=False)
        for step, micro in self.epoch_batches(epoch, self.start_step):
            self.optimizer_step(micro)
            bar.update(1)
            bar.set_postfix(loss=f"{self.epoch_loss / self.epoch_steps:.4g}")
            if (
                p.checkpoint_every_steps
                and self.global_step % p.checkpoint_every_steps == 0
                and step + 1 < self.steps_per_epoch
            ):
                self.checkpoint(epoch, step + 1)
        bar.close()
        self.end_epoch(time.time() - t_epoch)

    def optimizer_step(self, micro) -> None:
        """This process's micro-batches of one step, gradients summed over processes, one step of
        every optimizer of the stage at ``base lr × schedule``."""
        p, amp, env = self.optim, self.amp, self.env
        for _, opt, _ in self.optimizers:
            opt.zero_grad(set_to_none=True)
        step_loss = 0.0
        for batch in micro:
            # A model-parallel step runs collectives: every rank joins, even with no rows.
            if len(batch) or self.backbone.collective_step:
                step_loss += self.backbone.forward_backward(
                    self.module, to_device(batch, self.device), amp
                )
        sum_gradients(self.trainable, env)
        factor, beta1 = self.schedule_point()
        for _, opt, base in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = base * factor
                if beta1 is not None and "betas" in group:
                    group["betas"] = (beta1, group["betas"][1])
        if p.max_grad_norm > 0:
            for _, opt, _ in self.optimizers:
                amp.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(self.trainable, p.max_grad_norm)
        for _, opt, _ in self.optimizers:
            amp.scaler.step(opt)
        amp.scaler.update()
        self.global_step += 1
        self.epoch_loss += all_reduce_sum(step_loss, env, self.device)
        self.epoch_steps += 1
        self.backbone.on_step_end(self.module, self.global_step)

    def end_epoch(self, seconds: float) -> None:
        """Log (and every ``eval_every`` epochs evaluate) the epoch, then checkpoint."""
        epoch = self.epoch
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "global_step": self.global_step,
            "loss": self.epoch_loss / max(1, self.epoch_steps),
            "lr": {name: opt.param_groups[0]["lr"] for name, opt, _ in self.optimizers},
            "seconds": round(seconds, 3),
        }
        test = self.evaluate_epoch(epoch)
        if test is not None:
            record["test"] = test
        self.backbone.on_epoch_end(self.module, epoch, record)
        if self.env.is_main:
            _append_jsonl(self.run_dir / "metrics.jsonl", record)
            if self.show:
                test = record.get("test", {})
                shown = " ".join(
                    f"{k} {test[k]:.2f}" for k in ("P@1", "P@5", "PSP@1", "PSP@5", "C@5") if k in test
                )
                tqdm.write(f"epoch {epoch + 1}: loss {record['loss']:.5g} {shown}")
        self.epoch += 1
        self.start_step, self.epoch_loss, self.epoch_steps = 0, 0.0, 0
        if self.epoch % self.checkpoint_every_epochs == 0 or self.epoch >= self.optim.epochs:
            self.checkpoint(self.epoch, 0)


def _finish(
    run_dir: Path, backbone, module, dataset, params: TrainParams, device, env: DistEnv, show: bool
):
    """Rank 0 writes ``model.safetensors`` (the backbone's ``export_state_dict``, which every rank
    calls) and the final test metrics ``metrics.json``."""
    from safetensors.torch import save_file

    from lever.utils.atomic import atomic_path, write_json_atomic

    state = backbone.export_state_dict(module)
    metrics = _last_test_metrics(run_dir / "metrics.jsonl", params.optim.epochs) if env.is_main else None
    if env.is_main:
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
        with atomic_path(run_dir / "model.safetensors") as tmp:
            save_file(tensors, str(tmp), metadata={"backbone": params.backbone})
    # Normally the last epoch's evaluation is in the log; otherwise (log removed) redo it.
    redo = all_reduce_sum(1.0 if env.is_main and metrics is None else 0.0, env, device) > 0
    if redo:
        metrics = evaluate_module(backbone, module, dataset, params.run.eval_k, device, show, env)
    if env.is_main:
        write_json_atomic(run_dir / "metrics.json", metrics)
    env.barrier()
    return metrics


def _last_test_metrics(log_file: Path, epoch: int) -> dict[str, float] | None:
    if not log_file.exists():
        return None
    found = None
    for line in log_file.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if rec.get("epoch") == epoch and "test" in rec:
            found = rec["test"]
    return found


def load_trained(
    run_dir: str | Path,
    data_dir: str | Path | None = None,
    device: str = "auto",
    plugin_manager=None,
):
    """``(backbone, module, params, dataset)`` of a finished run, for prediction."""
    from safetensors.torch import load_file

    from lever.data import XCDataset

    run_dir = Path(run_dir)
    config = run_dir / "config.json"
    weights = run_dir / "model.safetensors"
    if not config.exists():
        raise FileNotFoundError(f"{config}: not a run folder of lever train (no config.json)")
    if not weights.exists():
        raise FileNotFoundError(f"{weights}: the run has not finished (no final model)")
    params = TrainParams.load(config)
    dataset = XCDataset.load(data_dir or params.data)
    plugin_manager = plugin_manager or get_plugin_manager()
    env = DistEnv()
    dev = resolve_device(device, env)
    backbone = make_backbone(params, plugin_manager)
    cache_dir = Path(params.run.cache_dir) if params.run.cache_dir else run_dir / "cache"
    module = backbone.build(
        BuildContext(
            dataset, None, params, dev, env, cache_dir, scoped_hooks(plugin_manager, params.backbone)
        )
    ).to(dev)
    try:
        module.load_state_dict(load_file(str(weights), device=str(dev)), strict=True)
    except RuntimeError as e:
        raise RuntimeError(
            f"{weights}: does not fit the backbone built for {dataset.root}: {e}"
        ) from None
    module.eval()
    return backbone, module, params, dataset


__all__ = ["TrainResult", "Trainer", "evaluate_module", "load_train_rows", "load_trained", "train"]
