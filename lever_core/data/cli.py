"""``lever data build wordnet``, ``lever data build foldoc`` and ``lever data stats``."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="build and inspect XC datasets")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    build = sub.add_parser("build", help="build a dataset from a public resource")
    build_sub = build.add_subparsers(dest="source", required=True, metavar="SOURCE")
    wn = build_sub.add_parser(
        "wordnet",
        help="taxonomy completion from WordNet 3.0 nouns (synset -> ancestors within --depth)",
    )
    wn.add_argument("--out", required=True, help="output dataset folder")
    wn.add_argument("--max-docs", type=int, default=None,
                    help="keep a seeded sample of this many documents (label space follows)")
    wn.add_argument("--seed", type=int, default=0, help="seed of the sample and the 80/20 split")
    wn.add_argument("--depth", type=int, default=3, help="ancestor depth (LF-WikiHierarchy: 3)")
    wn.add_argument("--wordnet-dir", default=None,
                    help="folder with data.noun (default: $WNHOME, /usr/share/wordnet, nltk_data)")
    wn.set_defaults(func=_build_wordnet)

    fd = build_sub.add_parser(
        "foldoc",
        help="see-also task from FOLDOC (entry -> the entries its definition cross-references)",
    )
    fd.add_argument("--out", required=True, help="output dataset folder")
    fd.add_argument("--max-docs", type=int, default=None,
                    help="keep a seeded sample of this many documents (label space follows)")
    fd.add_argument("--seed", type=int, default=0, help="seed of the sample and the 80/20 split")
    fd.add_argument("--source", default=None,
                    help="foldoc.index / foldoc.dict.dz, their stem or folder "
                    "(default: $FOLDOC_DICT, /usr/share/dictd/foldoc)")
    fd.set_defaults(func=_build_foldoc)

    stats = sub.add_parser("stats", help="points, labels, tail share, label-frequency plot")
    stats.add_argument("dataset", help="dataset folder")
    stats.add_argument("--plot", default=None, help="write a label-frequency histogram PNG here")
    stats.add_argument("--json", action="store_true", help="print the statistics as JSON")
    stats.set_defaults(func=_stats)


def _build_wordnet(args: argparse.Namespace) -> int:
    from lever.data.dataset import XCDataset
    from lever.data.stats import dataset_stats, format_stats
    from lever.data.wordnet import build_wordnet_dataset

    built = build_wordnet_dataset(
        args.out,
        wordnet_dir=args.wordnet_dir,
        max_docs=args.max_docs,
        seed=args.seed,
        depth=args.depth,
    )
    print(
        f"wrote {built.out}: {built.num_train:,} train, {built.num_test:,} test, "
        f"{built.num_labels:,} labels (parse {built.parse_seconds:.1f}s, "
        f"total {built.total_seconds:.1f}s)"
    )
    print(format_stats(dataset_stats(XCDataset.load(built.out))))
    return 0


def _build_foldoc(args: argparse.Namespace) -> int:
    from lever.data.dataset import XCDataset
    from lever.data.foldoc import build_foldoc_dataset
    from lever.data.stats import dataset_stats, format_stats

    built = build_foldoc_dataset(
        args.out, source=args.source, max_docs=args.max_docs, seed=args.seed
    )
    print(
        f"wrote {built.out}: {built.num_train:,} train, {built.num_test:,} test, "
        f"{built.num_labels:,} labels from {built.num_entries:,} entries "
        f"(parse {built.parse_seconds:.1f}s, total {built.total_seconds:.1f}s)"
    )
    print(format_stats(dataset_stats(XCDataset.load(built.out))))
    return 0


def _stats(args: argparse.Namespace) -> int:
    from lever.data.dataset import XCDataset
    from lever.data.stats import dataset_stats, format_stats, plot_label_frequencies

    ds = XCDataset.load(args.dataset)
    stats = dataset_stats(ds)
    if args.plot:
        plot_label_frequencies(ds, args.plot)
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        print(format_stats(stats))
        if args.plot:
            print(f"plot: {args.plot}")
    return 0
