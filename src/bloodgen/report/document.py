"""A report as a list of blocks, rendered to Markdown (images as links) and HTML (images embedded).

Writing the content once and rendering it twice keeps report.md and report.html in step; the HTML
inlines every PNG as base64 so it opens from anywhere, e-mail included, without a server.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

from bloodgen.provenance import write_text


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    caption: str = ""
    align_right_from: int = 1  # numeric columns read better right-aligned


@dataclass
class Image:
    path: str  # relative to the report's folder
    caption: str


@dataclass
class Document:
    title: str
    blocks: list = field(default_factory=list)

    def add(self, *blocks) -> "Document":
        self.blocks.extend(blocks)
        return self


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(doc: Document) -> str:
    out = [f"# {doc.title}", ""]
    for b in doc.blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Paragraph):
            out += [b.text, ""]
        elif isinstance(b, Table):
            if b.caption:
                out += [f"*{b.caption}*", ""]
            out.append("| " + " | ".join(_md_cell(h) for h in b.header) + " |")
            out.append("|" + "|".join("---:" if i >= b.align_right_from else "---" for i in range(len(b.header))) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("")
        elif isinstance(b, Image):
            out += [f"![{b.caption}]({b.path})", "", f"*{b.caption}*", ""]
    return "\n".join(out)


_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; max-width: 1200px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { border-bottom: 1px solid #eee; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; }
th { background: #f3f3f3; }
tr:nth-child(even) td { background: #fafafa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption, .caption { color: #555; font-size: 0.9em; font-style: italic; }
code { background: #f4f4f4; padding: 1px 4px; border-radius: 3px; }
"""


def _inline_md(text: str) -> str:
    """Escape, then render the two inline marks reports use: `code` and **bold**."""
    parts = html.escape(text).split("`")
    for i in range(1, len(parts), 2):
        parts[i] = f"<code>{parts[i]}</code>"
    text = "".join(parts)
    bold = text.split("**")
    for i in range(1, len(bold), 2):
        bold[i] = f"<strong>{bold[i]}</strong>"
    return "".join(bold)


def to_html(doc: Document, base_dir: str | Path) -> str:
    base = Path(base_dir)
    out = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
           f"<title>{html.escape(doc.title)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{html.escape(doc.title)}</h1>"]
    for b in doc.blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{html.escape(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            out.append(f"<p>{_inline_md(b.text)}</p>")
        elif isinstance(b, Table):
            if b.caption:
                out.append(f"<p class='caption'>{_inline_md(b.caption)}</p>")
            out.append("<table><thead><tr>" + "".join(f"<th>{_inline_md(str(h))}</th>" for h in b.header)
                       + "</tr></thead><tbody>")
            for row in b.rows:
                cells = "".join(f"<td class='num'>{_inline_md(str(c))}</td>" if i >= b.align_right_from
                                else f"<td>{_inline_md(str(c))}</td>" for i, c in enumerate(row))
                out.append(f"<tr>{cells}</tr>")
            out.append("</tbody></table>")
        elif isinstance(b, Image):
            data = base64.b64encode((base / b.path).read_bytes()).decode("ascii")
            out.append(f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(b.caption)}'>"
                       f"<figcaption>{html.escape(b.caption)}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out)


def write_report(doc: Document, out_dir: str | Path, stem: str = "report") -> tuple[Path, Path]:
    """Write `stem.md` and a self-contained `stem.html` into `out_dir` (atomically)."""
    out = Path(out_dir)
    return (write_text(out / f"{stem}.md", to_markdown(doc)),
            write_text(out / f"{stem}.html", to_html(doc, out)))
