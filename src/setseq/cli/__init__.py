"""The `setseq` command line: a thin shell over the library, one module per command group.
Bad input: one sentence on stderr and exit code 2, never a traceback.

    train     cli/train.py     learn concepts from videos
    generate  cli/generate.py  a video with a concept applied
    info      cli/info.py      what a concept file holds
    export    cli/export.py    a concept as a standard LoRA
    eval      cli/eval.py      metrics of a generated video
    demo      cli/demo.py      the whole method on the toy base, with a report
    toy       cli/toy.py       the toy world's tools (pretrain, eval, examples)
    bench     cli/bench.py     the ablation and leakage benchmarks
    ui        cli/ui.py        the web UI (train, watch, generate, export in a browser)
"""

from __future__ import annotations

import argparse
import sys

from setseq.cli import bench, demo, export, generate, info, toy, train, ui
from setseq.cli import eval as evaluate  # the module `eval`, not the builtin
from setseq.cli.options import EXIT_USAGE, Parser
from setseq.errors import SetseqError
from setseq.preempt import Preempted, sigterm_as_interrupt

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The `setseq` parser with every command; each sets ``func``, the handler that runs it."""
    from setseq import __version__

    parser = Parser(
        prog="setseq",
        description="Set-and-Sequence: personalise a text-to-video diffusion transformer with a dynamic "
        "concept (appearance and motion) learned from a single video.",
    )
    parser.add_argument("--version", action="version", version=f"setseq {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (train, generate, info, export, evaluate, demo, toy, bench, ui):
        group.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one `setseq` command line (``sys.argv[1:]`` when None) and return its exit code."""
    args = build_parser().parse_args(argv)
    try:
        with sigterm_as_interrupt():  # a scheduler's stop removes temporary files on the way out
            return args.func(args) or 0
    except Preempted as e:  # SIGTERM or SIGINT: the checkpoint is written
        print(f"setseq: {e}", file=sys.stderr)
        return e.code
    except SetseqError as e:
        print(f"setseq: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as e:  # Ctrl-C outside training, or a second signal during it
        print("setseq: interrupted; `setseq train ... --resume` continues from the last checkpoint.", file=sys.stderr)
        return getattr(e, "code", 130)
