"""The one reader of a teacher folder, used by ``lever teacher eval`` and ``lever soft-labels build``.

Kinds (``config.json``):

* ``finetune`` — ``lever teacher train --kind finetune``: ``encoder/`` + resolved ``TeacherParams``
  (configs written before ``kind`` existed have no such field and are this kind);
* ``frozen`` — ``lever teacher train --kind frozen``: ``tower.safetensors`` over cached frozen
  encoder embeddings + resolved ``TeacherParams``;
* ``zero-shot`` — ``lever soft-labels zero-shot-teacher``: an untrained encoder's embeddings and a
  small descriptive config (``kind``, ``encoder``, ``max_len``, ``dataset_fingerprint`` ...);
* ``embeddings`` — no ``config.json``: only ``embeddings/{trn,tst,lbl}.npy`` (any producer).

Every kind holds ``embeddings/{split}.npy`` (float32, unit norm, rows aligned with the dataset);
those are used when present and matching, otherwise a split is recomputed from the kind's model.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from lever.soft_labels.teacher_embeddings import (
    ZERO_SHOT,
    TeacherFolderError,
    check_teacher_dataset,
    embedding_path,
    load_teacher_embeddings,
)

EMBEDDINGS_ONLY = "embeddings"
FOLDER_KINDS = ("finetune", "frozen", ZERO_SHOT, EMBEDDINGS_ONLY)


@dataclasses.dataclass
class TeacherFolder:
    path: Path
    kind: str
    config: dict[str, Any]  # config.json as written ({} for an embeddings-only folder)
    params: Any = None  # TeacherParams for the trained kinds, else None

    @classmethod
    def read(cls, path: str | os.PathLike) -> TeacherFolder:
        from lever.teacher.params import TeacherParams
        from lever.utils.params import ParamsError

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(
                f"teacher folder {path} not found; make one with `lever teacher train` or "
                "`lever soft-labels zero-shot-teacher`"
            )
        cfg_file = path / "config.json"
        if not cfg_file.exists():
            if not (path / "embeddings").is_dir():
                raise TeacherFolderError(
                    f"{path}: not a teacher folder (neither config.json nor embeddings/)"
                )
            return cls(path, EMBEDDINGS_ONLY, {})
        try:
            config = json.loads(cfg_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise TeacherFolderError(f"{cfg_file}: line {e.lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(config, dict):
            raise TeacherFolderError(f"{cfg_file}: expected a JSON object")
        kind = config.get("kind", "finetune")
        if kind not in FOLDER_KINDS[:3]:
            raise TeacherFolderError(
                f"{cfg_file}: field 'kind' = {kind!r}; expected one of {FOLDER_KINDS[:3]}"
            )
        if kind == ZERO_SHOT:
            return cls(path, kind, config)
        try:
            params = TeacherParams.load(cfg_file).validate(str(cfg_file))
        except ParamsError as e:
            raise TeacherFolderError(str(e)) from None
        return cls(path, kind, config, params)

    # -- what the stages ask of a teacher ------------------------------------------------------

    @property
    def max_len(self) -> int | None:
        return self.params.max_len if self.params else self.config.get("max_len")

    @property
    def encoder(self) -> str | None:
        return self.params.encoder if self.params else self.config.get("encoder")

    def describe(self) -> dict[str, Any]:
        """What a soft-label file records about its teacher."""
        return {
            "path": str(self.path),
            "kind": self.kind,
            "encoder": self.encoder,
            "loss": self.config.get("loss"),
            "max_len": self.max_len,
            "epochs": self.config.get("epochs"),
        }

    def check_dataset(self, dataset, desc: str | None = None) -> None:
        check_teacher_dataset(
            self.path, dataset.fingerprint(), desc or f"dataset {getattr(dataset, 'root', '')}"
        )

    def exported(self, dataset, splits: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The exported embeddings of ``splits``, checked against the dataset (rows, unit norm)."""
        rows = _rows(dataset)
        return load_teacher_embeddings(self.path, {s: rows[s] for s in splits}, splits)

    def embeddings(
        self, dataset, splits: tuple[str, ...], progress: bool = True
    ) -> dict[str, np.ndarray]:
        """``{split: unit-norm embeddings}``: exported ones when they fit the dataset, else
        recomputed from the kind's model (encoder/, tower + cached features, or the zero-shot
        encoder)."""
        self.check_dataset(dataset)
        rows = _rows(dataset)
        have = tuple(
            s
            for s in splits
            if embedding_path(self.path, s).exists()
            and np.load(embedding_path(self.path, s), mmap_mode="r").shape[0] == rows[s]
        )
        out = load_teacher_embeddings(self.path, {s: rows[s] for s in have}, have) if have else {}
        missing = tuple(s for s in splits if s not in out)
        if missing:
            out.update(self._recompute(dataset, missing, progress))
        return out

    def _recompute(self, dataset, splits: tuple[str, ...], progress: bool) -> dict[str, np.ndarray]:
        texts = {"trn": dataset.trn_texts, "tst": dataset.tst_texts, "lbl": dataset.lbl_texts}
        if self.kind == EMBEDDINGS_ONLY:
            raise TeacherFolderError(
                f"{self.path}: no embeddings/{{{','.join(splits)}}}.npy matching the dataset and no "
                "config.json saying how to compute them"
            )
        if self.kind == "frozen":
            from lever.teacher.frozen import TOWER_FILE, apply_tower, load_tower
            from lever.train.embeddings import frozen_embeddings

            tower_file = self.path / TOWER_FILE
            if not tower_file.exists():
                raise TeacherFolderError(
                    f"{tower_file}: missing; a frozen teacher needs it to embed {splits}"
                )
            p = self.params
            feats = frozen_embeddings(
                dataset, p.cache_dir or self.path / "cache", p.encoder, splits, max_len=p.max_len
            )
            tower = load_tower(tower_file, p.hidden)
            return {s: apply_tower(tower, feats[s]) for s in splits}
        from lever.teacher.model import embed, load_teacher_encoder

        if self.kind == "finetune":
            if not (self.path / "encoder").is_dir():
                raise TeacherFolderError(
                    f"{self.path}: no encoder/ folder and no embeddings of {splits} matching "
                    "the dataset"
                )
            model, batch = load_teacher_encoder(self.path / "encoder", self.max_len), 256
        else:  # zero-shot: the untrained encoder its config names
            model, batch = load_teacher_encoder(self.encoder, self.max_len or 32), 256
        return {s: embed(model, texts[s], batch, show_progress=progress) for s in splits}


def _rows(dataset) -> dict[str, int]:
    return {"trn": dataset.num_train, "tst": dataset.num_test, "lbl": dataset.num_labels}


def read_teacher_folder(path: str | os.PathLike) -> TeacherFolder:
    return TeacherFolder.read(path)
