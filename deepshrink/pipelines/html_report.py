"""One self-contained HTML page per run, written from plain data: the page a person opens.

A page is a title and a list of sections, each a small dataclass of strings and numbers:

* :class:`Text`: a heading, paragraphs and a bullet list;
* :class:`Table`: a header, rows of cells, a caption above and a legend below;
* :class:`Image`: a PNG or JPEG (a file path or its bytes) embedded as a base64 ``data:`` URI;
* :class:`Summary`: key/value pairs.

The page is self-contained: its CSS is inline and its images are ``data:`` URIs, so it references
nothing outside itself (no scripts, no fonts, no links) and can be mailed or archived as one file.
Every string is HTML-escaped (model, layer and file names come from user files); paragraphs,
bullets, legends, captions and summary values may use two bits of markdown, ``**bold**`` and
```code```, applied after escaping, so they cannot inject markup. Table cells are plain text.

The writer knows nothing of pruning or codecs: each pipeline (``compress``, ``run``, ``search``)
builds its own sections and calls :func:`write_html_report`.
"""

from __future__ import annotations

import base64
import html
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

from ..atomic import atomic_write_text

__all__ = ["Text", "Table", "Image", "Summary", "Section", "render_html", "write_html_report"]


@dataclass(frozen=True)
class Text:
    heading: str = ""
    paragraphs: Sequence[str] = ()
    bullets: Sequence[str] = ()


@dataclass(frozen=True)
class Table:
    header: Sequence[str]
    rows: Sequence[Sequence[object]]        # cells: str() of each, None as "--"
    heading: str = ""
    caption: str = ""                       # one line above the table
    legend: Sequence[str] = ()              # paragraphs below it: what the columns mean


@dataclass(frozen=True)
class Image:
    source: Union[str, os.PathLike, bytes]  # a PNG/JPEG file, or its bytes
    alt: str
    heading: str = ""
    caption: str = ""


@dataclass(frozen=True)
class Summary:
    items: Sequence[tuple[str, object]]
    heading: str = ""


Section = Union[Text, Table, Image, Summary]

_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1d2330;
       background: #ffffff; max-width: 1100px; margin: 2em auto; padding: 0 1.5em; }
h1 { font-size: 1.6em; border-bottom: 3px solid #2f6fb0; padding-bottom: .3em; }
h2 { font-size: 1.2em; margin-top: 2em; color: #2f6fb0; }
code { background: #eef1f6; padding: 0 .25em; border-radius: 3px; font-size: .92em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .92em; }
th, td { border: 1px solid #c9d1de; padding: .3em .7em; text-align: left; }
th { background: #2f6fb0; color: #ffffff; }
tr:nth-child(even) td { background: #f3f6fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; font-style: italic; padding-bottom: .3em; }
.legend { font-size: .85em; color: #4a5568; max-width: 60em; }
dl.summary { display: grid; grid-template-columns: max-content auto; gap: .25em 1.2em; }
dl.summary dt { font-weight: 600; }
dl.summary dd { margin: 0; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #c9d1de; }
figcaption { font-size: .85em; color: #4a5568; }
"""

_NUMBER = re.compile(r"[-+]?[\d,]*\.?\d+(e[-+]?\d+)?\s*(%|x|pp)?", re.IGNORECASE)
_MIME = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg"}


def _inline(text: str) -> str:
    """``text`` escaped, then ``**bold**`` and ```code``` turned into tags."""
    out = html.escape(str(text), quote=True)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)


def _heading(text: str) -> list[str]:
    return [f"<h2>{html.escape(text)}</h2>"] if text else []


def _cell(value: object) -> str:
    text = "--" if value is None else str(value)
    num = isinstance(value, (int, float)) or bool(_NUMBER.fullmatch(text.strip()))
    return ('<td class="num">' if num else "<td>") + f"{html.escape(text)}</td>"


def _data_uri(source: Union[str, os.PathLike, bytes]) -> str:
    blob = source if isinstance(source, bytes) else Path(source).read_bytes()
    mime = next((m for magic, m in _MIME.items() if blob.startswith(magic)), None)
    if mime is None:
        where = "<bytes>" if isinstance(source, bytes) else os.fspath(source)
        raise ValueError(f"{where}: not a PNG or JPEG image")
    return f"data:{mime};base64,{base64.b64encode(blob).decode('ascii')}"


def _render(section: Section) -> list[str]:
    if isinstance(section, Text):
        out = _heading(section.heading) + [f"<p>{_inline(p)}</p>" for p in section.paragraphs]
        if section.bullets:
            out += ["<ul>", *(f"<li>{_inline(b)}</li>" for b in section.bullets), "</ul>"]
        return out
    if isinstance(section, Table):
        out = _heading(section.heading) + ["<table>"]
        if section.caption:
            out.append(f"<caption>{_inline(section.caption)}</caption>")
        out.append("<thead><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in section.header)
                   + "</tr></thead>")
        out += ["<tbody>", *("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in section.rows),
                "</tbody>", "</table>"]
        return out + [f'<p class="legend">{_inline(p)}</p>' for p in section.legend]
    if isinstance(section, Image):
        cap = f"<figcaption>{_inline(section.caption)}</figcaption>" if section.caption else ""
        return _heading(section.heading) + [
            f'<figure><img src="{_data_uri(section.source)}" alt="{html.escape(section.alt, quote=True)}">{cap}'
            "</figure>"]
    if isinstance(section, Summary):
        return _heading(section.heading) + ['<dl class="summary">', *(
            f"<dt>{html.escape(str(k))}</dt><dd>{_inline('--' if v is None else str(v))}</dd>"
            for k, v in section.items), "</dl>"]
    raise TypeError(f"not a report section: {type(section).__name__}")


def render_html(title: str, sections: Sequence[Section]) -> str:
    """The page as one string (UTF-8, no external resources)."""
    body = [line for s in sections for line in _render(s)]
    return "\n".join(["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
                      '<meta name="viewport" content="width=device-width, initial-scale=1">',
                      f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
                      f"<h1>{_inline(title)}</h1>", *body, "</body>", "</html>", ""])


def write_html_report(path: str | os.PathLike, title: str, sections: Sequence[Section]) -> Path:
    """Write the page to ``path`` atomically; returns the path."""
    path = Path(path)
    atomic_write_text(path, render_html(title, sections))
    return path
