"""The audit's outputs: issues.csv (one row per finding), report.md and a self-contained report.html (thumbnails
inline as data: URIs, no external assets, works offline), and label_suspects.png (the top suspects as a grid)."""

from __future__ import annotations

import base64
import csv
import html
import io
from pathlib import Path

from PIL import Image

from catalens.apps.audit.findings import KINDS, Finding
from catalens.data.catalog import Catalog

COLUMNS = ["item", "kind", "score", "given_label", "suggested_label", "cluster", "evidence"]
SHOWN = 60  # findings of each kind with pictures in the report
THUMB = 96


def write_issues(path: Path, findings: list[Finding], items: list[str]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for f in findings:
            writer.writerow([items[f.row], f.kind, f"{f.score:.4f}", f.given_label, f.suggested_label, f.cluster,
                             f.evidence])


def thumbnail_uri(catalog: Catalog, row: int) -> str:
    try:
        image = catalog.read(row).convert("RGB")
    except Exception:  # noqa: BLE001 - an unreadable image gets a grey square
        image = Image.new("RGB", (THUMB, THUMB), (200, 200, 200))
    image.thumbnail((THUMB, THUMB))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def ordered(findings: list[Finding], kind: str) -> list[Finding]:
    chosen = [f for f in findings if f.kind == kind]
    if kind in ("duplicate", "leak"):  # whole clusters together, the most certain first
        best: dict[str, float] = {}
        for f in chosen:
            best[f.cluster] = max(best.get(f.cluster, 0.0), f.score)
        return sorted(chosen, key=lambda f: (-best[f.cluster], f.cluster, -f.score))
    return sorted(chosen, key=lambda f: -f.score)


NONE_FOUND = {"label": "none listed: every out-of-fold prediction agrees with its given label"}


def write_reports(out: Path, catalog: Catalog, findings: list[Finding], items: list[str], summary: dict) -> None:
    counts = {kind: sum(f.kind == kind for f in findings) for kind in KINDS}
    md = [f"# Audit of {summary['source']}", "",
          f"{summary['items']:,} images, {len(catalog.classes)} classes; features: {summary['features']}.", "",
          "| kind | findings |", "|---|---|", *[f"| {kind} | {counts[kind]:,} |" for kind in KINDS], ""]
    md += class_health_md(summary)
    page = [f"<h1>Audit of {html.escape(summary['source'])}</h1>",
            f"<p>{summary['items']:,} images, {len(catalog.classes)} classes; features: "
            f"{html.escape(summary['features'])}. All findings: <code>issues.csv</code>.</p>",
            "<table><tr><th>kind</th><th>findings</th></tr>"
            + "".join(f"<tr><td><a href='#{k}'>{k}</a></td><td>{counts[k]:,}</td></tr>" for k in KINDS) + "</table>",
            "<h2>Class health</h2>" + "".join(f"<p>{html.escape(line)}</p>" for line in class_health_md(summary)
                                              if line and not line.startswith("#"))]
    for note in summary.get("notes", []):
        md.append(f"note: {note}")
        page.append(f"<p class='note'>note: {html.escape(note)}</p>")
    for kind in KINDS:
        rows = ordered(findings, kind)
        md += ["", f"## {kind} ({len(rows):,})", ""]
        page.append(f"<h2 id='{kind}'>{kind} ({len(rows):,})</h2>")
        if not rows:
            text = NONE_FOUND.get(kind, "none found")
            if kind == "label" and summary["class_health"].get("oof_accuracy") is None:
                text = "not searched (see the note above)"
            md.append(text)
            page.append(f"<p>{html.escape(text)}</p>")
            continue
        md += ["| item | score | given | suggested | cluster | evidence |", "|---|---|---|---|---|---|"]
        cells = []
        for f in rows[:SHOWN]:
            md.append(f"| {items[f.row]} | {f.score:.3f} | {f.given_label} | {f.suggested_label} | {f.cluster} | "
                      f"{f.evidence} |")
            cells.append(f"<tr><td><img src='{thumbnail_uri(catalog, f.row)}' alt=''></td>"
                         f"<td>{html.escape(items[f.row])}</td><td>{f.score:.3f}</td>"
                         f"<td>{html.escape(f.given_label)}</td><td>{html.escape(f.suggested_label)}</td>"
                         f"<td>{html.escape(f.cluster)}</td><td>{html.escape(f.evidence)}</td></tr>")
        if len(rows) > SHOWN:
            md.append(f"\n... and {len(rows) - SHOWN:,} more in issues.csv")
        page.append("<table><tr><th></th><th>item</th><th>score</th><th>given</th><th>suggested</th>"
                    "<th>cluster</th><th>evidence</th></tr>" + "".join(cells) + "</table>"
                    + (f"<p>... and {len(rows) - SHOWN:,} more in issues.csv</p>" if len(rows) > SHOWN else ""))
    (out / "report.md").write_text("\n".join(md) + "\n")
    style = ("body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px;font-size:13px;text-align:left}img{display:block}"
             ".note{color:#555}")
    (out / "report.html").write_text("<!doctype html><html><head><meta charset='utf-8'><title>catalens audit</title>"
                                     f"<style>{style}</style></head><body>" + "\n".join(page) + "</body></html>\n")


def class_health_md(summary: dict) -> list[str]:
    health = summary.get("class_health", {})
    lines = ["## Class health", ""]
    if health.get("imbalance_ratio"):
        smallest = min(health["per_class"].items(), key=lambda item: item[1])
        largest = max(health["per_class"].items(), key=lambda item: item[1])
        lines.append(f"Imbalance ratio {health['imbalance_ratio']:.1f}: largest class {largest[0]} "
                     f"({largest[1]:,}), smallest {smallest[0]} ({smallest[1]:,}).")
    if health.get("oof_accuracy") is not None:
        lines.append(f"Out-of-fold accuracy of the linear heads: {health['oof_accuracy']:.3f}.")
    for pair in health.get("confused", []):
        lines.append(f"Most confused (out-of-fold predictions, at any confidence): {pair['given']} -> "
                     f"{pair['predicted']}: {pair['count']:,} "
                     f"({pair['share_of_given']:.1%} of {pair['given']}).")
    return lines + [""]


def suspects_grid(path: Path, catalog: Catalog, findings: list[Finding], count: int = 32) -> bool:
    """The top `count` label suspects as one picture: each with its given and suggested label."""
    from catalens.plots import plot_examples

    top = ordered(findings, "label")[:count]
    return plot_examples([catalog.read(f.row) for f in top],
                         [f"{f.given_label}\n-> {f.suggested_label} ({f.score:.2f})" for f in top], path,
                         title="Top label suspects: given -> suggested (1 - p(given))", cell=(1.6, 1.9),
                         dpi=110) is not None
