"""What the subcommands of ``biounet`` share: the error type of bad use, argument types, the help layout, and the
progress drawing of training. Parsing and printing only; the work is the library's."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEVICES = "auto (cuda if available, else cpu), cpu, cuda, cuda:N, or mps (Apple GPU, where torch has it)"
"""The help text of every ``--device``."""


class CliError(ValueError):
    """An error in the command line's use, reported as one line with exit code 2."""


# --- argument types -----------------------------------------------------------------------------------------------


def positive_int(text: str) -> int:
    """Parse a positive integer (argparse ``type=``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def tile(text: str) -> int | None:
    """Parse ``auto`` (None: chosen from the memory budget) or a positive tile side."""
    if text == "auto":
        return None
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be 'auto' or a positive integer, got {text!r}") from None


def diameter(text: str) -> float:
    """Parse an object diameter in pixels: a positive number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of pixels, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of pixels, got {text}")
    return value


def train_diameter(text: str) -> float | str:
    """Parse ``auto``, ``off`` or a positive object diameter in pixels (``biounet train --diameter``)."""
    if text in ("auto", "off"):
        return text
    try:
        return diameter(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be auto, off or a positive number of pixels, got {text!r}") from None


def pixel_size(text: str) -> tuple[float, float]:
    """Parse a pixel size in micrometres: ``0.19`` or ``0.19,0.2`` (y, x)."""
    from biounet.data.scale import parse_pixel_size

    try:
        return parse_pixel_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def memory(text: str) -> int:
    """Parse ``512M``, ``2G``, ``1.5GiB`` or a byte count (finite and at least one byte)."""
    units = {"k": 2**10, "m": 2**20, "g": 2**30}
    cleaned = text.strip().lower().removesuffix("ib").removesuffix("b")
    try:
        if cleaned and cleaned[-1] in units:
            value = float(cleaned[:-1]) * units[cleaned[-1]]
        else:
            value = float(cleaned)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a size such as 512M or 2G, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite size such as 512M or 2G, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least one byte, got {text!r}")
    return int(value)


def duration(text: str) -> float:
    """Parse ``90``, ``90s``, ``15m``, ``1.5h`` or ``1h30m`` to seconds
    (:func:`biounet.training.config.parse_duration`)."""
    from biounet.training.config import parse_duration

    try:
        return parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


# --- help layout --------------------------------------------------------------------------------------------------


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every option's default: ``(default: X)`` appended unless the help already says it; on/off for flags,
    ``(required)`` for required options.

    Options whose default is decided at run time say ``(default: measured ...)`` in their own help text.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "(default" in text or action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        if action.required:
            return f"{text} (required)"
        if action.nargs == 0:  # store_true / store_false
            return f"{text} (default: {'on' if action.default else 'off'})"
        return f"{text} (default: %(default)s)"


def verbosity(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """``-v``/``-q`` on the top-level parser and again on each subcommand (SUPPRESS keeps the top-level value)."""
    default = False if top else argparse.SUPPRESS
    parser.add_argument("-v", "--verbose", action="store_true", default=default,
                        help="log progress details (default: off)")
    parser.add_argument("-q", "--quiet", action="store_true", default=default,
                        help="print only errors and warnings (default: off)")


def subcommand(subparsers: Any, name: str, text: str, example: str) -> argparse.ArgumentParser:
    """Add the subcommand ``name`` with its one-line ``text``, an ``example`` epilog, and ``-v``/``-q``."""
    parser = subparsers.add_parser(name, help=text, description=text, epilog=example, formatter_class=HelpFormatter)
    verbosity(parser)
    return parser


# --- shared checks and printing -----------------------------------------------------------------------------------


def check_output_file(path: Path) -> None:
    """Check, creating nothing, that the file ``path`` can be written (its folder exists or can be made)."""
    from biounet.data.files import check_creatable_dir

    if path.is_dir():
        raise CliError(f"{path}: is a directory; give a file name such as model.pt")
    try:
        check_creatable_dir(path.parent if str(path.parent) else Path("."))
    except ValueError as err:
        raise CliError(f"{path}: cannot be written ({err})") from None


def describe(model: Any) -> str:
    """One line on a :class:`~biounet.core.model.UNet`: variant, depth, width, channels, classes, parameters."""
    from biounet.core.model import count_parameters

    c = model.config
    return (f"{c.variant} variant, depth {c.depth}, base {c.base_channels}, {c.in_channels} channel(s) in, "
            f"{c.num_classes} classes, {c.padding} convolutions, {count_parameters(model):,} parameters")


def train_progress(bar: Any) -> Callable[[Any], None]:
    """A progress callback that draws typed training events on a tqdm bar."""
    from biounet.training.events import StepEvent, ValidationEvent

    def progress(event: StepEvent | ValidationEvent) -> None:
        if isinstance(event, ValidationEvent):
            shown = ", ".join(f"{k} {v:.4f}" for k, v in event.scores.items())
            mark = " (best so far)" if event.best else ""
            if not bar.disable:  # -q: nothing but errors; never on stdout, which carries results (JSON)
                bar.write(f"step {event.step}: validation {shown or 'skipped (no validation images)'}{mark}",
                          file=sys.stderr)
            return
        bar.update(event.step - bar.n)
        bar.set_postfix(loss=f"{event.loss:.4f}", steps_per_s=f"{event.steps_per_s:.2f}",
                        elapsed=f"{event.elapsed_s:.0f}s")

    return progress
