"""The shipped dataset configs (``lever/reproduce/configs/*.json``) and dataset detection.

A config names one dataset: its published statistics (paper Table 3), propensity A/B (§2.3 of our
notes), the teacher preset (Table 16), τ (Table 22), λ and, per backbone, the cell's training
settings (a partial :class:`lever.train.TrainParams`; Tables 17–19) with the published results
(Tables 1/5) as expectations. A value the paper does not publish is null, with a note.

Detection never trusts a folder name: an XC-repository folder (no ``lever_meta.json``) is matched
by its counts (train documents, test documents, labels, read from the label files' headers)
against the published statistics; a ``lever_meta.json`` ``name`` must name a config *and* agree
with its counts; a built-in dataset is matched by the ``builder`` its ``lever_meta.json`` records.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from lever.utils.params import Params, ParamsError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
BACKBONES = ("renee", "elias", "cascadexml")
METRIC_KEYS = tuple(f"{m}@{k}" for m in ("P", "PSP", "C") for k in (1, 3, 5))


@dataclasses.dataclass
class Statistics(Params):
    """Published dataset statistics (null: not published)."""

    train_docs: int | None = None
    test_docs: int | None = None
    labels: int | None = None
    avg_labels_per_doc: float | None = None
    avg_docs_per_label: float | None = None
    pos80: float | None = None
    source: str = ""
    note: str = ""

    def counts(self) -> tuple[int, int, int] | None:
        c = (self.train_docs, self.test_docs, self.labels)
        return None if None in c else c  # type: ignore[return-value]


@dataclasses.dataclass
class Propensity(Params):
    """Jain et al. A/B for PSP@k (null: the dataset's own ``lever_meta.json``)."""

    a: float | None = None
    b: float | None = None
    source: str = ""


@dataclasses.dataclass
class TeacherSpec(Params):
    """The teacher preset of ``lever.teacher.params.PRESETS`` (paper Table 16; used on a GPU)."""

    preset: str | None = None
    source: str = ""
    note: str = ""


@dataclasses.dataclass
class SoftLabelSpec(Params):
    """τ = τ_l + τ_d (paper Table 22; null: :class:`lever.soft_labels.build.SoftLabelParams` defaults)."""

    tau_l: int | None = None
    tau_d: int | None = None
    source: str = ""
    note: str = ""


@dataclasses.dataclass
class Cell(Params):
    """One backbone on one dataset: its ``lever train`` settings under ``--preset paper`` (a
    partial TrainParams dict without data/out/lever), notes, and the published base / +LEVER
    rows (``{"source", "base": {P@1..C@5}, "lever": {...}}``, or null)."""

    train: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    published: dict[str, Any] | None = None


@dataclasses.dataclass
class DatasetConfig(Params):
    """One shipped config (``configs/<name>.json``)."""

    name: str = ""
    kind: str = "paper"  # paper | builtin
    builder: str | None = None  # builtin: lever_meta.json extra.builder
    statistics: Statistics = dataclasses.field(default_factory=Statistics)
    propensity: Propensity = dataclasses.field(default_factory=Propensity)
    teacher: TeacherSpec = dataclasses.field(default_factory=TeacherSpec)
    soft_labels: SoftLabelSpec = dataclasses.field(default_factory=SoftLabelSpec)
    lam: float = 0.5
    lam_source: str = ""
    cells: dict[str, Cell] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "<dict>") -> DatasetConfig:
        d = dict(d)
        cells = d.pop("cells", {})
        if not isinstance(cells, dict):
            raise ParamsError(f"{source}.cells: expected an object of backbone -> cell")
        config = super().from_dict(d, source=source)
        config.cells = {b: Cell.from_dict(c, source=f"{source}.cells.{b}") for b, c in cells.items()}
        return config

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["cells"] = {b: c.to_dict() for b, c in self.cells.items()}
        return out

    def validate(self, source: str = "") -> DatasetConfig:
        """Check the config against the params classes it feeds: every cell's TrainParams and its
        backbone's own Params, the teacher preset, the soft-label settings, the published rows."""
        from lever.hooks.registry import get_backbone_class
        from lever.teacher.params import preset
        from lever.train.params import TrainParams

        where = source or f"config {self.name}"
        if self.kind not in ("paper", "builtin"):
            raise ParamsError(f"{where}.kind={self.kind!r}: expected 'paper' or 'builtin'")
        if self.kind == "builtin" and not self.builder:
            raise ParamsError(f"{where}.builder: a builtin config needs the lever_meta.json builder it matches")
        if self.teacher.preset is not None:
            preset(self.teacher.preset)
        self.soft_label_params().validate(f"{where}.soft_labels")
        for backbone, cell in self.cells.items():
            if backbone not in BACKBONES:
                raise ParamsError(f"{where}.cells: {backbone!r} is not one of {BACKBONES}")
            bad = sorted(set(cell.train) & {"data", "out", "backbone", "lever"})
            if bad:
                raise ParamsError(f"{where}.cells.{backbone}.train: {bad} are set by lever reproduce")
            params = TrainParams.from_dict(
                {**cell.train, "data": "-", "out": "-", "backbone": backbone},
                source=f"{where}.cells.{backbone}.train",
            ).validate()
            get_backbone_class(backbone)(params.backbone_params)  # the backbone's Params check
            for row in ("base", "lever") if cell.published else ():
                values = cell.published.get(row)
                if not isinstance(values, dict) or sorted(values) != sorted(METRIC_KEYS):
                    raise ParamsError(f"{where}.cells.{backbone}.published.{row}: expected {list(METRIC_KEYS)}")
        return self

    def soft_label_params(self, seed: int = 0):
        from lever.soft_labels.build import SoftLabelParams

        return SoftLabelParams().replace(tau_l=self.soft_labels.tau_l, tau_d=self.soft_labels.tau_d, seed=seed)


