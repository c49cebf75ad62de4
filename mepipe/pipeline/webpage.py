"""Self-contained HTML pages (``mepipe report``): pictures embedded, sortable and filterable tables.

A page made here needs nothing but a browser: images are JPEG or PNG ``data:`` URIs, charts are
inline SVG, and the sorting and filtering are a few dozen lines of plain JavaScript in the page.
Nothing is loaded from the network when it is viewed.

Tables made by :func:`table_html` sort on a click on any column heading (numbers as numbers,
text case-folded, empty cells last in both directions; a second click reverses). Filters made by
:func:`filters_html` hide the rows whose ``data-<name>`` attribute lacks the chosen value; a text
box matches anywhere in the row. Every value of a row's attribute is wrapped in ``|`` so values
may hold spaces.

:func:`write_page` writes a page atomically and never replaces a file that it did not make (a
page carries the ``<meta name="generator" content="mepipe report">`` it looks for).
"""

from __future__ import annotations

import base64
import html
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

#: The marker of a page mepipe wrote; :func:`write_page` replaces only files that carry it.
GENERATOR = "mepipe report"

#: Colours of categorical series (emotions, classes): Okabe & Ito's colour-blind-safe palette.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000", "#999999")


class PageError(Exception):
    """A page cannot be written; one line naming the path and why."""


def escape(value) -> str:
    """``value`` as text safe inside HTML elements and quoted attributes."""
    return html.escape(str(value), quote=True)


def image_uri(image: np.ndarray, *, quality: int = 85, kind: str = "jpeg") -> str:
    """A ``data:`` URI of an (H, W, 3) uint8 RGB image (or (H, W) gray), JPEG at ``quality`` or PNG."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if kind == "jpeg":
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    else:
        ok, encoded = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise PageError(f"cannot encode a {image.shape} image as {kind}")
    return f"data:image/{kind};base64,{base64.b64encode(encoded.tobytes()).decode('ascii')}"


def file_uri(path: str | Path) -> str:
    """A ``data:`` URI of an image file (PNG or JPEG, by its suffix), embedded as it is."""
    path = Path(path)
    kind = "png" if path.suffix.lower() == ".png" else "jpeg"
    return f"data:image/{kind};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def img(uri: str, alt: str, *, width: int | None = None, css: str = "") -> str:
    size = f' width="{width}"' if width else ""
    return f'<img src="{uri}" alt="{escape(alt)}" title="{escape(alt)}"{size} class="{css}">'


# ---------------------------------------------------------------- tables and filters

@dataclass(frozen=True)
class Column:
    """One table column: ``key`` names it in the rows, ``title`` heads it, ``help`` is its tooltip."""

    key: str
    title: str
    help: str = ""
    sortable: bool = True
    numeric: bool = False


@dataclass
class Row:
    """One table row: ``cells`` maps a column key to (html, sort value); ``attributes`` are the
    values the filters read (``{"subject": ["sub01"], "flag": ["failed", "low-score"]}``);
    ``css`` classes the row (``failed``, ``flagged``)."""

    cells: dict[str, tuple[str, object]]
    attributes: dict[str, Sequence[str]] = field(default_factory=dict)
    css: str = ""


def cell(value, *, digits: int | None = None, text: str | None = None) -> tuple[str, object]:
    """A cell showing ``value`` (floats to ``digits`` decimals; None and NaN shown as a dash and
    sorted last), or ``text`` when given, sorted by ``value``."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return ('<span class="none">&ndash;</span>' if text is None else text), ""
    if text is None:
        text = escape(f"{value:.{digits}f}" if digits is not None and isinstance(value, (float, np.floating)) else value)
    return text, value


