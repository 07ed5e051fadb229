"""`setseq ui`: the web UI (train, watch, generate, export) on a workspace folder, on this machine only
unless --listen and --auth say otherwise."""

from __future__ import annotations

import argparse
import os

from setseq.cli.options import COUNT, device_args
from setseq.errors import SetseqError

LOCAL = "127.0.0.1"
TOKEN_ENV = "SETSEQ_UI_TOKEN"


def add_parser(sub) -> None:
    """The `ui` command and its flags."""
    p = sub.add_parser(
        "ui",
        help="the web UI: train a concept from a clip, watch it learn, generate and export (needs the ui extra)",
        description="Serve the web UI on a workspace folder (clips, runs, samples and exports are files the CLI "
        "reads and writes too). Needs `pip install setseq[ui]`.",
    )
    p.add_argument("--workspace", default="setseq-workspace", help="the workspace folder (default: ./setseq-workspace)")
    p.add_argument("--models", help="a folder of local diffusers-format model folders to offer as bases")
    p.add_argument(
        "--listen",
        metavar="ADDR",
        help=f"serve on ADDR (e.g. 0.0.0.0) instead of {LOCAL}; needs --auth, as other machines can reach it",
    )
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument(
        "--auth",
        metavar="USER:PASSWORD",
        help=f"log-in for the page: USER:PASSWORD, or 'env' for user 'setseq' with the password in ${TOKEN_ENV}",
    )
    p.add_argument("--max-upload", type=COUNT, default=200, metavar="MIB", help="largest upload in MiB (default 200)")
    p.add_argument("--no-examples", action="store_true", help="do not copy the example clips into the workspace")
    device_args(p)  # passed on to every run and generation on a model folder (the toy base runs on the CPU)
    p.set_defaults(func=cmd_ui)


def model_flags(a: argparse.Namespace, pick_cuda: bool = True) -> list[str]:
    """The device flags given to `setseq ui`, as `setseq train` / `generate` take them; with
    `pick_cuda`, --device cuda when none is given and a GPU is there."""
    device = a.device
    if device is None and pick_cuda:
        import torch

        device = "cuda" if torch.cuda.is_available() else None
    flags = ["--device", device] if device else []
    flags += ["--dtype", a.dtype] if a.dtype else []
    flags += ["--fp8-base"] if a.fp8_base else []
    flags += ["--blocks-to-swap", str(a.blocks_to_swap)] if a.blocks_to_swap else []
    return flags


def credentials(auth: str | None) -> tuple[str, str] | None:
    """(user, password) from --auth; None without it.

    Raises:
        SetseqError: an --auth that is not USER:PASSWORD, or 'env' with the variable unset.
    """
    if auth is None:
        return None
    if auth == "env":
        token = os.environ.get(TOKEN_ENV, "")
        if not token:
            raise SetseqError(
                f"--auth env reads the password from ${TOKEN_ENV}, which is not set; set it or give USER:PASSWORD."
            )
        return "setseq", token
    user, sep, password = auth.partition(":")
    if not (sep and user and password):
        raise SetseqError(f"--auth takes USER:PASSWORD (or 'env' for ${TOKEN_ENV}), got {auth!r}.")
    return user, password


def check_address(a: argparse.Namespace) -> tuple[str, tuple[str, str] | None]:
    """The address to serve on and the log-in, (host, (user, password) or None).

    Raises:
        SetseqError: --listen to other machines without --auth, or a bad --auth.
    """
    host = a.listen or LOCAL
    login = credentials(a.auth)
    if host not in (LOCAL, "localhost", "::1") and login is None:
        raise SetseqError(
            f"--listen {host} lets other machines reach the UI; give --auth USER:PASSWORD "
            f"(or --auth env with ${TOKEN_ENV}) as well."
        )
    return host, login


def cmd_ui(a: argparse.Namespace) -> int:
    """Check the address, the log-in and that gradio is there, then hand this process to
    `python -m setseq.ui` with the same flags. The UI sits above the CLI (it runs the CLI's own
    commands), so the CLI starts it as a program rather than importing it."""
    import importlib.util
    import sys

    check_address(a)
    if importlib.util.find_spec("gradio") is None:
        raise SetseqError('the web UI needs gradio, which is not installed; run `pip install -e ".[ui]"`.')
    argv = ["--workspace", a.workspace, "--port", str(a.port), "--max-upload", str(a.max_upload)]
    for flag, value in (("--models", a.models), ("--listen", a.listen), ("--auth", a.auth)):
        argv += [flag, value] if value else []
    argv += ["--no-examples"] if a.no_examples else []
    argv += model_flags(a, pick_cuda=False)  # the server picks
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "setseq.ui", *argv])
