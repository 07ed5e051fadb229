"""A self-contained HTML report: videos side by side, prompts, loss curves (inline SVG), metrics."""

from __future__ import annotations

import html
from pathlib import Path

from setseq.fileio import atomic_path


def _smooth(values: list[float], k: int = 10) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v - (values[i - k] if i >= k else 0.0)
        out.append(acc / min(i + 1, k))
    return out


def loss_svg(curves: dict[str, list[float]], width: int = 640, height: int = 220) -> str:
    """Training loss per stage, one after the other on a shared step axis (moving average of 10)."""
    series = [(name, _smooth(v)) for name, v in curves.items() if v]
    if not series:
        return "<p>no losses recorded</p>"
    allv = [x for _, v in series for x in v]
    lo, hi = min(allv), max(allv)
    span = (hi - lo) or 1.0
    n = sum(len(v) for _, v in series)
    pad = 36
    sx = lambda i: pad + (width - 2 * pad) * i / max(1, n - 1)
    sy = lambda y: height - pad - (height - 2 * pad) * (y - lo) / span
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" class="plot">',
             f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>',
             f'<text x="{pad}" y="{pad - 12}" font-size="12">{hi:.4f}</text>',
             f'<text x="{pad}" y="{height - 8}" font-size="12">{lo:.4f}   (step axis: {n} steps)</text>']
    start = 0
    for j, (name, v) in enumerate(series):
        pts = " ".join(f"{sx(start + i):.1f},{sy(y):.1f}" for i, y in enumerate(v))
        c = colours[j % len(colours)]
        parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{pts}"/>')
        parts.append(f'<text x="{sx(start) + 4:.1f}" y="{pad + 14 * (j + 1)}" font-size="12" fill="{c}">'
                     f'{html.escape(name)}</text>')
        if start:
            parts.append(f'<line x1="{sx(start):.1f}" x2="{sx(start):.1f}" y1="{pad}" y2="{height - pad}" '
                         f'stroke="#999" stroke-dasharray="4 3"/>')
        start += len(v)
    parts.append("</svg>")
    return "\n".join(parts)


def video_cell(src: str, label: str, caption: str = "") -> str:
    return (f'<figure><video src="{html.escape(src)}" autoplay loop muted playsinline width="192"></video>'
            f'<figcaption><b>{html.escape(label)}</b><br><span>{html.escape(caption)}</span></figcaption></figure>')


def table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4f}"
        if isinstance(v, bool):
            return "yes" if v else "no"
        return html.escape("" if v is None else str(v))

    body = "".join("<tr>" + "".join(f"<td>{fmt(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
figure{display:inline-block;margin:0 12px 16px 0;vertical-align:top;width:192px}
video{image-rendering:pixelated;border:1px solid #ccc;background:#000}
figcaption{font-size:12px}figcaption span{color:#555}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
.row{margin-bottom:8px}.plot{border:1px solid #ddd}"""


def write_report(path: str | Path, title: str, sections: list[tuple[str, str]]) -> Path:
    """Write an HTML page of (heading, html body) sections; videos are referenced by relative path."""
    body = "\n".join(f"<h2>{html.escape(h)}</h2>\n{b}" for h, b in sections)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>")
    with atomic_path(path) as tmp:
        tmp.write_text(page)
    return Path(path)
