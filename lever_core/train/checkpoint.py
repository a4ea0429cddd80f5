"""Checkpoints that make an interrupted run resume to the same result.

Layout: ``RUN/checkpoints/step-<global step>/`` holds, for every process r,
``model.rank<r>.safetensors`` (its module: ranks of a data-parallel run hold the same weights, but
model-parallel parts such as a label-sharded classifier differ), ``state.rank<r>.pt`` (its
optimizers, AMP scaler and the position in the data) and ``rng.rank<r>.pt`` (its random
generators). ``RUN/checkpoints/latest`` names the newest *complete* folder and is replaced
atomically after every process wrote its files, so a crash mid-save leaves the previous
checkpoint in force. Only tensors and plain Python values are saved, loaded back with
``torch.load(weights_only=True)``; the model with safetensors.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model

from lever.utils.atomic import atomic_path, write_text_atomic

KEEP = 2


def rng_state() -> dict[str, Any]:
    version, keys, gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": {"version": version, "keys": list(keys), "gauss": gauss},
        "numpy": {
            "kind": np_kind,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["keys"]), py["gauss"]))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    run_dir: Path,
    module: torch.nn.Module,
    state: dict[str, Any],
    rank: int,
    world_size: int,
    barrier,
    keep: int = KEEP,
) -> Path:
    """Every rank writes its three files; then rank 0 moves ``latest`` and keeps the newest
    ``keep`` folders."""
    ckpt_root = Path(run_dir) / "checkpoints"
    folder = ckpt_root / f"step-{int(state['global_step']):09d}"
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / f"model.rank{rank}.safetensors") as tmp:
        save_model(module, str(tmp))
    with atomic_path(folder / f"state.rank{rank}.pt") as tmp:
        torch.save({**state, "world_size": world_size}, tmp)
    with atomic_path(folder / f"rng.rank{rank}.pt") as tmp:
        torch.save(rng_state(), tmp)
    barrier()
    if rank == 0:
        write_text_atomic(ckpt_root / "latest", folder.name + "\n")
        old = sorted(p for p in ckpt_root.glob("step-*") if p.is_dir() and p != folder)
        for p in old[: max(0, len(old) - (keep - 1))]:
            shutil.rmtree(p, ignore_errors=True)
    barrier()
    return folder


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = Path(run_dir) / "checkpoints" / "latest"
    if not pointer.exists():
        return None
    folder = pointer.parent / pointer.read_text().strip()
    if (
        not (folder / "state.rank0.pt").exists()
        or not (folder / "model.rank0.safetensors").exists()
    ):
        raise RuntimeError(
            f"{pointer}: names {folder.name}, which lacks state.rank0.pt or model.rank0.safetensors"
        )
    return folder


def load_checkpoint(
    folder: Path, module: torch.nn.Module, rank: int, device: torch.device
) -> dict[str, Any]:
    """Load this rank's weights into ``module``, restore its RNGs, return its saved loop state."""
    files = [
        folder / f"{stem}.rank{rank}.{ext}"
        for stem, ext in (("model", "safetensors"), ("state", "pt"), ("rng", "pt"))
    ]
    missing = [f.name for f in files if not f.exists()]
    if missing:
        raise RuntimeError(f"{folder}: missing {missing}; was the run saved with fewer processes?")
    load_model(module, str(files[0]), device=str(device))
    state = torch.load(files[1], map_location=device, weights_only=True)
    set_rng_state(torch.load(files[2], map_location="cpu", weights_only=True))
    return state
