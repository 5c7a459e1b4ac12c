"""Rendering the report's blocks: a self-contained HTML page (plots as base64 data URIs) and markdown
(plots linked as PNG files), with every string escaped for its format.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence

from autoprog.report.blocks import _Block, _Heading, _Paragraph, _Table

_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.2em}"
    "th,td{border:1px solid #bbb;padding:.25em .6em;text-align:right}"
    "th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}"
    "tr.chosen td{font-weight:bold;background:#eaf6ea}"
    "figure{margin:1em 0}img{max-width:100%}figcaption{color:#555;font-size:.9em}"
)


# -------------------------------------------------------------------------------------- rendering


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _html_table(table: _Table) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in table.headers)
    rows = []
    for i, row in enumerate(table.rows):
        cls = ' class="chosen"' if i in table.marked else ""
        rows.append(f"<tr{cls}>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"


def _html_block(block: _Block, images: Mapping[str, bytes]) -> str:
    if isinstance(block, _Heading):
        return f"<h{block.level}>{_esc(block.text)}</h{block.level}>"
    if isinstance(block, _Paragraph):
        return f"<p>{_esc(block.text)}</p>"
    if isinstance(block, _Table):
        return _html_table(block)
    data = base64.b64encode(images[block.filename]).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(block.caption)}">'
        f"<figcaption>{_esc(block.caption)}</figcaption></figure>"
    )


def render_html(blocks: Sequence[_Block], images: Mapping[str, bytes], title: str) -> str:
    """A self-contained HTML page: every string escaped, every plot a base64 data URI.

    Args:
        blocks: The content, from ``build_blocks``.
        images: PNG bytes by file name, for every plot the blocks reference.
        title: The page title.

    Returns:
        The page.
    """
    body = "\n".join(_html_block(b, images) for b in blocks)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _md_esc(text: str) -> str:
    text = html.escape(text, quote=False)
    for ch in "\\`*[]|":
        text = text.replace(ch, "\\" + ch)
    return " ".join(text.split())


def _md_table(table: _Table) -> str:
    lines = ["| " + " | ".join(_md_esc(h) for h in table.headers) + " |", "|" + "---|" * len(table.headers)]
    for i, row in enumerate(table.rows):
        cells = [_md_esc(c) for c in row]
        if i in table.marked:
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _md_block(block: _Block) -> str:
    if isinstance(block, _Heading):
        return "#" * block.level + " " + _md_esc(block.text)
    if isinstance(block, _Paragraph):
        return _md_esc(block.text)
    if isinstance(block, _Table):
        return _md_table(block)
    return f"![{_md_esc(block.caption)}]({block.filename})\n\n{_md_esc(block.caption)}"


def render_markdown(blocks: Sequence[_Block]) -> str:
    """The same content as markdown, with the plots linked as PNG files next to it.

    Args:
        blocks: The content, from ``build_blocks``.

    Returns:
        The markdown text.
    """
    return "\n\n".join(_md_block(b) for b in blocks) + "\n"
