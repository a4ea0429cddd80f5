"""Teacher training throughput: (input, positive) pairs per second through a full optimizer step
(both sides encoded, in-batch loss, backward, AdamW), on CPU and, when CUDA is available, on GPU.

Uses a real dataset (``--data``, default runs/wordnet_5k, else runs/wordnet) so the token lengths
are the real ones; each configuration runs ``--warmup`` steps, then times ``--steps`` steps over
label-side batches in random order.

Writes bench/results/teacher_throughput.json and .md.

    .venv/bin/python bench/teacher_throughput.py                       # MiniLM, batch 64/128
    .venv/bin/python bench/teacher_throughput.py --batch-sizes 128 --steps 5
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from lever.utils.atomic import write_json_atomic, write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def measure(
    dataset,
    device: str,
    batch_size: int,
    max_len: int,
    steps: int,
    warmup: int,
    encoder,
    tmp: Path,
    batch_type: str,
    freeze_layers: int,
) -> dict:
    from lever.teacher.params import TeacherParams
    from lever.teacher.train import SiameseTeacher, TeacherTrainer

    params = TeacherParams(
        encoder=encoder or "all-MiniLM-L6-v2",
        freeze_layers=freeze_layers,
        batch_size=batch_size,
        max_len=max_len,
        device=device,
        batch_type=batch_type,
        epochs=1,
    )
    teacher = SiameseTeacher(params, dataset, tmp, progress=False)
    trainer = TeacherTrainer(teacher, show=False)
    trainer.enter_stage(0)
    rng = np.random.default_rng(0)
    teacher.batcher.resample(rng)
    order = rng.permutation(len(teacher.batcher))
    batches = [order[i * batch_size : (i + 1) * batch_size] for i in range(warmup + steps)]
    teacher.module.train()
    for items in batches[:warmup]:
        trainer.optimizer_step([items])  # the trainer's step: AMP, clipping, schedule
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for items in batches[warmup:]:
        trainer.optimizer_step([items])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    pairs = sum(len(b) for b in batches[warmup:])
    return {
        "device": device,
        "batch_size": batch_size,
        "freeze_layers": freeze_layers,
        "max_len": max_len,
        "batch_type": batch_type,
        "steps": steps,
        "seconds": round(secs, 3),
        "pairs_per_s": round(pairs / secs, 2),
        "amp": trainer.amp.enabled,
        "torch_threads": torch.get_num_threads(),
    }


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--encoder", default=None, help="default all-MiniLM-L6-v2")
    ap.add_argument("--batch-sizes", default="64,128")
    ap.add_argument("--max-len", type=int, default=32)
    ap.add_argument("--batch-type", default="label", choices=("label", "doc"))
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--gpu-batch-sizes", default="128,512,1600")
    ap.add_argument("--freeze-layers", default="4,0", help="frozen bottom layers to compare (CPU)")
    args = ap.parse_args()

    from lever.data import XCDataset

    data = args.data
    if data is None:
        data = next(
            (
                ROOT / "runs" / d
                for d in ("wordnet_5k", "wordnet")
                if (ROOT / "runs" / d / "lever_meta.json").exists()
            ),
            None,
        )
    if data is None:
        raise SystemExit("no dataset: build runs/wordnet_5k (lever data build) or pass --data")
    ds = XCDataset.load(data)
    tmp = ROOT / "runs" / ".bench_teacher_throughput"
    runs = []
    configs = [
        ("cpu", bs, fl) for fl in _ints(args.freeze_layers) for bs in _ints(args.batch_sizes)
    ]
    if torch.cuda.is_available():
        configs += [("cuda", bs, 0) for bs in _ints(args.gpu_batch_sizes)]
    for device, bs, freeze in configs:
        steps = args.steps * (3 if device == "cuda" else 1)
        runs.append(
            measure(
                ds,
                device,
                bs,
                args.max_len,
                steps,
                args.warmup,
                args.encoder,
                tmp,
                args.batch_type,
                freeze,
            )
        )
        print(json.dumps(runs[-1]))
    summary = {
        "dataset": str(data),
        "encoder": args.encoder or "all-MiniLM-L6-v2",
        "runs": runs,
        "machine": {
            "cpu_count": __import__("os").cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "note": "shared, loaded machine (several helpers running at once); timings are indicative",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json_atomic(RESULTS / "teacher_throughput.json", summary)
    md = [
        "# Teacher training throughput",
        "",
        (
            f"Encoder {summary['encoder']}, dataset `{data.name}`, {args.batch_type}-side batches, "
            f"max_len {args.max_len} (batches clipped to their longest text); one step = encode "
            "both sides, in-batch pairwise-logistic loss, backward, AdamW. Shared, loaded machine."
        ),
        "",
        "| device | frozen layers | batch | steps | seconds | pairs/s | AMP | threads |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        md.append(
            f"| {r['device']} | {r['freeze_layers']} | {r['batch_size']} | {r['steps']} | "
            f"{r['seconds']:.1f} | "
            f"{r['pairs_per_s']:.1f} | {r['amp']} | {r['torch_threads']} |"
        )
    if not torch.cuda.is_available():
        md += ["", "No CUDA device on this machine: GPU rows not measured."]
    write_text_atomic(RESULTS / "teacher_throughput.md", "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
