"""Peak memory of loading a long, large clip: 60 s of 1080p at 30 fps, to Wan's 480 x 832 x 81.

    python benchmarks/long_clip_memory.py                 # writes the clip once to --cache, then measures
    python benchmarks/long_clip_memory.py --select windows --windows 3

The clip (1920 x 1080, 30 fps, 60 s, 1800 frames: a moving gradient with a sliding square) is
encoded once with libx264's ultrafast preset (that alone takes a minute or two on 2 CPU cores)
and kept in --cache. Each measurement runs in a fresh Python process: it imports setseq, records
its resident set, loads the clip with `load_video(fps=16, size=(480, 832), excerpt=...)` and
prints the process's peak resident set (`ru_maxrss`, so Python, torch and the decoder included),
the increase over the resident set after the imports, the output's own size and the time.
Not a timed test: run it by hand; the figures are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

SIZE, FRAMES, FPS = (480, 832), 81, 16.0


def make_clip(path: Path, seconds: int = 60, rate: int = 30) -> Path:
    import av
    import numpy as np

    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.mp4")
    H, W = 1080, 1920
    ys, xs = np.mgrid[0:H, 0:W]
    base = np.stack([(xs * 255 // W), (ys * 255 // H), np.full((H, W), 96)], -1).astype(np.uint8)  # (H, W, 3)
    with av.open(str(tmp), "w") as c:
        s = c.add_stream("libx264", rate=rate, options={"preset": "ultrafast", "crf": "28"})
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.thread_type = "AUTO"
        for k in range(seconds * rate):
            img = np.roll(base, 8 * k, axis=1)
            x = (k * 17) % (W - 200)
            img[400:600, x : x + 200] = (250, 220, 40)
            c.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        c.mux(s.encode(None))
    tmp.rename(path)
    return path


def measure(path: str, select: str, windows: int) -> dict:
    """In this process: load the clip and report memory (called in a fresh process)."""
    import resource

    import torch

    from setseq.video import Excerpt, load_video

    torch.set_num_threads(1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux: KiB)
    t = time.perf_counter()
    video = load_video(path, fps=FPS, size=SIZE, excerpt=Excerpt(select=select, frames=FRAMES, windows=windows))
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "select": select,
        "windows": windows,
        "frames": list(video.frames.shape),
        "output_mib": video.frames.numel() * 4 / 2**20,
        "rss_after_imports_mib": before,
        "peak_rss_mib": peak,
        "increase_mib": peak - before,
        "seconds": seconds,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "setseq" / "bench"), help="folder for the clip")
    p.add_argument("--select", default="uniform", choices=["head", "uniform", "windows"])
    p.add_argument("--windows", type=int, default=1, help="windows for --select windows (81 frames each)")
    p.add_argument("--measure", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.measure:
        print(json.dumps(measure(a.measure, a.select, a.windows)))
        return
    t = time.perf_counter()
    clip = make_clip(Path(a.cache) / "long-1080p30-60s.mp4")
    print(f"clip {clip} ({clip.stat().st_size / 2**20:.0f} MiB, ready in {time.perf_counter() - t:.0f} s)")
    out = subprocess.run(
        [sys.executable, __file__, "--measure", str(clip), "--select", a.select, "--windows", str(a.windows)],
        capture_output=True,
        text=True,
        check=True,
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"select={r['select']} windows={r['windows']}: frames {r['frames']} ({r['output_mib']:.0f} MiB as float32), "
        f"peak RSS {r['peak_rss_mib']:.0f} MiB ({r['rss_after_imports_mib']:.0f} MiB after imports, "
        f"+{r['increase_mib']:.0f} MiB loading), {r['seconds']:.0f} s"
    )
    if r["frames"][0] == FRAMES and r["peak_rss_mib"] >= 1024:  # the target: 480 x 832 x 81 under 1 GiB
        sys.exit(f"peak RSS {r['peak_rss_mib']:.0f} MiB is not under 1 GiB")


if __name__ == "__main__":
    main()
