"""Documents to Markdown (figures linked) and self-contained HTML (figures inlined)."""

from __future__ import annotations

import base64
import html
import re

from analysis.blocks import Bullets, Document, Figure, Paragraph, Table

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; } h2 { border-bottom: 1px solid #bbb; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.6em 0 1.4em; font-size: 0.82em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; vertical-align: top; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
caption { caption-side: top; text-align: left; font-style: italic; padding: 0.3em 0; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-style: italic; font-size: 0.9em; }
.empty { color: #777; font-style: italic; }
.scroll { overflow-x: auto; }
"""


# ---------------------------------------------------------------- markdown


def _md_cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(table: Table) -> str:
    """A pipe table, or the table's empty message in italics."""
    lines = []
    if table.caption:
        lines += [f"*{table.caption}*", ""]
    if table.frame.empty:
        return "\n".join([*lines, f"_{table.empty_message}_"])
    header = [_md_cell(c) for c in table.frame.columns]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for row in table.frame.itertuples(index=False):
        lines.append("| " + " | ".join(_md_cell(v) for v in row) + " |")
    return "\n".join(lines)


def to_markdown(document: Document) -> str:
    """Markdown with figures linked by file name (they sit next to report.md)."""
    parts = [f"# {document.title}"]
    for section in document.sections:
        parts.append(f"## {section.title}")
        for block in section.blocks:
            if isinstance(block, Paragraph):
                parts.append(block.text)
            elif isinstance(block, Bullets):
                parts.append("\n".join(f"- {item}" for item in block.items))
            elif isinstance(block, Table):
                parts.append(markdown_table(block))
            elif isinstance(block, Figure):
                parts.append(f"![{block.caption}]({block.path.name})\n\n*{block.caption}*")
    return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------- html

_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")


def inline(text: str) -> str:
    """Escape text, then turn the only markdown the report uses (`code`, **bold**) into tags."""
    escaped = html.escape(text, quote=False)
    escaped = _CODE.sub(r"<code>\1</code>", escaped)
    return _BOLD.sub(r"<strong>\1</strong>", escaped)


def html_table(table: Table) -> str:
    caption = f"<caption>{inline(table.caption)}</caption>" if table.caption else ""
    if table.frame.empty:
        note = f'<p class="empty">{inline(table.empty_message)}</p>'
        return (f"<p><em>{inline(table.caption)}</em></p>" if caption else "") + note
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.frame.columns)
    body = "\n".join(
        "<tr>" + "".join(f"<td>{inline(str(v))}</td>" for v in row) + "</tr>"
        for row in table.frame.itertuples(index=False)
    )
    return (
        f'<div class="scroll"><table>{caption}<thead><tr>{head}</tr></thead>'
        f"<tbody>\n{body}\n</tbody></table></div>"
    )


def html_figure(figure: Figure) -> str:
    data = base64.b64encode(figure.path.read_bytes()).decode("ascii")
    alt = html.escape(figure.caption)
    return (
        f'<figure><img alt="{alt}" data-name="{html.escape(figure.path.name)}" '
        f'src="data:image/png;base64,{data}"><figcaption>{inline(figure.caption)}'
        "</figcaption></figure>"
    )


def to_html(document: Document) -> str:
    """One HTML file with inline CSS and base64 PNGs: opens from disk, no server."""
    body = [f"<h1>{inline(document.title)}</h1>"]
    for section in document.sections:
        body.append(f"<h2>{inline(section.title)}</h2>")
        for block in section.blocks:
            if isinstance(block, Paragraph):
                body.append(f"<p>{inline(block.text)}</p>")
            elif isinstance(block, Bullets):
                items = "".join(f"<li>{inline(item)}</li>" for item in block.items)
                body.append(f"<ul>{items}</ul>")
            elif isinstance(block, Table):
                body.append(html_table(block))
            elif isinstance(block, Figure):
                body.append(html_figure(block))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(document.title)}</title>\n<style>{CSS}</style>\n</head>\n"
        "<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )
