"""``index.html``: one page that shows a report folder, opened straight from disk.

Sections, in order: the summary table (``summary.csv``) with the failing rows first
(``ERROR``, ``FAIL``, ``INCONCLUSIVE``, then ``PASS``, ``NOT_PROVIDED``: the order of
``parity.compare.STATUSES``; the file's order within each status), the diagnoses
(``diagnosis.csv``, and ``divergence.csv`` where training ran), the pictures (every PNG in
the folder: the heatmaps of failing layers first, then the training plots) and a list of
every file. Everything is read back from the folder itself, so the page shows exactly
what the files hold (cells as written, never re-formatted).

No server, no script, no network: one HTML file with inline CSS, images and files linked
by relative paths, so the folder can be moved or zipped. Tables come from pandas
(``DataFrame.to_html``); every cell, heading and file name is HTML-escaped here (cells
hold user-supplied text: layer names, exception messages, file paths).
"""

from __future__ import annotations

import html
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from parity.compare import STATUSES, is_failure
from parity.heatmaps import KEY, file_name

INDEX = "index.html"
PICTURE_ORDER = ("heatmap_", "training_diff_", "training_loss_")  # then any other PNG
STYLE = """
body { font-family: sans-serif; margin: 1.5em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; vertical-align: top; white-space: nowrap; }
td:last-child { white-space: normal; min-width: 40em; }
tr:has(span.status-FAIL), tr:has(span.status-ERROR), tr:has(span.status-INCONCLUSIVE) {
  background: #fde0dc; }
span.status-PASS { color: #1b5e20; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.8em; color: #555; }
"""


def failing_first(summary: pd.DataFrame) -> pd.DataFrame:
    """``summary`` reordered by status, worst first (:data:`parity.compare.STATUSES`),
    keeping the file's order within a status; an unknown status goes last. A table
    without a ``status`` column is returned unchanged."""
    if "status" not in summary.columns:
        return summary
    rank = {status: i for i, status in enumerate(STATUSES)}
    order = summary["status"].map(rank).fillna(len(STATUSES))
    return summary.iloc[order.argsort(kind="stable")]


def table_html(frame: pd.DataFrame, table_id: str, links: list[str] | None = None) -> str:
    """``frame`` as an HTML table, every cell escaped once; the ``status`` cells wrapped
    in ``<span class="status-...">`` (the CSS colours failing rows); ``links``: file names
    (or "") shown as a first column ``picture`` of links."""
    cells = frame.astype(str).map(html.escape)
    if "status" in cells.columns:
        cells["status"] = [f'<span class="status-{s}">{s}</span>' for s in cells["status"]]
    if links is not None:
        cells.insert(0, "picture", [_link(n, "heatmap") if n else "" for n in links])
    cells.columns = [html.escape(str(c)) for c in cells.columns]
    return cells.to_html(index=False, escape=False, table_id=table_id, border=0, na_rep="")


def render(folder: str | Path, title: str) -> str:
    """The page for the report folder ``folder`` (its files as they are now)."""
    folder = Path(folder)
    parts = [f"<h1>{html.escape(title)}</h1>"]
    summary = _read(folder / "summary.csv")
    if summary is None:
        parts.append("<p>No summary.csv in this folder.</p>")
    else:
        statuses = summary["status"] if "status" in summary else pd.Series(dtype=object)
        failing = int(statuses.map(is_failure).astype(bool).sum())  # an empty sum is ''
        ordered = failing_first(summary)
        parts += [f"<h2>Summary: {len(summary)} checks, {failing} failing</h2>",
                  table_html(ordered, "summary", heatmap_links(ordered, folder))]  # fmt: skip
    for name, heading in (("diagnosis", "Diagnoses"), ("divergence", "First divergence")):
        frame = _read(folder / f"{name}.csv")
        if frame is not None:
            shown = table_html(frame, name) if len(frame) else "<p>No rows.</p>"
            parts += [f"<h2>{heading} ({name}.csv)</h2>", shown]
    pictures = pictures_of(folder)
    if pictures:
        parts.append("<h2>Pictures</h2>")
        parts += [_figure(name) for name in pictures]
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != INDEX)
    links = "".join(f"<li>{_link(n, n)}</li>" for n in files)
    parts.append(f"<h2>Files</h2><ul>{links}</ul>")
    head = f"<title>{html.escape(title)}</title><style>{STYLE}</style>"
    body = "\n".join(parts)
    return f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">{head}</head>\n' \
           f"<body>\n{body}\n</body></html>\n"  # fmt: skip


def pictures_of(folder: Path) -> list[str]:
    """The PNG file names in ``folder``: by :data:`PICTURE_ORDER`, then by name."""
    names = sorted(p.name for p in Path(folder).glob("*.png"))

    def rank(name: str) -> int:
        return next((i for i, p in enumerate(PICTURE_ORDER) if name.startswith(p)),
                    len(PICTURE_ORDER))  # fmt: skip

    return sorted(names, key=rank)


def write_index(folder: str | Path, title: str) -> Path:
    """Write ``folder/index.html`` (:func:`render`); returns its path."""
    path = Path(folder) / INDEX
    path.write_text(render(folder, title), encoding="utf-8")
    return path


def heatmap_links(summary: pd.DataFrame, folder: Path) -> list[str] | None:
    """Per summary row, the name of its heatmap in ``folder`` (``parity.heatmaps``), or ""
    if it has none; None when the table lacks the key columns."""
    if not set(KEY) <= set(summary.columns):
        return None
    names = [file_name(*key) for key in summary[list(KEY)].itertuples(index=False)]
    return [n if (Path(folder) / n).is_file() else "" for n in names]


def _link(name: str, text: str) -> str:
    return f'<a href="{quote(name)}">{html.escape(text)}</a>'


def _figure(name: str) -> str:
    text = html.escape(name)
    return (f'<figure><a href="{quote(name)}"><img src="{quote(name)}" alt="{text}"></a>'
            f"<figcaption>{text}</figcaption></figure>")  # fmt: skip


def _read(path: Path) -> pd.DataFrame | None:
    """The CSV as text cells (exactly as written), or None if absent or empty."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    return pd.read_csv(path, dtype=str, keep_default_na=False)