def config_names() -> list[str]:
    return sorted(json.loads(p.read_text(encoding="utf-8"))["name"] for p in CONFIG_DIR.glob("*.json"))


def load_config(name: str) -> DatasetConfig:
    """The shipped config called ``name`` (case-insensitive), validated."""
    path = CONFIG_DIR / f"{name.lower()}.json"
    if not path.exists():
        raise ValueError(f"--config {name!r}: no such config; expected one of {config_names()}")
    config = DatasetConfig.load(path)
    if config.name.lower() != name.lower():
        raise ParamsError(f"{path}: name {config.name!r} does not match the file name")
    return config.validate(str(path))


def all_configs() -> list[DatasetConfig]:
    return [load_config(name) for name in config_names()]


def folder_counts(folder: str | Path) -> tuple[int, int, int]:
    """(train documents, test documents, labels) from the label files' headers (``.txt``) or
    shapes (``.npz``), without loading the dataset."""
    import numpy as np

    from lever.data.dataset import LABEL_NAMES, _find
    from lever.data.formats import XCFormatError, _parse_header

    root = Path(folder)
    shapes = []
    for role in ("trn", "tst"):
        path = _find(root, LABEL_NAMES[role])
        if path is None:
            raise XCFormatError(root, f"missing label file: one of {LABEL_NAMES[role]}")
        if path.suffix == ".npz":
            with np.load(path) as z:
                shapes.append(tuple(int(x) for x in z["shape"]))
        else:
            with open(path, "rb") as f:
                shapes.append(tuple(_parse_header(path, f.readline(), ("num_rows", "num_cols"))))
    (n_trn, l_trn), (n_tst, l_tst) = shapes
    if l_trn != l_tst:
        raise XCFormatError(root, f"train and test label files disagree on the number of labels: {l_trn} vs {l_tst}")
    return n_trn, n_tst, l_trn


def detect_config(folder: str | Path, name: str | None = None) -> tuple[DatasetConfig, str]:
    """The config of the dataset in ``folder`` and how it was recognised (see the module
    docstring); ``name`` (``--config``) wins. A folder nothing matches is an error asking for
    ``--config NAME``."""
    from lever.data.dataset import META_FILE, DatasetMeta

    if name:
        return load_config(name), f"--config {name}"
    root = Path(folder)
    configs = all_configs()
    meta = DatasetMeta.load(root) if (root / META_FILE).exists() else None
    if meta is not None:
        builder = meta.extra.get("builder")
        for c in configs:
            if c.kind == "builtin" and builder and c.builder == builder:
                return c, f"{META_FILE} builder {builder!r}"
    counts = folder_counts(root)
    named = [c for c in configs if meta is not None and c.name.lower() == meta.name.lower()]
    matching = [c for c in configs if c.statistics.counts() == counts]
    shown = "train docs {:,}, test docs {:,}, labels {:,}".format(*counts)
    ask = f"pass --config NAME (one of {config_names()}) to use a config anyway"
    if named:
        c = named[0]
        if c.statistics.counts() not in (None, counts):
            raise ValueError(
                f"{root / META_FILE}: name {meta.name!r} names the config {c.name}, but the folder has "
                f"{shown} and the paper publishes " + "{:,} / {:,} / {:,}".format(*c.statistics.counts())
                + f" (a slice?); {ask}"
            )
        return c, f"{META_FILE} name {meta.name!r}" + (" and the published counts" if c in matching else "")
    if len(matching) == 1:
        return matching[0], f"counts ({shown}) = the published statistics of {matching[0].name}"
    if len(matching) > 1:
        raise ValueError(f"{root}: {shown} match several configs {[c.name for c in matching]}; {ask}")
    raise ValueError(
        f"{root}: no config recognises this dataset ({shown}; "
        f"{'lever_meta.json name ' + repr(meta.name) if meta else 'no lever_meta.json'}); {ask}"
    )
