"""Settings of one ``lever reproduce`` run (saved as ``OUT/reproduce.json``)."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from lever.utils.params import Params, ParamsError, field

PRESETS = ("paper", "cpu")
# --set STAGE.KEY=VALUE: the stages a key may address besides a backbone name.
OVERRIDE_STAGES = ("teacher", "soft_labels", "features", "all")


@dataclasses.dataclass
class ReproduceParams(Params):
    """What to reproduce and where. ``overrides`` (``--set STAGE.KEY=VALUE``, nested here as
    ``{stage: {key: value}}``) change a stage's settings: ``teacher`` (TeacherParams fields),
    ``soft_labels`` (SoftLabelParams), ``features`` (``encoder``, ``max_len`` of the frozen student
    features under ``--preset cpu``), a backbone name or ``all`` (TrainParams, dotted, e.g.
    ``renee.optim.epochs``)."""

    data: str = field("", help="dataset folder")
    backbones: list[str] = dataclasses.field(default_factory=lambda: ["renee", "elias", "cascadexml"])
    preset: str | None = field(None, help="paper | cpu (default: paper for a paper dataset, cpu for a built-in one)")
    teacher: str | None = field(None, help="an existing teacher folder (default: train one into OUT/teacher)")
    features: str | None = field(None, help="--preset cpu: a frozen-embedding folder for the students (default: OUT/features)")
    out: str = field("", help="output folder")
    label_rows: bool = field(False, help="also train each backbone with label rows and no soft labels")
    config: str | None = field(None, help="dataset config name (default: recognised from the dataset's metadata)")
    seed: int = field(0, help="seed of every stage")
    device: str = field("auto", help="auto, cpu, cuda or cuda:N")
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    # --peer NAME=PRED.npz: other models' test predictions, scored into the table beside the cells
    peers: dict[str, str] = dataclasses.field(default_factory=dict)

    def validate(self) -> ReproduceParams:
        from lever.reproduce.config import BACKBONES

        if not self.data:
            raise ParamsError("ReproduceParams.data: required (--data DIR)")
        if not self.out:
            raise ParamsError("ReproduceParams.out: required (--out DIR)")
        if self.preset not in (None, *PRESETS):
            raise ParamsError(f"ReproduceParams.preset={self.preset!r}: expected one of {PRESETS}")
        bad = [b for b in self.backbones if b not in BACKBONES]
        if bad or not self.backbones or len(set(self.backbones)) != len(self.backbones):
            raise ParamsError(
                f"ReproduceParams.backbones={self.backbones!r}: expected distinct names among {BACKBONES}"
            )
        for stage, values in self.overrides.items():
            if stage not in (*OVERRIDE_STAGES, *BACKBONES) or not isinstance(values, dict):
                raise ParamsError(
                    f"ReproduceParams.overrides: {stage!r} is not a stage; expected STAGE.KEY=VALUE with "
                    f"STAGE one of {(*OVERRIDE_STAGES, *BACKBONES)}"
                )
        return self

    def stage_overrides(self, stage: str) -> dict[str, Any]:
        return copy.deepcopy(self.overrides.get(stage, {}))


def parse_override(text: str) -> tuple[list[str], Any]:
    """``STAGE.KEY[.SUB]=VALUE`` → (path, value); the value is JSON when it parses, else a string."""
    import argparse
    import json

    key, sep, raw = text.partition("=")
    path = [p for p in key.split(".") if p]
    if not sep or len(path) < 2:
        raise argparse.ArgumentTypeError(f"{text!r}: expected STAGE.KEY=VALUE, e.g. renee.optim.epochs=2")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return path, value


def nest_overrides(pairs: list[tuple[list[str], Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in pairs:
        part = out
        for key in path[:-1]:
            part = part.setdefault(key, {})
            if not isinstance(part, dict):
                raise ParamsError(f"--set {'.'.join(path)}: {key!r} is given both as a value and as a part")
        part[path[-1]] = value
    return out


def flat_overrides(overrides: dict[str, Any]) -> list[str]:
    """The inverse of :func:`nest_overrides`: ``STAGE.KEY=VALUE`` strings (values as JSON), sorted."""
    import json

    out = []
    for key, value in overrides.items():
        if isinstance(value, dict) and value:
            out += [f"{key}.{item}" for item in flat_overrides(value)]
        else:
            out.append(f"{key}={json.dumps(value)}")
    return sorted(out)


def deep_merge(base: dict[str, Any], *updates: dict[str, Any]) -> dict[str, Any]:
    """``base`` with each update applied key by key (nested dicts merged, other values replaced)."""
    out = copy.deepcopy(base)
    for update in updates:
        for key, value in (update or {}).items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = deep_merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out
