"""``lever reproduce``: teacher, soft labels, and every backbone without and with LEVER on one
dataset, in the paper's table format; ``--list`` shows the shipped cells."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from lever.reproduce.params import parse_override

    p = subparsers.add_parser(
        "reproduce", help="the paper's table per backbone (± LEVER) on one dataset, resumable",
        description=__doc__,
    )
    p.add_argument("--data", help="dataset folder (a paper dataset in the XC-repository layout, or lever data build's)")
    p.add_argument("--backbones", default="renee,elias,cascadexml",
                   help="comma-separated backbones [renee,elias,cascadexml]")
    p.add_argument("--preset", choices=("paper", "cpu"),
                   help="paper: the config's settings (a GPU run); cpu: each backbone's CPU defaults on "
                   "frozen MiniLM features, the frozen teacher. Default: paper for a paper dataset, cpu "
                   "for a built-in one")
    p.add_argument("--teacher", help="an existing teacher folder (default: train one into OUT/teacher)")
    p.add_argument("--features", help="--preset cpu: frozen-embedding folder for the students (default: OUT/features)")
    p.add_argument("--out", help="output folder (default: reproduce_<config>)")
    p.add_argument("--label-rows", action="store_true", help="also each backbone with label rows only")
    p.add_argument("--config", help="dataset config name (default: recognised from the dataset's metadata)")
    p.add_argument("--set", dest="overrides", type=parse_override, action="append", default=[],
                   metavar="STAGE.KEY=VALUE",
                   help="change a setting: teacher.epochs=2, soft_labels.tau_l=8, renee.optim.epochs=3, "
                   "all.optim.batch_size=128, features.encoder=DIR (repeatable)")
    p.add_argument("--peer", dest="peers", action="append", default=[], metavar="NAME=PRED.npz",
                   help="another model's test predictions (lever's .npz, e.g. bench/peers.py's) as a row "
                   "of the table (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--list", action="store_true", help="print the shipped cells and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (the per-cell lines stay)")
    p.set_defaults(func=_run)


def list_cells() -> str:
    """One line per dataset × backbone: key settings and the published P@5 / PSP@5 (base → +LEVER)."""
    from lever.reproduce.config import all_configs

    lines = []
    for cfg in all_configs():
        st = cfg.statistics
        counts = "counts not published" if st.counts() is None else "{:,} train / {:,} test / {:,} labels".format(*st.counts())
        tau = "τ " + ("–" if cfg.soft_labels.tau_l is None else f"{cfg.soft_labels.tau_l}+{cfg.soft_labels.tau_d}")
        ab = "A/B " + ("lever_meta" if cfg.propensity.a is None else f"{cfg.propensity.a}/{cfg.propensity.b}")
        lines.append(f"{cfg.name} [{cfg.kind}] {counts}; {ab}; {tau}; teacher {cfg.teacher.preset or 'frozen-cpu'}")
        default = "backbone CPU defaults" if cfg.kind == "builtin" else "not published: backbone defaults"
        for backbone, cell in cfg.cells.items():
            optim = cell.train.get("optim", {})
            bp = cell.train.get("backbone_params", {})
            keys = [f"{k}={optim[k]}" for k in ("epochs", "batch_size") if k in optim]
            keys += [f"{k}={bp[k]}" for k in ("preset", "lr_enc", "lr_clf", "num_clusters") if k in bp]
            pub = cell.published
            shown = ("P@5 {:.2f}→{:.2f}, PSP@5 {:.2f}→{:.2f}".format(
                pub["base"]["P@5"], pub["lever"]["P@5"], pub["base"]["PSP@5"], pub["lever"]["PSP@5"])
                if pub else "no published result")
            lines.append(f"  {backbone:<10s} {' '.join(keys) or default:<60s} paper: {shown}")
    return "\n".join(lines)


def _peers(items: list[str]) -> dict[str, str]:
    peers = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--peer {item!r}: expected NAME=PRED.npz")
        peers[name] = path
    return peers


def _run(args: argparse.Namespace) -> int:
    if args.list:
        print(list_cells())
        return 0
    if not args.data:
        raise ValueError("reproduce needs --data DIR (or --list)")
    from lever.reproduce.cells import reproduce
    from lever.reproduce.config import detect_config
    from lever.reproduce.params import ReproduceParams, nest_overrides

    out = args.out or f"reproduce_{detect_config(args.data, args.config)[0].name}"
    params = ReproduceParams(
        data=args.data, backbones=[b.strip() for b in args.backbones.split(",") if b.strip()],
        preset=args.preset, teacher=args.teacher, features=args.features, out=out,
        label_rows=args.label_rows, config=args.config, seed=args.seed, device=args.device,
        overrides=nest_overrides(args.overrides), peers=_peers(args.peers),
    )
    reproduce(params, progress=not args.no_progress)
    return 0
