"""Cell formats and Markdown helpers, and the one Markdown -> self-contained HTML
conversion (markdown-it)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd
from markdown_it import MarkdownIt

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; margin-bottom: 0.3em; }
h2 { border-bottom: 1px solid #bbb; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.3em 0 1.4em; font-size: 0.82em;
        display: block; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; vertical-align: top; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #ddd; }
"""


NO_DATA = "no data"


def num(value, fmt: str = ".3f") -> str:
    """A number in `fmt`; a dash for missing."""
    return "—" if pd.isna(value) else f"{float(value):{fmt}}"


def interval(value, lo, hi, fmt: str = ".3f", note: str = "") -> str:
    """'0.250 [0.089, 0.532]', or the value with the reason there is no interval."""
    if pd.isna(value):
        return note or NO_DATA
    if pd.isna(lo) or pd.isna(hi):
        return f"{num(value, fmt)} ({note or 'no interval'})"
    return f"{num(value, fmt)} [{num(lo, fmt)}, {num(hi, fmt)}]"


def rate(row, prefix: str) -> str:
    """'0.250 [0.089, 0.532] (3/12)' from the k, n, value, lo, hi columns of a row."""
    if row[f"{prefix}_n"] == 0:
        return NO_DATA
    estimate = interval(row[prefix], row[f"{prefix}_lo"], row[f"{prefix}_hi"])
    return f"{estimate} ({row[f'{prefix}_k']}/{row[f'{prefix}_n']})"


def cell(value) -> str:
    """Text safe inside a Markdown table cell."""
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def table(frame: pd.DataFrame, caption: str = "", empty: str = "nothing to show") -> str:
    """A Markdown pipe table under its caption, or the caption and `empty` in italics."""
    head = f"*{caption}*\n\n" if caption else ""
    if frame.empty:
        return f"{head}_{empty}_"
    lines = ["| " + " | ".join(cell(c) for c in frame.columns) + " |"]
    lines.append("|" + "---|" * len(frame.columns))
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(False)]
    return head + "\n".join(lines)


def figure(path: Path, caption: str) -> str:
    """A figure linked by file name (it sits next to report.md) with its caption."""
    return f"![{caption}]({path.name})\n\n*{caption}*"


def _inline_image(self, tokens, idx, options, env) -> str:
    """An image as a base64 data URI, so report.html opens from disk with no other file."""
    token = tokens[idx]
    name = token.attrGet("src")
    data = base64.b64encode((env["folder"] / name).read_bytes()).decode("ascii")
    alt = html.escape(self.renderInlineAsText(token.children, options, env))
    return f'<img alt="{alt}" data-name="{html.escape(name)}" src="data:image/png;base64,{data}">'


def to_html(markdown: str, title: str, folder: Path) -> str:
    """One HTML page with inline CSS and the figures of `folder` embedded."""
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    md.add_render_rule("image", _inline_image)
    body = md.render(markdown, {"folder": folder})
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n"
        f"<body>\n{body}</body>\n</html>\n"
    )
