"""``lever teacher train|eval``: train the Siamese teacher into a folder, or evaluate one (or the
untrained encoder with ``--zero-shot``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# CLI flag -> TeacherParams field (flags left unset keep the preset / params-file value).
_FLAGS = {
    "model": "encoder",
    "epochs": "epochs",
    "freeze_layers": "freeze_layers",
    "batch_size": "batch_size",
    "lr": "lr",
    "loss": "loss",
    "margin": "margin",
    "num_negatives": "num_negatives",
    "batch_type": "batch_type",
    "max_len": "max_len",
    "cl_size": "cl_size",
    "cl_start": "cl_start",
    "cl_update": "cl_update",
    "curr_steps": "curr_steps",
    "warmup_steps": "warmup_steps",
    "eval_every": "eval_every",
    "checkpoint_every": "checkpoint_every",
    "device": "device",
    "seed": "seed",
    "kind": "kind",
    "hidden": "hidden",
    "temperature": "temperature",
    "cache_dir": "cache_dir",
}

# The preset a kind starts from when --preset is not given.
_KIND_PRESET = {"frozen": "frozen-cpu", "finetune": "wordnet-cpu"}


def _int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated epochs like 25,50,75, got {text!r}"
        ) from None


def register(subparsers) -> None:
    from lever.teacher.params import BATCH_TYPES, KINDS, LOSSES, PRESETS

    parser = subparsers.add_parser("teacher", help="train or evaluate the Siamese teacher")
    sub = parser.add_subparsers(dest="teacher_command", required=True, metavar="ACTION")

    tr = sub.add_parser(
        "train", help="train a teacher into a folder (model, embeddings, metrics)"
    )
    tr.add_argument(
        "--kind",
        choices=KINDS,
        help="frozen: a Siamese tower over cached frozen MiniLM embeddings (minutes on a CPU); "
        "finetune: fine-tune the encoder itself (the GPU path). Default: finetune when CUDA is "
        "available, else frozen (or the --preset's / --params' kind)",
    )
    tr.add_argument("--data", type=Path, help="dataset folder (lever data build)")
    tr.add_argument("--out", type=Path, help="teacher folder to write")
    tr.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="named settings (paper Table 16 per dataset, finetune kind); default frozen-cpu for "
        "--kind frozen, wordnet-cpu for --kind finetune",
    )
    tr.add_argument("--params", type=Path, help="JSON parameter file (see --print-params)")
    tr.add_argument(
        "--print-params", action="store_true", help="print the resolved parameters and exit"
    )
    tr.add_argument(
        "--resume", action="store_true", help="continue from the last checkpoint in --out"
    )
    tr.add_argument("--no-progress", action="store_true", help="no progress bars")
    tr.add_argument(
        "--model",
        help="encoder: a local sentence-transformers/HF folder (default all-MiniLM-L6-v2)",
    )
    tr.add_argument("--epochs", type=int)
    tr.add_argument(
        "--freeze-layers",
        type=int,
        help="freeze the embeddings and this many bottom layers (0: none)",
    )
    tr.add_argument("--batch-size", type=int)
    tr.add_argument("--lr", type=float)
    tr.add_argument("--loss", choices=LOSSES)
    tr.add_argument("--margin", type=float)
    tr.add_argument("--num-negatives", type=int)
    tr.add_argument("--batch-type", choices=BATCH_TYPES)
    tr.add_argument("--max-len", type=int)
    tr.add_argument("--cl-size", type=int)
    tr.add_argument("--cl-start", type=int, help="first epoch (0-based) with clustered batches")
    tr.add_argument("--cl-update", type=int)
    tr.add_argument(
        "--curr-steps", type=_int_list, help="epochs at which the cluster size doubles, e.g. 25,50"
    )
    tr.add_argument("--warmup-steps", type=int)
    tr.add_argument("--eval-every", type=int)
    tr.add_argument("--checkpoint-every", type=int)
    tr.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    tr.add_argument("--seed", type=int)
    tr.add_argument("--hidden", type=int, help="frozen kind: hidden width of the residual tower")
    tr.add_argument(
        "--temperature", type=float, help="temperature of --loss softmax (in-batch InfoNCE)"
    )
    tr.add_argument(
        "--cache-dir",
        type=str,
        help="frozen kind: where the frozen encoder's embeddings are cached (default OUT/cache)",
    )
    tr.set_defaults(func=_train)

    ev = sub.add_parser(
        "eval", help="P@k, PSP@k, C@k, R@100 of a teacher's kNN retrieval on the test split"
    )
    ev.add_argument("--data", type=Path, required=True)
    ev.add_argument(
        "--teacher",
        type=Path,
        help="teacher folder of any kind (lever teacher train, lever soft-labels zero-shot-teacher)",
    )
    ev.add_argument(
        "--zero-shot", action="store_true", help="evaluate the untrained encoder instead"
    )
    ev.add_argument("--model", help="encoder for --zero-shot (default all-MiniLM-L6-v2)")
    ev.add_argument(
        "--max-len", type=int, default=None, help="token limit for --zero-shot (default 32)"
    )
    ev.add_argument("--json", action="store_true", help="print the metrics as JSON")
    ev.set_defaults(func=_eval)


def resolve_params(args) -> TeacherParams:  # noqa: F821 - imported lazily
    from lever.teacher.params import TeacherParams, preset
    from lever.utils.params import ParamsError

    if args.params is not None:
        params = TeacherParams.load(args.params)
    elif (
        getattr(args, "resume", False)
        and args.out is not None
        and (args.out / "config.json").exists()
    ):
        params = TeacherParams.load(args.out / "config.json")  # resume with the run's own settings
    else:
        params = preset(args.preset or _KIND_PRESET[args.kind or _default_kind()])
    if args.kind is not None and args.preset is not None and params.kind != args.kind:
        raise ParamsError(
            f"--kind {args.kind} contradicts --preset {args.preset} (a {params.kind} preset)"
        )
    params = params.replace(**{field: getattr(args, flag) for flag, field in _FLAGS.items()})
    return params.validate("command line")


def _default_kind() -> str:
    """The fine-tuned encoder where there is a GPU to train it; the frozen tower otherwise."""
    import torch

    return "finetune" if torch.cuda.is_available() else "frozen"


def _train(args) -> int:
    params = resolve_params(args)
    if args.print_params:
        print(json.dumps(params.to_dict(), indent=2, sort_keys=True))
        return 0
    if args.data is None or args.out is None:
        raise ValueError("teacher train needs --data DIR and --out TEACHER_DIR")
    from lever.data import XCDataset
    from lever.teacher.train import train_teacher

    dataset = XCDataset.load(args.data)
    metrics = train_teacher(
        dataset, params, args.out, resume=args.resume, progress=not args.no_progress
    )
    print(json.dumps({"teacher": str(args.out), "test": metrics}, indent=2))
    return 0


def _eval(args) -> int:
    from lever.data import XCDataset
    from lever.teacher.evaluate import evaluate_teacher_folder, evaluate_zero_shot

    if args.zero_shot == (args.teacher is not None):
        raise ValueError("teacher eval needs exactly one of --teacher DIR or --zero-shot")
    dataset = XCDataset.load(args.data)
    if args.zero_shot:
        metrics = evaluate_zero_shot(dataset, args.model, max_len=args.max_len or 32)
    else:
        metrics = evaluate_teacher_folder(dataset, args.teacher)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        for key, value in metrics.items():
            print(f"{key:>8s}  {value:7.2f}", file=sys.stdout)
    return 0
