"""report.html: report.md as one self-contained page, its figures embedded as data: URIs.

MLflow 3.17's artifact view shows an `.html` artifact in an iframe made from a
`blob:` URL with `sandbox="allow-scripts"` (ShowArtifactHtmlView): the page has
no address of its own, so a relative `<img src="figures/x.png">` cannot load
there, and a `.md` artifact is shown as text with its image links as text.
Embedding every PNG as a `data:` URI makes the one file readable inside MLflow
and from disk (file://) alike, with nothing fetched.

Rendered from report.md's own text (the subset the report writes: headings,
paragraphs, `- ` lists, pipe tables, images on their own line, **bold** and
`code`), so the two files always say the same thing. No script, no network.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable
from pathlib import Path

__all__ = ["REPORT_HTML", "REPORT_MD", "markdown_to_html", "write_report_files"]

REPORT_MD, REPORT_HTML = "report.md", "report.html"

_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)\s]+)\)$")
_TABLE_RULE = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?$")
_MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}

_STYLE = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
       max-width: 1100px; margin: 1.5em auto; padding: 0 1.5em; background: #fff; }
h1, h2, h3, h4, h5, h6 { line-height: 1.25; margin: 1.4em 0 0.5em; }
h1 { font-size: 1.8em; border-bottom: 1px solid #d0d7de; padding-bottom: 0.3em; }
h2 { font-size: 1.45em; border-bottom: 1px solid #d0d7de; padding-bottom: 0.3em; }
code { font: 0.9em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
       background: #f0f2f4; padding: 0.1em 0.3em; border-radius: 4px; }
.table { overflow-x: auto; margin: 0.8em 0; }
table { border-collapse: collapse; font-size: 0.85em; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; padding: 0.25em 0.6em; text-align: left; white-space: nowrap; }
th { background: #f6f8fa; }
tr:nth-child(even) td { background: #fafbfc; }
img { max-width: 100%; height: auto; display: block; margin: 0.8em 0; }
.missing { color: #cf222e; }
"""


def write_report_files(folder: Path, text: str) -> tuple[Path, Path]:
    """Write report.md (`text`) and report.html (the same, figures under `folder` embedded); returns both paths."""
    md, page = folder / REPORT_MD, folder / REPORT_HTML
    md.write_text(text, encoding="utf-8")
    page.write_text(markdown_to_html(text, folder), encoding="utf-8")
    return md, page


def markdown_to_html(text: str, base: Path) -> str:
    """The report's markdown -> a whole HTML page; `![alt](path)` lines read `base / path` into data: URIs."""
    body: list[str] = []
    paragraph: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        block = _block_of(lines, i, base)
        if block is None:  # plain text: gathered into a paragraph until a blank line or another block
            if line.strip():
                paragraph.append(_inline(line.strip()))
            else:
                _close(paragraph, body)
            i += 1
            continue
        _close(paragraph, body)
        rendered, i = block
        body.append(rendered)
    _close(paragraph, body)
    return _page(_title(lines), "\n".join(body))


def _block_of(lines: list[str], i: int, base: Path) -> tuple[str, int] | None:
    """(the HTML of the block starting at line i, the index after it), or None for paragraph text."""
    line = lines[i].rstrip()
    if m := _HEADING.match(line):
        level = len(m.group(1))
        return f"<h{level}>{_inline(m.group(2))}</h{level}>", i + 1
    if m := _IMAGE.match(line.strip()):
        return _image(m.group(1), m.group(2), base), i + 1
    if line.startswith("- "):
        end = _run_end(lines, i, lambda s: s.startswith("- "))
        items = "".join(f"<li>{_inline(s[2:].strip())}</li>" for s in lines[i:end])
        return f"<ul>{items}</ul>", end
    if line.startswith("|"):
        end = _run_end(lines, i, lambda s: s.startswith("|"))
        return _table(lines[i:end]), end
    return None


def _run_end(lines: list[str], start: int, belongs: Callable[[str], bool]) -> int:
    """Index of the first line from `start` on that does not belong to the block (`belongs(line)` false)."""
    end = start
    while end < len(lines) and belongs(lines[end].rstrip()):
        end += 1
    return end


def _close(paragraph: list[str], body: list[str]) -> None:
    if paragraph:
        body.append("<p>" + "\n".join(paragraph) + "</p>")
        paragraph.clear()


def _cells(row: str) -> list[str]:
    """A pipe-table row's cells ('\\|' is a literal bar)."""
    row = row.strip()
    row = row[1:] if row.startswith("|") else row
    row = row[:-1] if row.endswith("|") and not row.endswith("\\|") else row
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", row)]


def _table(rows: list[str]) -> str:
    """Pipe-table lines -> <table>; the row before a '|---|' rule is the header."""
    head: list[str] = []
    if len(rows) >= 2 and _TABLE_RULE.match(rows[1].strip()):
        head, rows = _cells(rows[0]), rows[2:]
    out = ['<div class="table"><table>']
    if head:
        out.append("<thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr></thead>")
    out.append("<tbody>")
    out += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in _cells(r)) + "</tr>" for r in rows]
    out.append("</tbody></table></div>")
    return "".join(out)


def _image(alt: str, src: str, base: Path) -> str:
    """An <img> whose src is the figure's bytes as a data: URI; a figure that is missing says so.

    Only files inside `base` are read: the page embeds the report's own figures, nothing else.
    """
    path = (base / src).resolve()
    mime = _MIME.get(path.suffix.lower())
    inside = path.is_relative_to(base.resolve())
    if mime is None or not inside or not path.is_file():
        return f'<p class="missing">[figure {html.escape(src)} missing: {html.escape(alt)}]</p>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<img src="data:{mime};base64,{data}" alt="{html.escape(alt, quote=True)}" '
            f'title="{html.escape(src, quote=True)}">')


def _inline(text: str) -> str:
    """Escape, then `code` spans and **bold** (no markup inside code)."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unmatched backtick: literal
        parts = [text]
    out = []
    for k, part in enumerate(parts):
        escaped = html.escape(part, quote=False)
        if k % 2:
            out.append(f"<code>{escaped}</code>")
        else:
            out.append(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped))
    return "".join(out)


def _title(lines: list[str]) -> str:
    first = next((m.group(2) for s in lines if (m := _HEADING.match(s.rstrip()))), "report")
    return html.escape(first.replace("`", ""), quote=False)


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{title}</title>\n'
            f"<style>{_STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")
