"""The docs (issue 24): README.md opens with the two commands that CI runs, its numbers and those of docs/ come
from the result files (never typed by hand), the generated parts are current, the site builds with warnings as
errors, and the setup script installs what each command needs."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DEMO_COMMAND = "bash scripts/setup.sh demo && .venv/bin/biounet demo --out demo_out"
TEST_COMMAND = "bash scripts/setup.sh && .venv/bin/python -m pytest -q"
NOT_CHECKED = {
    "docs/cli": "generated from the parser: option defaults and examples, no results",
    "docs/numerics.md": "the test suite's tolerances, derived from the precisions (issue 27), no results",
}
"""Pages whose numbers are not results, and why."""
VERSION_WORDS = r"(?:Python|python|PyTorch|NGFF|spec|torch|zarr|version|MkDocs|Material)"
DEFINITIONS = {"0.5": "the IoU at which a predicted object matches a true one (the object scores' threshold)"}
"""Numbers prose may name that are definitions, not results."""


def _render_docs():
    spec = importlib.util.spec_from_file_location("render_docs", ROOT / "scripts" / "render_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render_docs = _render_docs()


def printed_numbers(markdown: str) -> list[str]:
    """The decimal numbers a reader sees in ``markdown``: outside code blocks, code spans, comments and link
    targets; version numbers (``2.13.0``, ``Python 3.10``) and arXiv ids left out."""
    text = re.sub(r"```.*?```", " ", markdown, flags=re.DOTALL)
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.DOTALL)
    text = re.sub(r"`[^`\n]*`", " ", text)
    text = re.sub(r"\]\([^)]*\)|https?://\S+|arXiv:\S+", " ", text)
    text = re.sub(r"\d+(?:\.\d+){2,}\S*", " ", text)  # x.y.z versions
    text = re.sub(rf"{VERSION_WORDS}\s+\d+\.\d+", " ", text)
    return re.findall(r"(?<![\w.])\d+\.\d+(?![\w.]*\d)", text)


def _rounded(sources: set[float]) -> set[str]:
    return {f"{value:.{digits}f}" for value in sources for digits in range(1, 8)}


SOURCES = _rounded(render_docs.source_numbers())


def unsourced(markdown: str) -> list[str]:
    """Numbers in ``markdown`` that no result file (nor the paper's numbers) holds, rounded as printed."""
    return [number for number in printed_numbers(markdown) if number not in SOURCES]


def _checked_pages() -> list[Path]:
    pages = [README, *sorted((ROOT / "docs").rglob("*.md"))]
    return [p for p in pages if not any(str(p.relative_to(ROOT)).startswith(skip) for skip in NOT_CHECKED)]


# --- the README -------------------------------------------------------------------------------------------------------


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.DOTALL).group(1)
    commands = [line for line in first_block.splitlines() if line and not line.startswith("#")]
    assert commands == [DEMO_COMMAND, TEST_COMMAND]
    ci = (ROOT / ".ci" / "run").read_text()
    assert [line for line in ci.splitlines() if "setup.sh" in line] == [TEST_COMMAND]
    assert "https://arxiv.org/abs/1505.04597" in text and "docs/napari.png" in text


def test_readme_installs_from_the_clone_not_the_index():
    text = README.read_text() + "".join(p.read_text() for p in (ROOT / "docs").glob("*.md"))
    assert not re.search(r"pip install ['\"]?biounet\[", text), "a release on the index does not exist yet"


# --- numbers come from the result files -----------------------------------------------------------------------------


def test_printed_numbers_skip_code_versions_and_links():
    text = ("SEG 0.834 with torch 2.13.0+cpu on Python 3.10, `--lr 0.001`, [a](x/0.5.md), arXiv:1505.04597\n"
            "```bash\nbiounet train --pixel-size 0.19\n```\n| 1.431x | 1,000 steps |")
    assert printed_numbers(text) == ["0.834", "1.431"]


def test_every_number_in_the_docs_is_in_a_result_file():
    bad = {str(p.relative_to(ROOT)): unsourced(p.read_text()) for p in _checked_pages()}
    bad = {page: numbers for page, numbers in bad.items() if numbers}
    assert not bad, f"numbers with no source in experiments/results, benchmarks/results or docs/data: {bad}"


def test_prose_restates_no_number():
    """Outside the generated tables, prose points to a table and names no number but a definition or the paper's."""
    paper = _rounded(set(render_docs.numbers_in(render_docs.records(render_docs.PAPER))))
    restated = {}
    for page in _checked_pages():
        prose = render_docs.MARKER.sub(" ", page.read_text())
        numbers = [n for n in printed_numbers(prose) if n not in DEFINITIONS and n not in paper]
        if numbers:
            restated[str(page.relative_to(ROOT))] = numbers
    assert not restated, f"numbers in prose (put them in a generated table): {restated}"


