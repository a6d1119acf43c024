"""The ``pbmlx`` command: parses arguments and dispatches to one command module each.

Every command is a library function plus a thin ``main(args)`` in its own module; this file
only builds the parser and turns :class:`PbmlxError` into one ``pbmlx: error:`` line and exit
code 2 (with ``--debug``, the traceback instead).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from pbmlx import __version__
from pbmlx.errors import PbmlxError

EXIT_USAGE = 2  # bad input, as argparse uses for bad arguments
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell convention
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a program killed by it


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line in pbmlx's format, not usage + message."""

    def error(self, message: str):  # type: ignore[override]
        sys.stderr.write(f"pbmlx: error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    from pbmlx import doctor, evaluate, flow
    from pbmlx.convert import cli as convert_cli
    from pbmlx.convert.coreml import cli as coreml_cli
    from pbmlx.judge import command as judge_command
    from pbmlx.train import command as train_command

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks for errors")

    parser = _Parser(prog="pbmlx", description="On-device, instruction-driven photo editing.")
    parser.add_argument("--version", action="version", version=f"pbmlx {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for module in (flow, judge_command, convert_cli, coreml_cli, train_command, evaluate, doctor):
        module.add_parser(sub, parents=[common])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except PbmlxError as e:
        if debug:
            raise
        sys.stderr.write(f"pbmlx: error: {e}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        if debug:
            raise
        sys.stderr.write("pbmlx: interrupted; nothing was written\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of our output went away (`pbmlx judge ... | head`): not an error of ours.
        # Point stdout at /dev/null so that flushing it at exit does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    raise SystemExit(main())
