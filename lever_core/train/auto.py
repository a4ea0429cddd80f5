"""``lever train --lam auto``: choose how much teacher each label gets, on a validation split.

LEVER helps exactly where the teacher beats the student on the tail, and hurts where it does
not (paper Tables 11 and 15). Whether it does is a property of the dataset, the teacher and the
student, so it is measured, not assumed:

1. A seeded validation split is cut from the training documents (``RUN/auto/split.json``) and a
   *validation dataset* is written (``RUN/auto/data``: train = the rest, test = the split), with
   the teacher's embeddings, and any frozen-embedding folder the backbone reads, sliced to match.
   The validation documents never reach a training row, a soft label or a feature fit of a cell.
2. Grid cells are ordinary ``lever train`` runs on that dataset (``RUN/auto/cells/NAME``), each
   resumable. The search is by coordinates: the plain student (``baseline``); then the weight of
   the ground truth (the paper's constant λ, and per-label ``λ_l = n_l / (n_l + κ)``); then the
   teacher's document top-ups τ_d; then the calibration, each stage starting from the best cell
   so far.
3. The objective: the highest PSP@5 among cells whose P@5 is at most ``max_p5_drop`` below the
   baseline's. The baseline itself is always admissible, so when no LEVER cell qualifies the run
   trains *without* the teacher and says so: ``--lam auto`` never silently hurts.
4. The choice (``RUN/auto/choice.json``) and the grid (``RUN/auto/grid.json``) are saved; the
   final model is trained on the full training data in ``RUN`` with the chosen settings. A rerun
   reuses every finished cell and the saved choice, so it resumes to the same result.

The teacher must not have seen the validation documents either: a teacher trained on them makes
teacher-heavy cells look better on validation than they are (measured on FOLDOC with the frozen
teacher, λ 0.5: +4.2 P@5 over the baseline on validation, +1.8 on test). So by default a frozen
teacher (minutes on a CPU) is *refit*: a copy with the same ``TeacherParams`` (its folder's
``config.json``), trained on the validation dataset's training split (``RUN/auto/teacher``,
resumable), gives every cell's soft labels; the final model's come from the teacher given. A
fine-tuned teacher (a GPU run) is used as given, with a warning, unless
``teacher_refit=true``. A zero-shot teacher saw no training document: nothing to refit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from lever.utils.params import Params, ParamsError

SELECTION_METRIC = "PSP@5"
GUARD_METRIC = "P@5"


@dataclasses.dataclass
class AutoParams(Params):
    """Settings of the ``--lam auto`` search (``TrainParams.lever.auto``).

    ``teacher``: teacher folder whose embeddings rebuild the soft labels (None: the one recorded
    in the ``--soft-labels`` file); ``val_fraction`` / ``val_max_docs``: size of the validation
    split cut from the training documents; ``epochs``: epochs of each cell (None: the run's);
    ``max_p5_drop``: the largest P@5 loss (points) a chosen cell may have against the baseline;
    ``lams`` / ``kappas``: constant λ values and per-label κ values of stage 1; ``tau_d`` and
    ``calibrations``: the values stages 2 and 3 add to the given soft labels' own;
    ``teacher_refit``: retrain the teacher without the validation documents for the cells' soft
    labels (None: when it is of kind ``frozen``, which costs minutes on a CPU; a fine-tuned
    teacher costs a GPU run, so it is refit only when this is True, and otherwise used as given
    with a warning that validation flatters it).
    """

    teacher: str | None = None
    teacher_refit: bool | None = None
    val_fraction: float = 0.1
    val_max_docs: int = 5000
    epochs: int | None = None
    max_p5_drop: float = 0.3
    lams: list[float] = dataclasses.field(default_factory=lambda: [0.5])
    kappas: list[float] = dataclasses.field(default_factory=lambda: [1.0, 4.0, 16.0])
    tau_d: list[int] = dataclasses.field(default_factory=lambda: [5, 15])
    calibrations: list[str] = dataclasses.field(default_factory=lambda: ["platt"])

    def validate(self, where: str = "TrainParams.lever.auto") -> AutoParams:
        checks = [
            (0.0 < self.val_fraction < 1.0, "val_fraction", "a fraction in (0, 1)"),
            (self.val_max_docs >= 1, "val_max_docs", ">= 1"),
            (self.epochs is None or self.epochs >= 1, "epochs", "None or >= 1"),
            (self.max_p5_drop >= 0, "max_p5_drop", ">= 0"),
            (self.teacher_refit in (None, True, False), "teacher_refit", "true, false or null"),
            (all(0.0 <= x <= 1.0 for x in self.lams), "lams", "values in [0, 1]"),
            (all(x >= 0 for x in self.kappas), "kappas", "values >= 0"),
            (all(x >= 0 for x in self.tau_d), "tau_d", "values >= 0"),
            (bool(self.lams or self.kappas), "lams", "at least one λ or κ between lams and kappas"),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise ParamsError(f"{where}.{name}={getattr(self, name)!r}: expected {expected}")
        return self


@dataclasses.dataclass
class Cell:
    """One point of the grid: how the student's targets are formed."""

    name: str
    stage: str
    lam: float | None = None  # constant λ, or None with kappa, or None for the baseline
    kappa: float | None = None
    soft: dict[str, Any] | None = None  # SoftLabelParams overrides; None: no teacher at all
    metrics: dict[str, float] | None = None
    seconds: float | None = None

    @property
    def uses_teacher(self) -> bool:
        return self.soft is not None


# ---------------------------------------------------------------------------------------------
# The validation split and dataset
# ---------------------------------------------------------------------------------------------
def validation_rows(num_train: int, fraction: float, max_docs: int, seed: int) -> np.ndarray:
    """Sorted ids of the training documents held out for validation (seeded)."""
    n_val = int(min(max_docs, max(1, round(fraction * num_train))))
    if n_val >= num_train:
        raise ValueError(f"validation split of {n_val} documents leaves none of {num_train} to train on")
    perm = np.random.default_rng([int(seed), 7919]).permutation(num_train)
    return np.sort(perm[:n_val])


def write_validation_dataset(dataset, val_rows: np.ndarray, out: Path) -> Path:
    """The dataset whose train split is ``dataset``'s minus ``val_rows`` and whose test split is
    ``val_rows`` (their training filter pairs become the test filter)."""
    from lever.data.dataset import DatasetMeta, write_dataset

    keep = np.setdiff1d(np.arange(dataset.num_train), val_rows)
    trn_filter = dataset.trn_filter
    meta = DatasetMeta.from_dict({**dataset.meta.to_dict(), "name": f"{dataset.name}-validation"})
    texts = dataset.trn_texts
    return write_dataset(
        out,
        trn_texts=[texts[i] for i in keep],
        tst_texts=[texts[i] for i in val_rows],
        lbl_texts=dataset.lbl_texts,
        trn_Y=dataset.trn_Y[keep],
        tst_Y=dataset.trn_Y[val_rows],
        meta=meta,
        trn_filter=None if trn_filter is None else trn_filter[keep],
        tst_filter=None if trn_filter is None else trn_filter[val_rows],
        trn_X_bow=None if dataset.trn_X_bow is None else dataset.trn_X_bow[keep],
        tst_X_bow=None if dataset.trn_X_bow is None else dataset.trn_X_bow[val_rows],
    )


def is_embedding_folder(value: Any) -> bool:
    return isinstance(value, str) and (Path(value) / "embeddings" / "meta.json").is_file()


def slice_embedding_folder(src: str | Path, val_rows: np.ndarray, val_dataset, out: Path) -> Path:
    """A teacher-style folder for the validation dataset: ``trn`` rows without ``val_rows``,
    ``tst`` = the ``val_rows`` of ``trn``, ``lbl`` unchanged; recorded against its fingerprint."""
    from lever.utils.atomic import atomic_path, write_json_atomic

    src = Path(src)
    meta = json.loads((src / "embeddings" / "meta.json").read_text(encoding="utf-8"))
    if (out / "embeddings" / "meta.json").is_file():
        return out
    trn = np.load(src / "embeddings" / "trn.npy", mmap_mode="r")
    lbl = np.load(src / "embeddings" / "lbl.npy", mmap_mode="r")
    keep = np.setdiff1d(np.arange(trn.shape[0]), val_rows)
    fp = val_dataset.fingerprint()
    for split, rows in (("trn", np.asarray(trn[keep])), ("tst", np.asarray(trn[val_rows])), ("lbl", lbl)):
        with atomic_path(out / "embeddings" / f"{split}.npy", suffix=".npy") as tmp:
            np.save(tmp, np.ascontiguousarray(rows, dtype=np.float32))
    config = {"kind": "validation-slice", "source": str(src), "dataset_fingerprint": fp}
    write_json_atomic(out / "config.json", config)
    rows = {"trn": int(keep.size), "tst": int(val_rows.size), "lbl": int(lbl.shape[0])}
    write_json_atomic(out / "embeddings" / "meta.json", {**meta, "fingerprint": fp, "rows": rows})
    return out


def _remap_embedding_folders(value: Any, remap) -> Any:
    """Backbone settings with every frozen-embedding folder replaced by ``remap(folder)``."""
    if isinstance(value, dict):
        return {k: _remap_embedding_folders(v, remap) for k, v in value.items()}
    return remap(value) if is_embedding_folder(value) else value


# ---------------------------------------------------------------------------------------------
# Soft labels per cell
# ---------------------------------------------------------------------------------------------
def soft_label_key(soft: dict[str, Any]) -> str:
    return "_".join(f"{k}-{soft[k]}" for k in sorted(soft))


def build_soft_file(dataset, teacher_dir: Path, base: dict[str, Any], soft: dict[str, Any], out: Path) -> Path:
    """Soft labels of ``dataset`` from ``teacher_dir`` with ``base`` params updated by ``soft``."""
    from lever.soft_labels.build import SoftLabelParams, build_soft_labels
    from lever.soft_labels.teacher_embeddings import check_teacher_dataset, load_teacher_embeddings

    if out.exists():
        return out
    params = SoftLabelParams.from_dict({**base, **soft}, source="auto soft-label params").validate()
    check_teacher_dataset(teacher_dir, dataset.fingerprint(), f"dataset {dataset.root}")
    emb = load_teacher_embeddings(teacher_dir, {"trn": dataset.num_train, "lbl": dataset.num_labels})
    labels, report = build_soft_labels(
        dataset.trn_Y, emb["trn"], emb["lbl"], params,
        meta={"dataset": dataset.name, "dataset_fingerprint": dataset.fingerprint(),
              "teacher": {"path": str(teacher_dir)}},
    )
    labels.meta["timings"] = report["timings"]
    labels.save(out)
    return out


def base_soft_params(params) -> tuple[Path, dict[str, Any]]:
    """The teacher folder and the soft-label params the search starts from."""
    from lever.soft_labels import SoftLabels
    from lever.soft_labels.build import SoftLabelParams

    base: dict[str, Any] = SoftLabelParams().to_dict()
    lever = params.lever
    teacher = lever.auto.teacher
    if lever.soft_labels:
        meta = SoftLabels.load(lever.soft_labels).meta
        base.update(meta.get("params") or {})
        teacher = teacher or (meta.get("teacher") or {}).get("path")
    if not teacher:
        raise ParamsError(
            "--lam auto needs the teacher: give --soft-labels built by `lever soft-labels build` "
            "(it records its teacher) or --auto-teacher T"
        )
    if not is_embedding_folder(teacher):
        raise ParamsError(f"--lam auto: teacher folder {teacher} has no embeddings/meta.json")
    return Path(teacher), base


# ---------------------------------------------------------------------------------------------
# The teacher of the cells
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class TeacherPlan:
    """How the cells get a teacher that has not seen the validation documents, if they can."""

    kind: str  # the teacher folder's kind (lever.teacher.folder)
    refit: Any = None  # TeacherParams to retrain with, or None: use the given teacher's embeddings
    saw_validation: bool = False  # the teacher the cells use was trained on validation documents

    def warning(self, teacher: Path, n_val: int) -> str | None:
        if not self.saw_validation:
            return None
        how = ("set --auto teacher_refit=true to retrain it without them (a GPU run for a "
               "fine-tuned teacher)" if self.kind in ("finetune", "frozen") else
               "give a teacher trained without them (--auto teacher=T) to avoid this")
        return (f"[lam auto] WARNING: the teacher {teacher} (kind {self.kind}) was trained on all "
                f"training documents, the {n_val} validation documents included, so validation "
                "favours teacher-heavy cells (FOLDOC, λ 0.5: +4.2 P@5 over the baseline on "
                f"validation, +1.8 on test); {how}")


def teacher_plan(teacher: Path, refit: bool | None) -> TeacherPlan:
    """Refit a frozen teacher by default, any trained one when ``refit`` is True; warn otherwise."""
    from lever.soft_labels.teacher_embeddings import ZERO_SHOT, TeacherFolderError
    from lever.teacher.folder import EMBEDDINGS_ONLY, TeacherFolder

    try:
        folder = TeacherFolder.read(teacher)
    except TeacherFolderError as e:
        if refit:
            raise ParamsError(f"TrainParams.lever.auto.teacher_refit=True: {e}") from None
        return TeacherPlan("unreadable config", saw_validation=True)
    if folder.kind == ZERO_SHOT:
        return TeacherPlan(folder.kind)  # an untrained encoder: no training document seen
    if folder.kind == EMBEDDINGS_ONLY:
        if refit:
            raise ParamsError(
                f"TrainParams.lever.auto.teacher_refit=True: teacher folder {teacher} has no "
                "config.json with the TeacherParams to retrain it with"
            )
        return TeacherPlan(folder.kind, saw_validation=True)
    if refit or (refit is None and folder.kind == "frozen"):
        return TeacherPlan(folder.kind, refit=folder.params)
    return TeacherPlan(folder.kind, saw_validation=True)


def refit_teacher(params, val_dataset, out: Path, cache_dir: Path, source: Path, progress: bool) -> Path:
    """The teacher of ``params`` trained on ``val_dataset`` (the training documents minus the
    validation ones) into ``out``; resumes from its last checkpoint, done once exported."""
    from lever.teacher.train import train_teacher
    from lever.train.checkpoint import latest_checkpoint
    from lever.utils.atomic import write_json_atomic

    meta = out / "embeddings" / "meta.json"
    if meta.is_file() and json.loads(meta.read_text())["fingerprint"] == val_dataset.fingerprint():
        return out
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "refit.json", {"source": str(source), "data": str(val_dataset.root),
                                            "dataset_fingerprint": val_dataset.fingerprint()})
    if progress:
        print(f"[lam auto] refitting the teacher without the validation documents: {out}",
              file=sys.stderr, flush=True)
    # The cache holds encoder features only (a run-control setting, free to change on resume).
    params = dataclasses.replace(params, cache_dir=str(cache_dir))
    train_teacher(val_dataset, params, out, resume=latest_checkpoint(out) is not None, progress=progress)
    return out