def table_html(table_id: str, columns: Sequence[Column], rows: Sequence[Row], *, caption: str = "") -> str:
    """A ``<table class="sortable">`` of ``rows`` under ``columns``; the page's script sorts it."""
    head = "".join(
        f'<th scope="col" title="{escape(c.help)}"'
        + ("" if c.sortable else ' data-nosort=""')
        + (' class="num"' if c.numeric else "") + f">{escape(c.title)}</th>"
        for c in columns)
    body = []
    for row in rows:
        attributes = "".join(f' data-{escape(name)}="|{escape("|".join(values))}|"' for name, values in row.attributes.items())
        cells = []
        for column in columns:
            shown, key = row.cells.get(column.key, ('<span class="none">&ndash;</span>', ""))
            sort = "" if key is None else (repr(float(key)) if isinstance(key, (float, np.floating)) else str(key))
            cells.append(f'<td data-sort="{escape(sort)}"' + (' class="num"' if column.numeric else "") + f">{shown}</td>")
        body.append(f'<tr class="{escape(row.css)}"{attributes}>' + "".join(cells) + "</tr>")
    caption_html = f"<caption>{caption}</caption>" if caption else ""
    return (f'<table class="sortable" id="{escape(table_id)}">{caption_html}<thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def filters_html(table_id: str, filters: dict[str, tuple[str, Sequence[tuple[str, str]]]], *, search: bool = True) -> str:
    """Filter controls of the table ``table_id``: ``{attribute: (label, [(value, shown), ...])}``.

    The value ``""`` shows every row, ``"*"`` the rows with any value of the attribute, ``"-"``
    those with none; any other value the rows whose attribute holds it.
    """
    parts = []
    for name, (label, options) in filters.items():
        choices = "".join(f'<option value="{escape(value)}">{escape(shown)}</option>' for value, shown in options)
        parts.append(f'<label>{escape(label)} <select id="{escape(table_id)}-{escape(name)}" data-filter="{escape(name)}" '
                     f'data-filter-table="{escape(table_id)}">{choices}</select></label>')
    if search:
        parts.append(f'<label>search <input type="search" id="{escape(table_id)}-search" data-filter="" '
                     f'data-filter-table="{escape(table_id)}" placeholder="any text in the row"></label>')
    parts.append(f'<span class="count" id="{escape(table_id)}-count" data-count-table="{escape(table_id)}"></span>')
    return '<div class="filters">' + " ".join(parts) + "</div>"


# ---------------------------------------------------------------- charts

def stacked_bars_svg(labels: Sequence[str], series: dict[str, Sequence[int]], *, width: int = 560, bar: int = 14,
                     title: str = "") -> str:
    """Horizontal stacked bars as inline SVG: one bar per label, one segment per series (counts).

    The scale is the longest bar; each bar ends with its total, and a legend names the series.
    """
    totals = [sum(values[i] for values in series.values()) for i in range(len(labels))]
    longest = max(totals, default=0) or 1
    label_width, gap, legend = 90, 4, 22
    plot = width - label_width - 40
    height = legend + len(labels) * (bar + gap) + gap
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{escape(title)}" class="chart"><title>{escape(title)}</title>']
    x = label_width
    for index, name in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        parts.append(f'<rect x="{x}" y="4" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{x + 14}" y="13" font-size="11">{escape(name)}</text>')
        x += 24 + 7 * len(name)
    for row, label in enumerate(labels):
        y = legend + row * (bar + gap)
        parts.append(f'<text x="{label_width - 6}" y="{y + bar - 3}" font-size="11" text-anchor="end">{escape(label)}</text>')
        x = float(label_width)
        for index, (name, values) in enumerate(series.items()):
            if values[row]:
                span = plot * values[row] / longest
                parts.append(f'<rect x="{x:.1f}" y="{y}" width="{span:.1f}" height="{bar}" fill="{PALETTE[index % len(PALETTE)]}">'
                             f'<title>{escape(label)}: {escape(name)} {values[row]}</title></rect>')
                x += span
        parts.append(f'<text x="{x + 4:.1f}" y="{y + bar - 3}" font-size="11">{totals[row]}</text>')
    parts.append("</svg>")
    return "".join(parts)


def matrix_html(matrix: np.ndarray, rows: Sequence[str], columns: Sequence[str], *, corner: str = "") -> str:
    """A count matrix (a confusion matrix) as an HTML table, each cell shaded by its row's share."""
    matrix = np.asarray(matrix)
    head = "".join(f'<th scope="col">{escape(c)}</th>' for c in columns)
    lines = [f'<table class="matrix"><thead><tr><th>{escape(corner)}</th>{head}</tr></thead><tbody>']
    for name, values in zip(rows, matrix):
        total = max(int(values.sum()), 1)
        cells = "".join(
            f'<td style="background: rgba(0, 114, 178, {value / total:.2f}); color: {"#fff" if value / total > 0.55 else "#000"}">'
            f'{int(value)}</td>' for value in values)
        lines.append(f'<tr><th scope="row">{escape(name)}</th>{cells}</tr>')
    lines.append("</tbody></table>")
    return "".join(lines)


# ---------------------------------------------------------------- the page

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #111; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
.meta { color: #555; } nav { margin: 0.4em 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 2px 6px; vertical-align: middle; }
th { background: #f3f3f3; text-align: left; }
table.sortable th:not([data-nosort]) { cursor: pointer; }
table.sortable th[aria-sort="ascending"]::after { content: " \\25B2"; }
table.sortable th[aria-sort="descending"]::after { content: " \\25BC"; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.failed td { background: #fde2e1; } tr.flagged td { background: #fff4d6; }
.none { color: #aaa; }
.flag { display: inline-block; background: #b35900; color: #fff; border-radius: 3px; padding: 0 4px; margin: 1px; font-size: 12px; }
.flag.failed { background: #c0392b; } .reason { color: #c0392b; font-size: 12px; }
.filters { position: sticky; top: 0; background: #fff; padding: 6px 0; z-index: 1; }
.filters label { margin-right: 1em; } .count { color: #555; }
img.thumb { vertical-align: middle; transition: transform 0.1s; }
img.thumb:hover { transform: scale(2.5); transform-origin: left center; position: relative; z-index: 2; box-shadow: 0 0 6px #888; }
img.figure { max-width: 100%; }
.cards { display: flex; flex-wrap: wrap; gap: 8px; } .card { border: 1px solid #ddd; padding: 4px; font-size: 12px; }
code { background: #f3f3f3; padding: 0 3px; }
"""

_SCRIPT = r"""
(function () {
  function sortKey(cell) {
    var value = cell.getAttribute('data-sort');
    if (value === null) value = cell.textContent.trim();
    if (value === '') return {missing: true};
    var number = Number(value);
    return isNaN(number) ? {text: value.toLowerCase()} : {number: number};
  }
  function compare(a, b) {
    if ('number' in a && 'number' in b) return a.number - b.number;
    if ('number' in a) return -1;
    if ('number' in b) return 1;
    return a.text < b.text ? -1 : (a.text > b.text ? 1 : 0);
  }
  function sortTable(table, index, heading) {
    var descending = heading.getAttribute('aria-sort') === 'ascending';
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute('aria-sort'); });
    heading.setAttribute('aria-sort', descending ? 'descending' : 'ascending');
    var body = table.tBodies[0];
    var keyed = Array.prototype.map.call(body.rows, function (row, position) {
      return {row: row, key: sortKey(row.cells[index]), position: position};
    });
    keyed.sort(function (a, b) {
      if (a.key.missing || b.key.missing) {
        return (a.key.missing ? 1 : 0) - (b.key.missing ? 1 : 0) || a.position - b.position;
      }
      var order = compare(a.key, b.key);
      return (descending ? -order : order) || a.position - b.position;
    });
    keyed.forEach(function (item) { body.appendChild(item.row); });
  }
  function applyFilters(tableId) {
    var table = document.getElementById(tableId);
    var controls = document.querySelectorAll('[data-filter-table="' + tableId + '"]');
    var shown = 0, rows = table.tBodies[0].rows;
    Array.prototype.forEach.call(rows, function (row) {
      var visible = true;
      Array.prototype.forEach.call(controls, function (control) {
        var wanted = control.value;
        if (!wanted || !visible) return;
        var name = control.getAttribute('data-filter');
        if (!name) { visible = row.textContent.toLowerCase().indexOf(wanted.toLowerCase()) >= 0; return; }
        var held = row.getAttribute('data-' + name) || '||';
        if (wanted === '*') visible = held !== '||';
        else if (wanted === '-') visible = held === '||';
        else visible = held.indexOf('|' + wanted + '|') >= 0;
      });
      row.hidden = !visible;
      if (visible) shown += 1;
    });
    var counter = document.querySelector('[data-count-table="' + tableId + '"]');
    if (counter) counter.textContent = 'showing ' + shown + ' of ' + rows.length;
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (heading, index) {
      if (heading.hasAttribute('data-nosort')) return;
      heading.addEventListener('click', function () { sortTable(table, index, heading); });
    });
  });
  var tables = {};
  document.querySelectorAll('[data-filter-table]').forEach(function (control) {
    var tableId = control.getAttribute('data-filter-table');
    tables[tableId] = true;
    control.addEventListener(control.tagName === 'INPUT' ? 'input' : 'change', function () { applyFilters(tableId); });
  });
  Object.keys(tables).forEach(applyFilters);
})();
"""


def page_html(title: str, body: Sequence[str], *, subtitle: str = "", nav: Sequence[tuple[str, str]] = ()) -> str:
    """The whole page: ``title`` as its heading, links to the ``nav`` sections ((anchor, label)
    of :func:`section`), ``body`` parts in order, the style and the script."""
    meta = f'<p class="meta">{subtitle}</p>' if subtitle else ""
    if nav:
        meta += "<nav>" + " · ".join(f'<a href="#section-{escape(anchor)}">{escape(label)}</a>' for anchor, label in nav) + "</nav>"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta name="generator" content="{GENERATOR}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>{escape(title)}</h1>{meta}" + "\n".join(body) + f"<script>{_SCRIPT}</script></body></html>\n")


def section(title: str, *parts: str, anchor: str = "") -> str:
    """A titled ``<section>``; ``anchor`` becomes its id ``section-<anchor>`` (table ids stay free)."""
    ident = f' id="section-{escape(anchor)}"' if anchor else ""
    return f"<section{ident}><h2>{escape(title)}</h2>" + "".join(parts) + "</section>"


def write_page(path: str | Path, text: str) -> Path:
    """Write the page ``text`` to ``path`` (atomically: a temporary file renamed over it).

    Raises
    ------
    PageError
        ``path`` is a folder, or an existing file mepipe did not write (it lacks the generator
        marker: it is refused, never replaced), or the folder cannot be made or written.
    """
    path = Path(path)
    if path.is_dir():
        raise PageError(f"{path} is a folder; give the report's file name, e.g. {path / 'report.html'}")
    if path.exists():
        try:
            start = path.read_bytes()[:4096].decode("utf-8", "replace")
        except OSError as error:
            raise PageError(f"cannot read {path} to check it is a mepipe report: {error.strerror or error}") from None
        if f'<meta name="generator" content="{GENERATOR}">' not in start:
            raise PageError(f"{path} exists and is not a report mepipe wrote; it is left as it is: "
                            f"choose another --out, or move it away")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    except OSError as error:
        raise PageError(f"cannot write {path}: {error.strerror or error}") from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise PageError(f"cannot write {path}: {error.strerror or error}") from None
    return path
