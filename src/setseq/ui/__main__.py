"""`python -m setseq.ui FLAGS`: serve the web UI; `setseq ui FLAGS` checks the flags and hands over to it."""

import sys

from setseq.cli.options import EXIT_USAGE, Parser
from setseq.cli.ui import add_parser, check_address, model_flags
from setseq.errors import SetseqError


def main(argv: list[str] | None = None) -> int:
    """Parse `setseq ui`'s flags, check the address and log-in, and serve until interrupted."""
    sub = Parser(prog="setseq").add_subparsers(dest="command", required=True)
    add_parser(sub)
    a = sub.choices["ui"].parse_args(sys.argv[1:] if argv is None else argv)
    try:
        host, login = check_address(a)
        from setseq.ui.app import serve

        serve(
            a.workspace,
            models=a.models,
            host=host,
            port=a.port,
            auth=login,
            max_upload_mib=a.max_upload,
            examples=not a.no_examples,
            model_flags=model_flags(a),
        )
    except SetseqError as e:
        print(f"setseq: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
