"""`catalens catalog stats`: what a data spec holds and what is wrong with it."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table
from rich.text import Text

from catalens.data import DataOptions, load_catalog
from catalens.progress import console


def catalog_stats(data: str, options: DataOptions | None = None, verify: bool = True) -> dict:
    """Items, products, classes, images per class, imbalance ratio and problems (`verify`: decode every image)."""
    catalog = load_catalog(data, options or DataOptions(), verify=verify, split=False)
    return catalog.stats()


def export_catalog(data: str, out: str | Path, options: DataOptions | None = None, verify: bool = False) -> int:
    """Write the catalog (image, label, product_id, title, description) as CSV; returns the number of rows."""
    catalog = load_catalog(data, options or DataOptions(), verify=verify, split=False)
    table = catalog.table.rename(columns={"ref": "image"})
    table[["image", "label", "product_id", "title", "description"]].to_csv(out, index=False)
    return len(table)


def print_stats(stats: dict) -> None:
    console.print(Text.assemble((str(stats["source"]), "bold"), f": {stats['items']:,} items, {stats['products']:,} "
                                f"products, {stats['classes']} classes, imbalance ratio {stats['imbalance_ratio']}"))
    if stats["per_split"]:
        console.print("splits: " + ", ".join(f"{name} {count:,}" for name, count in stats["per_split"].items()))
    table = Table(show_edge=False)
    table.add_column("class")
    table.add_column("images", justify="right")
    table.add_column("share", justify="right")
    total = max(1, stats["items"])
    for name, count in sorted(stats["per_class"].items(), key=lambda item: -item[1]):
        table.add_row(name, f"{count:,}", f"{count / total:.1%}")
    console.print(table)
    for note in stats["notes"]:
        console.print(f"note: {note}")
    if stats["problems"]:
        console.print(Text(f"{len(stats['problems'])} problem(s):", style="yellow"))
        for problem in stats["problems"][:20]:
            console.print(f"  {problem['ref']}: {problem['reason']}", soft_wrap=True)
        if len(stats["problems"]) > 20:
            console.print(f"  ... and {len(stats['problems']) - 20} more (use --json for all)")
    else:
        console.print("no problems found")
