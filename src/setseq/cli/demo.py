"""`setseq demo`: the whole method on the embedded base, with a report."""

from __future__ import annotations

import argparse
from pathlib import Path

from setseq.cli.options import SEED


def add_parser(sub) -> None:
    """The `demo` command and its flags."""
    p = sub.add_parser(
        "demo",
        help="run the whole method on the embedded base and write a report",
        description="Learn a shipped example concept on the embedded toy base, generate its "
        "reconstruction, edits and a restyle next to the base model, and write "
        "report.html, metrics.json, the concept file and the videos into --out.",
    )
    p.add_argument("--out", default="demo-out", help="output folder (default: demo-out)")
    p.add_argument("--concept", default="sprite", help="example concept: sprite, waves or flicker (default: sprite)")
    p.add_argument("--quick", action="store_true", help="a short run (tests use it): a few minutes on 2 CPU cores")
    p.add_argument("--base", default="toy", help="base model (default: toy)")
    p.add_argument("--seed", type=SEED, default=0, help="random seed (default 0)")
    p.add_argument("--compose", action="store_true", help="also learn waves and flicker jointly and compose them")
    p.set_defaults(func=cmd_demo)


def cmd_demo(a: argparse.Namespace) -> int:
    """Run the demo into --out and print its summary."""
    from setseq.demo import run_demo

    m = run_demo(a.out, concept=a.concept, quick=a.quick, base=a.base, seed=a.seed, compose=a.compose)
    for who, s in m["summary"].items():
        print(
            f"{who:>8}: identity {s['identity']:.2f}, motion {s['motion']:.2f}, edits followed {s['edit_followed']:.0%}"
        )
    print(f"open {Path(a.out) / 'report.html'}")
    return 0
