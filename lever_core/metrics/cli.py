"""``lever eval``: metrics of saved predictions on a dataset's test split."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="P/nDCG/PSP/PSnDCG/R/C@k of saved test predictions",
        description=(
            "Evaluate a scipy.sparse.save_npz CSR of scores (test points x labels) against the "
            "dataset's test labels. Reciprocal pairs from the test filter file are removed before "
            "the top-k is taken. Values are in percent."
        ),
    )
    p.add_argument("--data", required=True, help="dataset folder (as written by `lever data build`)")
    p.add_argument("--pred", required=True, help="predictions .npz (CSR of scores, test x labels)")
    p.add_argument("--k", type=int, default=5, help="largest cut-off (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--propensity-a", type=float, default=None,
                   help="Jain et al. A (default: the dataset's lever_meta.json propensity_a)")
    p.add_argument("--propensity-b", type=float, default=None,
                   help="Jain et al. B (default: the dataset's lever_meta.json propensity_b)")
    p.add_argument("--deciles", metavar="PNG", default=None,
                   help="also print the per-label-frequency decile report and save its plot here")
    p.add_argument("--batch-size", type=int, default=8192, help="test points per batch")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lever.data import XCDataset, read_npz
    from lever.metrics.deciles import decile_report, format_deciles, plot_deciles
    from lever.metrics.propensity import inverse_propensity, label_counts
    from lever.metrics.table import MACRO_ROWS, TABLE_ROWS, format_table
    from lever.metrics.xc_metrics import XCMetrics

    if args.k < 1:
        raise ValueError(f"--k must be >= 1, got {args.k}")
    ds = XCDataset.load(args.data)
    preds = read_npz(args.pred)
    if preds.shape != ds.tst_Y.shape:
        raise ValueError(
            f"{args.pred}: predictions have shape {preds.shape} (points x labels) but the test "
            f"labels of {args.data} have shape {ds.tst_Y.shape}"
        )
    a = ds.meta.propensity_a if args.propensity_a is None else args.propensity_a
    b = ds.meta.propensity_b if args.propensity_b is None else args.propensity_b
    inv_prop = inverse_propensity(ds.trn_Y, a, b)
    acc = XCMetrics(ds.tst_Y, inv_prop, k=args.k, filter=ds.tst_filter)
    for start in range(0, preds.shape[0], args.batch_size):
        stop = min(preds.shape[0], start + args.batch_size)
        acc.update(slice(start, stop), preds[start:stop])
    results = acc.summary()

    report = None
    if args.deciles:
        report = decile_report(acc, label_counts(ds.trn_Y), k=args.k)
        plot_deciles(report, args.k, args.deciles, title=f"{ds.name}: per-decile analysis @{args.k}")

    if args.json:
        out = dict(results)
        if report is not None:
            out["deciles"] = report
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")
        return 0
    ks = sorted({k for k in (1, 3, 5) if k <= args.k} | {args.k})
    print(f"{ds.name}: {preds.shape[0]} test points, {preds.shape[1]} labels, "
          f"PSP with A={a:g} B={b:g}, filter={'yes' if ds.tst_filter is not None else 'no'}")
    print(format_table(results, ks=ks, rows=TABLE_ROWS + MACRO_ROWS))
    if report is not None:
        print()
        print(format_deciles(report, args.k))
        print(f"decile plot written to {args.deciles}")
    return 0