# ---------------------------------------------------------------------------------------------
# The search
# ---------------------------------------------------------------------------------------------
def admissible(cell: Cell, baseline: Cell, max_drop: float) -> bool:
    return cell.metrics[GUARD_METRIC] >= baseline.metrics[GUARD_METRIC] - max_drop


def best_cell(cells: list[Cell], baseline: Cell, max_drop: float) -> Cell:
    """Highest PSP@5 among admissible cells (ties: the earlier cell, the baseline first)."""
    ok = [c for c in cells if admissible(c, baseline, max_drop)]
    return max(ok, key=lambda c: c.metrics[SELECTION_METRIC])


class AutoSearch:
    """Runs the grid for one ``lever train --lam auto`` run folder."""

    def __init__(self, params, progress: bool = True):
        from lever.data import XCDataset

        self.params, self.progress = params, progress
        self.auto = params.lever.auto
        self.root = Path(params.out) / "auto"
        self.dataset = XCDataset.load(params.data)
        self.teacher, self.base_soft = base_soft_params(params)

    # -- files ----------------------------------------------------------------------------------
    def prepare(self) -> None:
        """The split, the validation dataset, the cells' teacher (refit, or the given one sliced)
        and the sliced embedding folders (idempotent)."""
        from lever.data import XCDataset
        from lever.utils.atomic import write_json_atomic

        split_file = self.root / "split.json"
        if split_file.exists():
            self.val_rows = np.asarray(json.loads(split_file.read_text())["val_rows"], dtype=np.int64)
        else:
            self.val_rows = validation_rows(
                self.dataset.num_train, self.auto.val_fraction, self.auto.val_max_docs,
                self.params.run.seed,
            )
            write_json_atomic(split_file, {"seed": self.params.run.seed, "val_rows": self.val_rows.tolist()})
        data_dir = self.root / "data"
        if not (data_dir / "lever_meta.json").exists():
            write_validation_dataset(self.dataset, self.val_rows, data_dir)
        self.val_dataset = XCDataset.load(data_dir)
        self.plan = teacher_plan(self.teacher, self.auto.teacher_refit)
        refit_dir = self.root / "teacher"
        self._check_cells_teacher(refit_dir if self.plan.refit is not None else None)
        if self.plan.refit is not None:
            self.val_teacher = refit_teacher(
                self.plan.refit, self.val_dataset, refit_dir, self.root / "cache", self.teacher,
                self.progress,
            )
        else:
            self.val_teacher = self._sliced(self.teacher)

    def _check_cells_teacher(self, refit_dir: Path | None) -> None:
        """Finished cells and soft labels are reused, so a rerun must use the same teacher."""
        from lever.utils.atomic import write_json_atomic

        record = {"teacher": str(self.teacher.resolve()), "refit": refit_dir is not None}
        file = self.root / "teacher.json"
        if file.exists() and json.loads(file.read_text()) != record:
            raise ParamsError(
                f"{file}: the search in {self.root} used {json.loads(file.read_text())}, this run "
                f"would use {record}; train into a new --out (or delete {self.root})"
            )
        write_json_atomic(file, record)

    def _sliced(self, folder: str | Path) -> Path:
        tag = hashlib.sha256(str(Path(folder).resolve()).encode()).hexdigest()[:10]
        out = self.root / "embeddings" / f"{Path(folder).name}-{tag}"
        return slice_embedding_folder(folder, self.val_rows, self.val_dataset, out)

    # -- cells ----------------------------------------------------------------------------------
    def cell_params(self, cell: Cell):
        p = self.params
        soft_file = None
        if cell.uses_teacher:
            key = soft_label_key(cell.soft)
            soft_file = str(build_soft_file(
                self.val_dataset, self.val_teacher, self.base_soft, cell.soft,
                self.root / "soft" / f"{key}.npz",
            ))
        backbone_params = _remap_embedding_folders(p.backbone_params, lambda f: str(self._sliced(f)))
        epochs = self.auto.epochs or p.optim.epochs
        return dataclasses.replace(
            p,
            data=str(self.root / "data"),
            out=str(self.root / "cells" / cell.name),
            backbone_params=backbone_params,
            lever=dataclasses.replace(
                p.lever,
                soft_labels=soft_file,
                lam=0.5 if cell.lam is None else cell.lam,
                kappa=cell.kappa,
                label_rows=p.lever.label_rows if cell.uses_teacher else False,
            ),
            optim=dataclasses.replace(p.optim, epochs=epochs),
            run=dataclasses.replace(p.run, eval_every=epochs, cache_dir=str(self.root / "cache")),
        )

    def run_cell(self, cell: Cell) -> Cell:
        from lever.train.loop import train

        cp = self.cell_params(cell)
        done = Path(cp.out) / "metrics.json"
        t0 = time.time()
        if not done.exists():
            if self.progress:
                print(f"[lam auto] cell {cell.name}", file=sys.stderr, flush=True)
            train(cp, progress=self.progress)
        cell.metrics = json.loads(done.read_text())
        cell.seconds = _seconds_of(Path(cp.out)) or round(time.time() - t0, 1)
        if self.progress:
            m = cell.metrics
            print(f"[lam auto] {cell.name}: P@5 {m['P@5']:.2f} PSP@5 {m['PSP@5']:.2f} C@5 {m['C@5']:.2f}",
                  file=sys.stderr, flush=True)
        return cell

    def search(self) -> dict[str, Any]:
        """Run (or reload) the grid and return the choice; writes grid.json and choice.json."""
        from lever.utils.atomic import write_json_atomic

        choice_file = self.root / "choice.json"
        if choice_file.exists():
            return json.loads(choice_file.read_text())
        self.prepare()
        warning = self.plan.warning(self.teacher, int(self.val_rows.size))
        if warning:
            print(warning, file=sys.stderr, flush=True)
        max_drop = self.auto.max_p5_drop
        base_soft = {"tau_l": int(self.base_soft["tau_l"]), "tau_d": int(self.base_soft["tau_d"]),
                     "calibration": self.base_soft["calibration"]}
        baseline = self.run_cell(Cell("baseline", "baseline"))
        cells = [baseline]
        stage1 = [Cell(f"lam{x:g}", "lambda", lam=x, soft=dict(base_soft)) for x in self.auto.lams]
        stage1 += [Cell(f"kappa{x:g}", "lambda", kappa=x, soft=dict(base_soft)) for x in self.auto.kappas]
        cells += [self.run_cell(c) for c in stage1]
        best = best_cell(cells, baseline, max_drop)
        for stage, field, values in (("tau_d", "tau_d", self.auto.tau_d),
                                     ("calibration", "calibration", self.auto.calibrations)):
            if not best.uses_teacher:
                break  # no teacher setting beat the guard: nothing to refine
            for value in values:
                if value == best.soft[field]:
                    continue
                soft = {**best.soft, field: value}
                form = f"lam{best.lam:g}" if best.kappa is None else f"kappa{best.kappa:g}"
                name = f"{form}_{field}{value}"
                cells.append(self.run_cell(Cell(name, stage, best.lam, best.kappa, soft)))
            best = best_cell(cells, baseline, max_drop)
        grid = [dataclasses.asdict(c) for c in cells]
        write_json_atomic(self.root / "grid.json", grid)
        choice = {
            "cell": best.name,
            "lam": best.lam,
            "kappa": best.kappa,
            "soft": best.soft,
            "uses_teacher": best.uses_teacher,
            "validation": best.metrics,
            "baseline_validation": baseline.metrics,
            "objective": f"highest {SELECTION_METRIC} with {GUARD_METRIC} >= baseline - {max_drop}",
            "val_docs": int(self.val_rows.size),
            "teacher": {"given": str(self.teacher), "kind": self.plan.kind,
                        "cells": str(self.val_teacher), "saw_validation": self.plan.saw_validation},
        }
        write_json_atomic(choice_file, choice)
        return choice

    def final_params(self, choice: dict[str, Any]):
        """The run's parameters with the chosen settings (soft labels built on the full data)."""
        p = self.params
        if not choice["uses_teacher"]:
            lever = dataclasses.replace(p.lever, lam=0.5, kappa=None, soft_labels=None, label_rows=False)
            return dataclasses.replace(p, lever=lever)
        soft = choice["soft"]
        given = {k: self.base_soft[k] for k in soft}
        if p.lever.soft_labels and given == soft:
            soft_file = p.lever.soft_labels
        else:
            soft_file = str(build_soft_file(
                self.dataset, self.teacher, self.base_soft, soft,
                self.root / "soft_full" / f"{soft_label_key(soft)}.npz",
            ))
        lam = 0.5 if choice["lam"] is None else choice["lam"]
        lever = dataclasses.replace(p.lever, lam=lam, kappa=choice["kappa"], soft_labels=soft_file)
        return dataclasses.replace(p, lever=lever)


