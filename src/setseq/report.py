"""A self-contained HTML report: videos side by side, prompts, loss curves (inline SVG), metrics."""

from __future__ import annotations

import html
from pathlib import Path

import torch

from setseq.errors import SetseqError
from setseq.fileio import atomic_path


def _smooth(values: list[float], k: int) -> list[float]:
    """Trailing moving average over k points (fewer at the start)."""
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v - (values[i - k] if i >= k else 0.0)
        out.append(acc / min(i + 1, k))
    return out


def loss_svg(curves: dict[str, list[float]], width: int = 640, height: int = 240) -> str:
    """Training loss per stage, one stage after the other on a shared step axis.

    Each step's loss is a faint dot; a line through them is the moving average over a twentieth of
    the steps (at least 5), which is what to read: a flow-matching loss is noisy step to step
    because every step draws other timesteps. The y-axis spans the 1st to 99th percentile of the
    raw points, so that a few outliers do not flatten the curve.

    Args:
        curves: stage name -> per-step losses.
    """
    series = [(name, v) for name, v in curves.items() if v]
    if not series:
        return "<p>no losses recorded</p>"
    allv = sorted(x for _, v in series for x in v)
    lo, hi = allv[int(0.01 * (len(allv) - 1))], allv[int(0.99 * (len(allv) - 1))]
    span = (hi - lo) or 1.0
    n = len(allv)
    k = max(5, n // 20)
    pad = 40
    sx = lambda i: pad + (width - 2 * pad) * i / max(1, n - 1)
    sy = lambda y: height - pad - (height - 2 * pad) * (min(max(y, lo), hi) - lo) / span
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" class="plot">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>',
        f'<text x="4" y="{pad + 4}" font-size="11">{hi:.4f}</text>',
        f'<text x="4" y="{height - pad + 4}" font-size="11">{lo:.4f}</text>',
        f'<text x="{width / 2:.0f}" y="{height - 10}" font-size="12" text-anchor="middle">'
        f"step ({n} in all); line: moving average of {k}</text>",
    ]
    start = 0
    for j, (name, v) in enumerate(series):
        c = colours[j % len(colours)]
        parts += [
            f'<circle cx="{sx(start + i):.1f}" cy="{sy(y):.1f}" r="1.2" fill="{c}" fill-opacity="0.25"/>'
            for i, y in enumerate(v)
        ]
        pts = " ".join(f"{sx(start + i):.1f},{sy(y):.1f}" for i, y in enumerate(_smooth(v, k)))
        parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{pts}"/>')
        parts.append(
            f'<text x="{sx(start) + 4:.1f}" y="{pad - 8 + 14 * j}" font-size="12" fill="{c}">{html.escape(name)}</text>'
        )
        if start:
            parts.append(
                f'<line x1="{sx(start):.1f}" x2="{sx(start):.1f}" y1="{pad}" y2="{height - pad}" '
                f'stroke="#999" stroke-dasharray="4 3"/>'
            )
        start += len(v)
    parts.append("</svg>")
    return "\n".join(parts)


def frame_strip(path: str | Path, videos: list[torch.Tensor], scale: int = 4, gap: int = 2) -> Path:
    """Write every frame of one or more clips as a PNG: one row per clip, frames left to right.

    Args:
        path: the PNG to write (atomically).
        videos: clips (F, 3, H, W) in [-1, 1]; rows may differ in frame count, not in H x W.
        scale: each pixel becomes scale x scale pixels (nearest neighbour, so pixels stay visible).
        gap: white pixels between frames and rows, before scaling.

    Returns:
        The path written. Raises `SetseqError` on an empty list or clips of different sizes.
    """
    from PIL import Image

    if not videos:
        raise SetseqError("frame_strip needs at least one clip.")
    sizes = {tuple(v.shape[-2:]) for v in videos}
    if len(sizes) > 1:
        raise SetseqError(f"frame_strip needs clips of one frame size, got {sorted(sizes)}.")
    (h, w), frames = sizes.pop(), max(v.shape[0] for v in videos)
    sheet = torch.ones(3, len(videos) * (h + gap) - gap, frames * (w + gap) - gap)
    for r, video in enumerate(videos):
        for f, frame in enumerate(video.detach().float().cpu().clamp(-1, 1)):
            y, x = r * (h + gap), f * (w + gap)
            sheet[:, y : y + h, x : x + w] = (frame + 1) / 2
    rgb = (sheet * 255).round().byte().permute(1, 2, 0).numpy()  # (rows, cols, 3)
    image = Image.fromarray(rgb).resize((rgb.shape[1] * scale, rgb.shape[0] * scale), Image.NEAREST)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)


def strip_cell(src: str, label: str) -> str:
    """A frame strip image (from `frame_strip`) with its label, full width."""
    return (
        f'<div class="strip"><b>{html.escape(label)}</b><br>'
        f'<img src="{html.escape(src)}" alt="{html.escape(label)}: every frame"></div>'
    )


def video_cell(src: str, label: str, caption: str = "") -> str:
    return (
        f'<figure><video src="{html.escape(src)}" autoplay loop muted playsinline width="192"></video>'
        f"<figcaption><b>{html.escape(label)}</b><br><span>{html.escape(caption)}</span></figcaption></figure>"
    )


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
.row{margin-bottom:8px}.plot{border:1px solid #ddd}\n.strip{margin:0 0 10px 0;font-size:12px}.strip img{image-rendering:pixelated;max-width:100%}"""


def write_report(path: str | Path, title: str, sections: list[tuple[str, str]]) -> Path:
    """Write an HTML page of (heading, html body) sections; videos are referenced by relative path."""
    body = "\n".join(f"<h2>{html.escape(h)}</h2>\n{b}" for h, b in sections)
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>"
    )
    with atomic_path(path) as tmp:
        tmp.write_text(page)
    return Path(path)
