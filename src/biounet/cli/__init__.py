"""The ``biounet`` command line: one module per subcommand (``add_parser``, ``run``), thin handlers that build
configs and call the library.

Every handler returns an exit code; bad input becomes a one-line ``biounet <command>: error: ...`` on stderr and
exit code 2, never a traceback. A programming error (a ``TypeError`` that no check of biounet raised) keeps its
traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from biounet.cli import demo, evaluate, export, info, init, predict, train
from biounet.cli.common import CliError, HelpFormatter, verbosity
from biounet.cli.evaluate import EVALUATION_KINDS

logger = logging.getLogger("biounet")

EXIT_USAGE = 2
SUBCOMMANDS = {"init": init, "info": info, "predict": predict, "export": export, "demo": demo,
               "evaluate": evaluate, "train": train}
"""Each subcommand's module, in the order ``biounet --help`` lists them."""
_PACKAGE = Path(__file__).resolve().parents[1]


def _build_parser() -> argparse.ArgumentParser:
    """The ``biounet`` parser: ``--version``, ``-v``/``-q``, and each subcommand's own options."""
    from biounet import __version__

    parser = argparse.ArgumentParser(
        prog="biounet", description="U-Net as Ronneberger, Fischer & Brox (2015) describe it.",
        formatter_class=HelpFormatter, epilog="run 'biounet COMMAND --help' for a command's options and an example",
    )
    parser.add_argument("--version", action="version", version=f"biounet {__version__}")
    verbosity(parser, top=True)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS.values():
        module.add_parser(subparsers)
    return parser


def _warn_ineffective(args: argparse.Namespace) -> None:
    """Warn (stderr) about options given where they have no effect."""
    rules = {
        "predict": [("watershed", lambda a: not (a.instances or a.save_rois),
                     "--watershed has no effect without --instances (or --save-rois)"),
                    ("pattern", lambda a: not any(p.is_dir() and p.suffix.lower() != ".zarr" for p in a.inputs),
                     "--pattern has no effect: no input is a folder")],
        "train": [("boundary_px", lambda a: a.target not in (None, "boundary"),
                   "--boundary-px has no effect unless --target boundary")],
    }
    for name, useless, message in rules.get(args.command, []):
        if getattr(args, name, None) not in (None, False) and useless(args):
            print(f"biounet {args.command}: warning: {message}", file=sys.stderr)


def _error_text(err: BaseException) -> str:
    """One line for an exception: an OS error as ``<file>: <reason>``, anything else as its message."""
    if isinstance(err, OSError) and type(err).__str__ is OSError.__str__ and err.strerror and err.filename:
        name = err.filename if isinstance(err.filename, (str, bytes, os.PathLike)) else str(err.filename)
        text = f"{os.fsdecode(name)}: {err.strerror}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())  # one line, however the message was wrapped


def raised_by_a_check(err: BaseException) -> bool:
    """Whether biounet raised ``err`` on purpose: its innermost frame is a ``raise`` statement in biounet's own
    code (a check of the input that names the problem), and so is that of the error it was raised from, if that
    was an error of the same kind. A ``TypeError`` that Python or a library raised from a call gone wrong is a
    bug, not bad input."""
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return False
    last = frames[-1]
    ours = Path(last.filename).resolve().is_relative_to(_PACKAGE)
    if not (ours and (last.line or "").lstrip().startswith("raise ")):
        return False
    cause = err.__cause__
    return not isinstance(cause, type(err)) or raised_by_a_check(cause)


def _report(args: argparse.Namespace, err: BaseException, text: str) -> int:
    """Bad input in one line on stderr (with ``-v`` its traceback first); the exit code."""
    if args.verbose:
        traceback.print_exception(err, file=sys.stderr)
    print(f"biounet {args.command}: error: {text}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``biounet`` (pyproject: ``[project.scripts] biounet = "biounet.cli:main"``).

    Returns the exit code: 0, 2 for bad input (one line on stderr), 128 + N for a training stopped by signal N.
    A ``TypeError`` that is not one of biounet's checks propagates with its traceback (a bug).
    """
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    _warn_ineffective(args)
    try:
        return SUBCOMMANDS[args.command].run(args)
    except TypeError as err:
        if not raised_by_a_check(err):
            raise
        return _report(args, err, _error_text(err))
    except (ValueError, OSError, FloatingPointError) as err:
        return _report(args, err, _error_text(err))
    except MemoryError as err:
        return _report(args, err, f"out of memory{f' ({_error_text(err)})' if str(err) else ''}")


__all__ = ["EVALUATION_KINDS", "EXIT_USAGE", "SUBCOMMANDS", "CliError", "main", "raised_by_a_check"]

if __name__ == "__main__":
    sys.exit(main())