def _seconds_of(run_dir: Path) -> float | None:
    log = run_dir / "metrics.jsonl"
    if not log.exists():
        return None
    return round(sum(json.loads(line).get("seconds", 0.0) for line in log.read_text().splitlines()), 1)


def resolve_auto(params, progress: bool = True):
    """For ``lam == "auto"``: run or reload the search and return ``(final params, choice)``."""
    import os

    search = AutoSearch(params, progress)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not (search.root / "choice.json").exists():
        raise RuntimeError(
            f"--lam auto under torchrun: run the same command once with one process first (it "
            f"writes {search.root / 'choice.json'}), then rerun under torchrun to train the final model"
        )
    choice = search.search()
    if progress:
        what = (f"λ = {choice['lam']}" if choice["kappa"] is None else f"κ = {choice['kappa']}")
        if choice["uses_teacher"]:
            print(f"[lam auto] chose {choice['cell']}: {what}, soft labels {choice['soft']}", file=sys.stderr)
        else:
            print("[lam auto] no LEVER setting kept P@5 within "
                  f"{params.lever.auto.max_p5_drop} of the plain student on validation: training WITHOUT the "
                  "teacher (a stronger teacher, or `lever soft-labels diagnose`, may change that)",
                  file=sys.stderr)
    return search.final_params(choice), choice
