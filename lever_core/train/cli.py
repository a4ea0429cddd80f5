"""``lever train`` and ``lever predict``.

Settings are resolved as: defaults < ``--params FILE`` < command-line flags; ``--print-params``
prints the resolved configuration (a full skeleton with no other flags) and exits. Run under
``torchrun --nproc_per_node N -m lever train ...`` for multi-process data parallelism.
"""

from __future__ import annotations

import argparse
import json
import sys


def _key_value(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw  # a bare string, e.g. a path
    return key.strip(), value


def _lam(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number in [0, 1] or 'auto'") from None


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a backbone (optionally with LEVER soft labels)",
        description="Train a backbone on an XC dataset folder; resumes from the run's last "
        "checkpoint.",
    )
    p.add_argument("--data", help="dataset folder (lever data build)")
    p.add_argument("--backbone", help="backbone name (generic, or one an adapter registers)")
    p.add_argument(
        "--out", help="run folder (config.json, metrics.jsonl, checkpoints/, model.safetensors)"
    )
    p.add_argument("--soft-labels", dest="soft_labels", help="SoftLabels .npz, (N + L) rows")
    p.add_argument(
        "--lam",
        type=_lam,
        help="λ, weight of the ground truth in the target (default 0.5), or 'auto': choose λ/κ, "
        "τ_d and the calibration on a validation split (see --auto)",
    )
    p.add_argument(
        "--kappa",
        type=float,
        help="per-label λ_l = n_l / (n_l + κ) instead of a constant λ (n_l: training documents of l)",
    )
    p.add_argument(
        "--auto",
        type=_key_value,
        action="append",
        metavar="KEY=VALUE",
        help="a --lam auto setting, e.g. teacher=T, epochs=2, kappas=[1,4] (repeatable; "
        "see --print-params)",
    )
    p.add_argument("--mode", help="target mode: mix (λ·y + (1-λ)·p̂) or augment (max(y, p̂))")
    p.add_argument(
        "--label-rows",
        dest="label_rows",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train on label-as-datapoint rows too (default: on with soft labels)",
    )
    p.add_argument("--epochs", type=int)
    p.add_argument(
        "--batch-size", dest="batch_size", type=int, help="rows per process per micro-batch"
    )
    p.add_argument(
        "--grad-accum", dest="grad_accum", type=int, help="micro-batches per optimizer step"
    )
    p.add_argument("--lr", type=float, help="learning rate of every parameter group")
    p.add_argument(
        "--group-lr",
        dest="group_lr",
        type=_key_value,
        action="append",
        metavar="GROUP=LR",
        help="learning rate of one parameter group (repeatable)",
    )
    p.add_argument("--weight-decay", dest="weight_decay", type=float)
    p.add_argument("--schedule", choices=("cosine", "linear", "constant"))
    p.add_argument("--warmup-steps", dest="warmup_steps", type=int)
    p.add_argument(
        "--max-grad-norm", dest="max_grad_norm", type=float, help="clip gradients (0: off)"
    )
    p.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="mixed precision (CUDA only)",
    )
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--num-workers", dest="num_workers", type=int, help="DataLoader workers building batches"
    )
    p.add_argument("--eval-every", dest="eval_every", type=int, help="evaluate every N epochs")
    p.add_argument("--eval-k", dest="eval_k", type=int, help="metrics @1..k (default 5)")
    p.add_argument("--checkpoint-every-steps", dest="checkpoint_every_steps", type=int)
    p.add_argument("--cache-dir", dest="cache_dir", help="cache folder (default RUN_DIR/cache)")
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--encoder", help="generic backbone: frozen encoder folder (default: packaged MiniLM)"
    )
    p.add_argument(
        "--bp",
        type=_key_value,
        action="append",
        metavar="KEY=VALUE",
        help="a backbone setting (value parsed as JSON when it is JSON; repeatable)",
    )
    p.add_argument("--params", help="JSON file of TrainParams (flags override it)")
    p.add_argument(
        "--print-params",
        dest="print_params",
        action="store_true",
        help="print the resolved parameters (a full skeleton) and exit",
    )
    p.add_argument(
        "--stop-after-epochs",
        dest="stop_after_epochs",
        type=int,
        help="end this invocation after N epochs (checkpointed; rerun to continue)",
    )
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=_train)

    q = subparsers.add_parser(
        "predict",
        help="top-k predictions of a trained run (sparse .npz, filters applied)",
        description="Score a dataset's test split with a trained run; writes a CSR .npz of top-k "
        "scores.",
    )
    q.add_argument("--run", required=True, help="run folder of lever train")
    q.add_argument("--data", help="dataset folder (default: the run's)")
    q.add_argument("--out", required=True, help="output .npz (test points × labels)")
    q.add_argument("--k", type=int, default=100)
    q.add_argument("--batch-size", dest="batch_size", type=int, default=512)
    q.add_argument("--device", default="auto")
    q.add_argument(
        "--no-filter",
        dest="use_filter",
        action="store_false",
        help="do not remove the dataset's test filter pairs",
    )
    q.add_argument("--no-progress", dest="progress", action="store_false")
    q.set_defaults(func=_predict)