def test_a_number_edited_by_hand_fails(tmp_path):
    page = ROOT / "docs" / "results.md"
    text = page.read_text()
    number = printed_numbers(text)[0]
    edited_number = number
    while edited_number in SOURCES:  # change the last digit until no result file holds the number
        edited_number = edited_number[:-1] + str((int(edited_number[-1]) + 1) % 10)
    edited = text.replace(number, edited_number, 1)
    copy = tmp_path / "results.md"
    copy.write_text(edited)
    assert unsourced(copy.read_text()) == [edited_number]
    assert render_docs.render_tables(edited) != edited  # and rendering restores the table
    assert render_docs.render_tables(edited) == text


def test_generated_parts_are_current():
    stale = [str(path.relative_to(ROOT)) for path, text in render_docs.rendered().items()
             if not path.exists() or path.read_text() != text]
    assert not stale, f"stale (run python scripts/render_docs.py): {stale}"


def test_every_cli_subcommand_has_a_page_in_the_nav():
    from biounet.cli import SUBCOMMANDS

    nav = (ROOT / "mkdocs.yml").read_text()
    for name in SUBCOMMANDS:
        assert (ROOT / "docs" / "cli" / f"{name}.md").exists() and f"cli/{name}.md" in nav


def test_a_missing_result_file_renders_a_placeholder(monkeypatch, tmp_path):
    monkeypatch.setattr(render_docs, "ROOT", tmp_path)
    assert "Not measured yet" in render_docs.nuclei3d()


def test_an_unknown_table_name_is_refused():
    with pytest.raises(ValueError, match="unknown generated table 'nope'"):
        render_docs.render_tables("<!-- BEGIN GENERATED nope -->\n<!-- END GENERATED nope -->")


# --- the site builds --------------------------------------------------------------------------------------------------


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(ROOT / "mkdocs.yml"),
                            "-d", str(tmp_path / "site")], check=False, capture_output=True, text=True, timeout=120,
                           env=env,
                           cwd=ROOT)
    assert build.returncode == 0, build.stdout + build.stderr
    assert (tmp_path / "site" / "cli" / "train" / "index.html").exists()
    assert "weight_map" in (tmp_path / "site" / "api" / "index.html").read_text()


# --- the setup script -------------------------------------------------------------------------------------------------


def _setup(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh"), *args], check=False,
                          capture_output=True, text=True,
                          timeout=60, env={**os.environ, "BIOUNET_SETUP_DRY_RUN": "1", **env})


def _installs(run: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in run.stdout.splitlines() if line.startswith("+ ") and "pip install" in line]


def test_setup_demo_installs_biounet_alone_and_test_the_test_extra(tmp_path):
    venv = str(tmp_path / "venv")  # no venv there: the script would make one and install torch
    demo, test = _setup("demo", BIOUNET_VENV=venv), _setup(BIOUNET_VENV=venv)
    assert demo.returncode == test.returncode == 0, demo.stderr + test.stderr
    assert _installs(demo)[-1].endswith(" -e .") and _installs(test)[-1].endswith(" -e .[test]")
    assert "torch==2.13.0" in _installs(demo)[0]
    assert not any("napari" in line or "[test]" in line for line in _installs(demo))


def test_setup_takes_the_cpu_build_or_says_where_torch_comes_from(tmp_path):
    run = _setup("demo", BIOUNET_VENV=str(tmp_path / "venv"), BIOUNET_TORCH="cpu")
    torch_line = _installs(run)[0]
    if "--index-url" in torch_line:
        assert "download.pytorch.org/whl/cpu" in torch_line
    else:
        assert "CPU wheel index is out of reach" in run.stdout


def test_setup_refuses_bad_choices_with_one_line(tmp_path):
    fake = tmp_path / "python3"
    fake.write_text("#!/bin/sh\nexit 1\n")  # an interpreter without venv (Debian without python3-venv)
    fake.chmod(0o755)
    no_venv = _setup("demo", PYTHON=str(fake), BIOUNET_VENV=str(tmp_path / "venv"))
    assert no_venv.returncode == 1 and "apt install python3-venv" in no_venv.stderr
    assert len(no_venv.stderr.strip().splitlines()) == 1
    assert _setup("demo", BIOUNET_TORCH="gpu").returncode == 2
    assert _setup("everything").returncode == 2
