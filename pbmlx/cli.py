"""The ``pbmlx`` command: parses arguments and dispatches to one command module each.

Every command is a library function plus a thin ``main(args)`` in its own module; this file
only builds the parser and turns :class:`PbmlxError` into one ``pbmlx: error:`` line and exit
code 2 (with ``--debug``, the traceback instead).

With ``--json`` (the commands that have it: edit, judge, judge-bench, train, eval, doctor),
such an error is *also* one JSON object on stdout, ``{"error": "<the message>", "code": 2}``,
so a program reading stdout sees it; this holds for argument errors too when ``--json`` is
spelt out in full and the command has it. Notices from the library (``pbmlx.*`` loggers at
WARNING, e.g. transparency flattened for a JPEG) are one ``pbmlx: note:`` line each on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from pbmlx import __version__
from pbmlx.errors import PbmlxError

EXIT_USAGE = 2  # bad input, as argparse uses for bad arguments
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell convention
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a program killed by it


class _UsageExit(SystemExit):
    """argparse's exit on a bad argument (a SystemExit with code 2 to any other caller), with
    the message and the parser that refused it, for main's JSON error object."""

    def __init__(self, message: str, parser: argparse.ArgumentParser) -> None:
        super().__init__(EXIT_USAGE)
        self.message = message
        self.parser = parser


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line in pbmlx's format, not usage + message."""

    def error(self, message: str):  # type: ignore[override]
        message = f"{message} (see `{self.prog} --help`)"
        sys.stderr.write(f"pbmlx: error: {message}\n")
        raise _UsageExit(message, self)


class _NoteHandler(logging.Handler):
    """Library notices as ``pbmlx: note: ...`` lines on the stderr of the moment."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(f"pbmlx: note: {record.getMessage()}\n")
        except Exception:  # logging's rule: a failing handler must not break the program
            self.handleError(record)


def _show_notes() -> None:
    logger = logging.getLogger("pbmlx")
    if not any(isinstance(h, _NoteHandler) for h in logger.handlers):
        logger.addHandler(_NoteHandler(logging.WARNING))


def _print_json_error(message: str) -> None:
    """The error as one JSON object on stdout (the ``pbmlx: error:`` line stays on stderr)."""
    print(json.dumps({"error": message, "code": EXIT_USAGE}), flush=True)


def _has_json_option(parser: argparse.ArgumentParser, options: list[str]) -> bool:
    """Whether the command that ``parser`` refused for (``parser`` itself, or the subcommand
    named in ``options`` when the top-level parser refused, e.g. an unknown option) has
    ``--json``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            name = next((a for a in options if a in action.choices), None)
            return name is not None and _has_json_option(action.choices[name], [])
    return any("--json" in action.option_strings for action in parser._actions)


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
    options = argv[: argv.index("--")] if "--" in argv else argv  # after "--": operands only
    args = None
    _show_notes()
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except _UsageExit as e:
        # Parsing stopped, so args.json is unknown: an exact "--json" among the options of a
        # command that has the option stands in for it.
        if "--json" in options and _has_json_option(e.parser, options):
            _print_json_error(e.message)
        return EXIT_USAGE
    except PbmlxError as e:
        if debug:
            raise
        sys.stderr.write(f"pbmlx: error: {e}\n")
        if getattr(args, "json", False) is True:
            _print_json_error(str(e))
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
