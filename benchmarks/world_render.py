"""Milliseconds to render and to check one toy-world clip (prints figures; no pass/fail).

python benchmarks/world_render.py [--n 200] [--frames 8] [--size 32]
"""

import argparse
import time

import numpy as np

from setseq.toy import checker, world


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=32)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    scenes = [world.sample_scene(rng, "all") for _ in range(a.n)]
    world.render(scenes[0], a.frames, a.size, a.size)  # warm-up
    t0 = time.perf_counter()
    videos = [world.render(s, a.frames, a.size, a.size).video for s in scenes]
    t1 = time.perf_counter()
    for v in videos:
        checker.check(v)
    t2 = time.perf_counter()
    print(
        f"render {1000 * (t1 - t0) / a.n:.2f} ms/clip, check {1000 * (t2 - t1) / a.n:.2f} ms/clip "
        f"({a.n} clips of {a.frames}x{a.size}x{a.size})"
    )


if __name__ == "__main__":
    main()
