"""``lever train`` and ``lever predict``.

Settings are resolved as: defaults < ``--params FILE`` (``--config``; the nested JSON of
``TrainParams``, or the old flat form) < command-line flags, one per field of ``TrainParams`` and
its parts (``--lam`` sets ``lever.lam``, ``--epochs`` ``optim.epochs``, ``--seed`` ``run.seed``);
``--print-params`` (``--print-config``) prints the resolved configuration (a full skeleton with no
other flags) and exits. Run under
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


# TrainParams fields (dotted paths) with flags of their own shape (KEY=VALUE, repeatable), not
# generated: --bp, --group-lr, --auto.
SPECIAL_FIELDS = ("backbone_params", "optim.group_lr", "lever.auto")


def register(subparsers) -> None:
    from lever.train.params import PredictParams, TrainParams
    from lever.utils.params import add_arguments

    p = subparsers.add_parser(
        "train",
        help="train a backbone (optionally with LEVER soft labels)",
        description="Train a backbone on an XC dataset folder; resumes from the run's last "
        "checkpoint. One flag per TrainParams field (see --print-params).",
    )
    add_arguments(p, TrainParams, skip=SPECIAL_FIELDS)
    p.add_argument(
        "--auto",
        type=_key_value,
        action="append",
        metavar="KEY=VALUE",
        help="a --lam auto setting, e.g. teacher=T, epochs=2, kappas=[1,4] (repeatable; "
        "see --print-params)",
    )
    p.add_argument(
        "--group-lr",
        dest="group_lr",
        type=_key_value,
        action="append",
        metavar="GROUP=LR",
        help="learning rate of one parameter group (repeatable)",
    )
    p.add_argument(
        "--bp",
        type=_key_value,
        action="append",
        metavar="KEY=VALUE",
        help="a backbone setting (value parsed as JSON when it is JSON; repeatable)",
    )
    p.add_argument(
        "--params", "--config", dest="params",
        help="JSON file of TrainParams, nested as --print-params shows (the old flat form loads "
        "too); flags override it",
    )
    p.add_argument(
        "--print-params", "--print-config",
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
    add_arguments(q, PredictParams)
    q.add_argument("--no-progress", dest="progress", action="store_false")
    q.set_defaults(func=_predict)


def resolve_params(args, plugin_manager):
    """TrainParams from defaults, ``--params`` and flags, with the backbone's settings filled in."""
    from lever.train.loop import make_backbone, resolve_backbone_defaults
    from lever.train.params import TrainParams
    from lever.utils.params import flag_values

    params = TrainParams.load(args.params) if args.params else TrainParams()
    flags = flag_values(args, TrainParams, skip=SPECIAL_FIELDS)
    params = params.replace(**flags)
    if args.group_lr:
        group_lr = {**params.optim.group_lr, **{k: float(v) for k, v in args.group_lr}}
        params = params.replace(optim={"group_lr": group_lr})
    if args.auto:
        auto = {**params.lever.auto.to_dict(), **dict(args.auto)}
        params = params.replace(lever={"auto": type(params.lever.auto).from_dict(auto, source="--auto")})
    backbone_params = dict(params.backbone_params)
    if args.bp:
        backbone_params.update(dict(args.bp))
    params = params.replace(backbone_params=backbone_params)
    return resolve_backbone_defaults(params, make_backbone(params, plugin_manager))


def _train(args) -> int:
    from lever.hooks.manager import get_plugin_manager
    from lever.train.loop import train

    pm = get_plugin_manager()  # one plugin manager resolves the backbone and runs it
    params = resolve_params(args, pm)
    if args.print_params:
        print(json.dumps(params.to_dict(), indent=2, sort_keys=True))
        return 0
    result = train(
        params, stop_after_epochs=args.stop_after_epochs, progress=args.progress, plugin_manager=pm
    )
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
    from lever.train.params import PredictParams
    from lever.train.predict import predict_topk, save_predictions, topk_to_csr
    from lever.utils.params import flag_values

    p = PredictParams().replace(**flag_values(args, PredictParams)).validate()
    backbone, module, _, dataset = load_trained(p.run, p.data, p.device)
    device = next(module.parameters()).device
    indices, scores = predict_topk(
        backbone,
        module,
        dataset.num_test,
        dataset.num_labels,
        p.k,
        device,
        exclude=dataset.tst_filter if p.filter else None,
        batch_size=p.batch_size,
        progress=args.progress,
    )
    csr = topk_to_csr(indices, scores, dataset.num_labels)
    save_predictions(p.out, csr)
    print(f"wrote {p.out}: {csr.shape[0]} test points × {csr.shape[1]} labels, top {p.k} per row")
    return 0