def resolve_params(args):
    """TrainParams from defaults, ``--params`` and flags, with the backbone's settings filled in."""
    from lever.hooks.manager import get_plugin_manager
    from lever.train.loop import make_backbone, resolve_backbone_defaults
    from lever.train.params import TrainParams

    params = TrainParams.load(args.params) if args.params else TrainParams()
    flags = {
        k: getattr(args, k)
        for k in (
            "data",
            "backbone",
            "out",
            "soft_labels",
            "lam",
            "kappa",
            "mode",
            "label_rows",
            "epochs",
            "batch_size",
            "grad_accum",
            "lr",
            "weight_decay",
            "schedule",
            "warmup_steps",
            "max_grad_norm",
            "amp",
            "device",
            "num_workers",
            "eval_every",
            "eval_k",
            "checkpoint_every_steps",
            "cache_dir",
            "seed",
        )
    }
    params = params.replace(**flags)
    if args.group_lr:
        params = params.replace(
            group_lr={**params.group_lr, **{k: float(v) for k, v in args.group_lr}}
        )
    if args.auto:
        auto = {**params.auto.to_dict(), **dict(args.auto)}
        params = params.replace(auto=type(params.auto).from_dict(auto, source="--auto"))
    backbone_params = dict(params.backbone_params)
    if args.bp:
        backbone_params.update(dict(args.bp))
    if args.encoder is not None:
        backbone_params["encoder"] = args.encoder
    params = params.replace(backbone_params=backbone_params)
    return resolve_backbone_defaults(params, make_backbone(params, get_plugin_manager()))


def _train(args) -> int:
    from lever.train.loop import train

    params = resolve_params(args)
    if args.print_params:
        print(json.dumps(params.to_dict(), indent=2, sort_keys=True))
        return 0
    result = train(params, stop_after_epochs=args.stop_after_epochs, progress=args.progress)
    if result.metrics is not None:
        from lever.metrics import format_table

        print(format_table(result.metrics))
        print(f"wrote {result.run_dir}/metrics.json, model.safetensors")
    elif not result.finished:
        print(
            f"stopped after epoch {result.epochs_done}; rerun the same command to continue",
            file=sys.stderr,
        )
    return 0


def _predict(args) -> int:
    from lever.train.loop import load_trained
    from lever.train.predict import predict_topk, save_predictions, topk_to_csr

    if args.k < 1:
        raise ValueError(f"--k {args.k}: expected a positive integer")
    backbone, module, _, dataset = load_trained(args.run, args.data, args.device)
    device = next(module.parameters()).device
    exclude = dataset.tst_filter if args.use_filter else None
    indices, scores = predict_topk(
        backbone,
        module,
        dataset.num_test,
        dataset.num_labels,
        args.k,
        device,
        exclude=exclude,
        batch_size=args.batch_size,
        progress=args.progress,
    )
    csr = topk_to_csr(indices, scores, dataset.num_labels)
    save_predictions(args.out, csr)
    print(
        f"wrote {args.out}: {csr.shape[0]} test points × {csr.shape[1]} labels, "
        f"top {args.k} per row"
    )
    return 0
