"""One self-contained HTML page a person reads: the verdict and the model's gap first, then the evidence.

Figures are embedded as data URIs and the styling is inline, so the file opens anywhere, offline, requests
nothing from the network and runs no script; it can be mailed or archived as the audit's one record.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gmint.files import atomic_write

STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; color: #1d232b; max-width: 1040px; margin: 2rem auto; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; border-bottom: 1px solid #d5dae0;
padding-bottom: .2rem; margin-top: 2rem; } .lead { color: #5a6470; margin-top: 0; }
.verdict { border: 1px solid #d5dae0; border-left: 6px solid #7a8591; background: #fff; padding: .8rem 1rem; }
.verdict.evidence { border-left-color: #a33b00; } .verdict p { margin: .3rem 0; } .headline { font-weight: 600; }
.warning { color: #a33b00; } table { border-collapse: collapse; margin: .6rem 0; font-size: .9rem; }
th, td { border-bottom: 1px solid #d5dae0; padding: .25rem .6rem; text-align: left; vertical-align: top; }
th { background: #f3f5f7; } caption { text-align: left; color: #5a6470; padding: .3rem 0; }
figure { margin: 1rem 0; } figure img { max-width: 100%; border: 1px solid #eef0f2; }
figcaption { color: #5a6470; font-size: .9rem; } pre { background: #f3f5f7; padding: .6rem; overflow-x: auto;
font-size: .8rem; } .small { color: #5a6470; font-size: .85rem; }
"""


@dataclass(frozen=True)
class Table:
    """A table of text cells under a caption."""

    caption: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Figure:
    """A PNG drawn for the report, embedded in the page, with what it shows."""

    png: Path
    caption: str


@dataclass(frozen=True)
class Section:
    """A heading, then its paragraphs, tables and figures in that order."""

    heading: str
    paragraphs: tuple[str, ...] = ()
    tables: tuple[Table, ...] = ()
    figures: tuple[Figure, ...] = ()


@dataclass(frozen=True)
class Page:
    """The report: the headline and its context on top, the sections after, the record of how it was made last.

    `evidence` styles the headline: True where the audit found evidence of membership, False or None where it
    did not — which is not an all-clear, so it is shown neutral, never green.
    """

    title: str
    headline: str
    details: tuple[str, ...]
    evidence: bool | None
    warnings: tuple[str, ...] = ()
    sections: tuple[Section, ...] = ()
    provenance: Mapping[str, object] = field(default_factory=dict)
    config: str = ""


def _text(value: str) -> str:
    return html.escape(value, quote=True)


def _table(table: Table) -> str:
    head = "".join(f"<th>{_text(h)}</th>" for h in table.header)
    body = "".join("<tr>" + "".join(f"<td>{_text(c)}</td>" for c in row) + "</tr>" for row in table.rows)
    return (f"<table><caption>{_text(table.caption)}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>")


def _figure(figure: Figure) -> str:
    data = base64.b64encode(Path(figure.png).read_bytes()).decode("ascii")
    return (f'<figure><img alt="{_text(figure.caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_text(figure.caption)}</figcaption></figure>")


def _section(section: Section) -> str:
    parts = [f"<h2>{_text(section.heading)}</h2>"]
    parts += [f"<p>{_text(p)}</p>" for p in section.paragraphs]
    parts += [_table(t) for t in section.tables]
    parts += [_figure(f) for f in section.figures]
    return "\n".join(parts)


def render(page: Page) -> str:
    """The page as one HTML document (figures read from their PNG files and embedded)."""
    box = "verdict evidence" if page.evidence else "verdict"
    details = "".join(f"<p>{_text(d)}</p>" for d in page.details)
    warnings = "".join(f'<p class="warning">Warning: {_text(w)}</p>' for w in page.warnings)
    provenance = json.dumps(dict(page.provenance), indent=2, ensure_ascii=False, default=str)
    record = [Section("How this report was made", ("What made every figure above: versions, seeds, the split's "
                                                    "hash, the extraction's engine check.",))]
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_text(page.title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{_text(page.title)}</h1>",
        f'<div class="{box}" id="verdict"><p class="headline">{_text(page.headline)}</p>{details}{warnings}</div>',
        *(_section(s) for s in page.sections),
        *(_section(s) for s in record),
        f"<pre>{_text(provenance)}</pre>",
        *([f"<h2>Configuration</h2><pre>{_text(page.config)}</pre>"] if page.config else []),
        "</body></html>"])


def write_html(page: Page, path: Path) -> Path:
    """Write the page to `path`, whole or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        Path(tmp).write_text(render(page), encoding="utf-8")
    return path

