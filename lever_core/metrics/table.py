"""Paper-style tables of metric dicts (values in percent)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

TABLE_ROWS = ("P", "nDCG", "PSP", "PSnDCG", "R", "C")
MACRO_ROWS = ("MacroP", "MacroR", "MacroF1")


def format_table(
    results: Mapping[str, float],
    ks: Sequence[int] = (1, 3, 5),
    rows: Sequence[str] = TABLE_ROWS,
    markdown: bool = False,
) -> str:
    """One row per metric, one column per cut-off, two decimals; missing entries print as '-'.

    ``results`` is a dict like ``evaluate`` returns (``{"P@1": 45.12, ...}`` in percent). Rows
    with no value at any requested cut-off are left out.
    """
    header = ["metric", *[f"@{k}" for k in ks]]
    body = []
    for name in rows:
        vals = [results.get(f"{name}@{k}") for k in ks]
        if all(v is None for v in vals):
            continue
        body.append([name, *["-" if v is None else f"{v:.2f}" for v in vals]])
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join(lines)
    width = max([len(r[0]) for r in body] + [len(header[0])])
    cols = [max([len(r[i]) for r in body] + [len(header[i]), 6]) for i in range(1, len(header))]

    def line(r):
        return r[0].ljust(width) + "".join("  " + c.rjust(w) for c, w in zip(r[1:], cols))

    return "\n".join([line(header), *[line(r) for r in body]])
