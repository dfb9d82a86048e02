"""The command line's help: every option shows its default (or says it is measured), an example per command,
--version, -v/-q after every subcommand, and warnings for options that have no effect."""

from __future__ import annotations

import argparse
import re

import numpy as np
import pytest
from PIL import Image

import biounet
from biounet.cli import _build_parser, main


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def _option_helps(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each option's help as --help prints it (before line wrapping)."""
    formatter = parser._get_formatter()
    return {action.option_strings[-1]: formatter._expand_help(action) for action in parser._actions
            if action.option_strings and action.help is not argparse.SUPPRESS
            and not isinstance(action, (argparse._HelpAction, argparse._VersionAction))}


def test_every_option_of_every_subcommand_shows_its_default():
    """... or says that it is measured at run time, or required (no default)."""
    parser = _build_parser()
    missing = []
    for name, sub in _subcommands(parser).items():
        for option, text in _option_helps(sub).items():
            if not re.search(r"\((default: [^)]+|required)\)", text) and "measured" not in text:
                missing.append(f"{name} {option}: {text!r}")
    assert not missing, "options whose help shows no default:\n" + "\n".join(missing)
    assert set(_subcommands(parser)) == {"init", "info", "predict", "export", "demo", "evaluate", "train"}


def test_measured_defaults_say_so():
    helps = _option_helps(_subcommands(_build_parser())["train"])
    for option in ("--precision", "--base-channels", "--workers"):
        assert "measured" in helps[option], option
    assert "(default: auto)" in helps["--label-kind"]


def test_every_subcommand_has_an_example():
    for name, sub in _subcommands(_build_parser()).items():
        assert f"biounet {name} " in (sub.epilog or ""), name
        sub.format_help()  # renders without a formatting error


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"biounet {biounet.__version__}\n"


@pytest.mark.parametrize("argv", [["evaluate", "--pred", "p", "--truth", "t"], ["info", "m.pt"],
                                  ["train", "--data", "d", "--out", "o"], ["init", "--out", "m.pt"]])
def test_verbose_and_quiet_after_any_subcommand(argv):
    parser = _build_parser()
    plain = parser.parse_args(argv)
    assert (plain.verbose, plain.quiet) == (False, False)
    after = parser.parse_args([*argv, "-v", "-q"])
    assert (after.verbose, after.quiet) == (True, True)
    before = parser.parse_args(["-v", *argv])
    assert before.verbose is True  # the top-level flag is not reset by the subcommand's default


def test_choices_come_from_the_library():
    from biounet.evaluation.evaluate import KINDS
    from biounet.training.config import LABEL_KINDS

    subs = _subcommands(_build_parser())
    choices = {a.dest: a.choices for a in subs["train"]._actions}
    assert tuple(choices["label_kind"]) == LABEL_KINDS
    assert tuple(next(a for a in subs["evaluate"]._actions if a.dest == "kind").choices) == KINDS


def test_watershed_without_instances_warns(tmp_path, capsys):
    model = tmp_path / "m.pt"
    assert main(["init", "--out", str(model), "--base-channels", "4", "--depth", "2"]) == 0
    Image.fromarray(np.zeros((40, 40), dtype=np.uint8)).save(tmp_path / "a.png")
    capsys.readouterr()
    assert main(["predict", str(model), str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), "--watershed",
                 "-q"]) == 0
    assert "warning: --watershed has no effect without --instances" in capsys.readouterr().err
    assert main(["predict", str(model), str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), "--watershed",
                 "--instances", "-q"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_evaluation_kinds_restated_for_start_up_are_the_evaluators():
    import subprocess
    import sys

    from biounet.cli import EVALUATION_KINDS
    from biounet.evaluation.evaluate import KINDS

    assert EVALUATION_KINDS == KINDS
    # building the parser (every command's start-up) does not import the metrics
    code = "import sys; from biounet.cli import _build_parser; _build_parser(); print('biounet.evaluation.metrics' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_each_default_shown_once_and_never_none():
    """No option says ``(default: ...)`` twice (a help text that names its default and the formatter's appended
    one), and none shows ``(default: None)``."""
    parser = _build_parser()
    bad = []
    for name, sub in _subcommands(parser).items():
        for option, text in _option_helps(sub).items():
            if text.count("(default") > 1 or "(default: None)" in text:
                bad.append(f"{name} {option}: {text!r}")
    assert not bad, "\n".join(bad)


def test_metavars_are_words_not_destinations():
    """Value placeholders read as what to give (N, DIR, DURATION), not as the Python names (BASE_CHANNELS)."""
    raw = []
    for name, sub in _subcommands(_build_parser()).items():
        for action in sub._actions:
            if (action.option_strings and action.nargs != 0 and action.choices is None and action.metavar is None
                    and action.help is not argparse.SUPPRESS):
                raw.append(f"{name} {action.option_strings[-1]}")
    assert not raw, "options without a readable metavar: " + ", ".join(raw)


def test_help_names_what_the_options_do():
    subs = _subcommands(_build_parser())
    train, predict = _option_helps(subs["train"]), _option_helps(subs["predict"])
    assert all(word in train["--target"] for word in ("paper", "boundary", "distance", "stardist", "auto:"))
    assert "watershed" in predict["--instances"] and "segments extra" in predict["--instances"]
    assert "fiji extra" in predict["--save-rois"] and "dask extra" in predict["--dask"]
    assert "(default: on with the fast recipe, off with --recipe paper)" in train["--no-batch-norm"]
    assert "(default: off: images are resampled" in predict["--no-rescale"]
    assert "bioimage.io" in (subs["export"].description or "")


def test_evaluate_label_kind_and_its_old_name():
    parser = _build_parser()
    new = parser.parse_args(["evaluate", "--pred", "p", "--truth", "t", "--label-kind", "instances"])
    old = parser.parse_args(["evaluate", "--pred", "p", "--truth", "t", "--kind", "instances"])
    assert new.kind == old.kind == "instances"
