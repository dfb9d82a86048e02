"""biounet, StarDist and Cellpose side by side: each trained from scratch on the same folder for the same minutes,
each scored on the same held-back images by ``biounet evaluate --kind instances``.

Cases (every one the project has with instance truth):

- ``dic``: DIC-HeLa sequence 01 (``../shared/data/DIC-C2DH-HeLa``). Training: the 79 frames other than the
  held-back 002, 021, 034, 054, 067, with gold truth where a frame has it (005, 031, 033, 039, complete) and silver
  truth elsewhere. Test: the 5 held-back frames. Frame 067's gold truth labels 3 of its 18 cells, so SEG is pooled
  over all 49 annotated cells (``seg``) and the object scores are over the 4 completely annotated frames, 46 cells
  (``accuracy``, ``f1``), as in the DIC-HeLa table of docs/results.md.
- ``nuclei``: touching nuclei from ``biounet.data.synthetic`` (``cells``): 16 images of 256x256 (seed 0) to train on, 8
  (seed 1, 275 nuclei) to test on, as ``experiments/separation.py``.
- ``isbi``: ISBI 2012 slices 0-15 to train on, 16-19 to test on; the instances are the connected components
  (4-connectivity) of the non-membrane pixels (label 255).

Every tool trains on the same pairs folder (``images/``, ``labels/`` instance masks) made under ``--work``:
biounet with ``biounet train --data DIR --label-kind instances --time-budget T`` and its defaults, then
``biounet predict --instances``; the peers with ``benchmarks/peers.py PEER`` (their own environments and defaults;
see that script). Each holds back what it validates on from that folder by its own rule. Scores: object accuracy
``TP / (TP + FP + FN)`` and F1 at IoU 0.5 (counts pooled over the test images, StarDist's convention) and SEG
pooled over the annotated cells, all from ``biounet evaluate --kind instances --json``.

Results go to ``--results`` (JSON lines, one per case, budget and tool, each with its commands); runs already
there are skipped, so the table fills across invocations (``--redo`` runs them again). ``--results``'s Markdown
twin (``.md``) is rewritten from all its lines after each run. Runs one thing at a time; a full table (3 cases x 2
budgets x 3 tools) is about 3 x 3 x 40 = 360 minutes of training.

    python benchmarks/peers_table.py                                   # every case at 10 and 30 minutes
    python benchmarks/peers_table.py --cases nuclei --budgets 10m --tools stardist
    python benchmarks/peers_table.py --prepare-only --work /tmp/peers  # build the case folders and stop
    python benchmarks/peers_table.py --render                          # only rewrite the Markdown
    python benchmarks/peers_table.py --cases dsb --tools biounet --rechoose  # post-processing chosen again
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peers import parse_duration

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
CASES: tuple[str, ...] = ("dic", "nuclei", "isbi", "dsb")
TOOLS: tuple[str, ...] = ("biounet", "biounet-stardist", "stardist", "cellpose")
"""``biounet``: every default; ``biounet-stardist``: the same with ``--target stardist``."""
DEFAULT_RESULTS = REPO / "benchmarks" / "results" / "peers_table.json"
DIC_HELD_OUT = ("002", "021", "034", "054", "067")
DIC_PARTIAL = frozenset({"t067"})  # its gold truth labels 3 of the 18 cells (../shared/data/README.md)
ISBI_TRAIN, ISBI_TEST = tuple(range(16)), (16, 17, 18, 19)
SCORE_KEYS = ("accuracy", "f1", "seg", "precision", "recall")


@dataclass(frozen=True)
class Case:
    """One comparison: a pairs folder to train on, images to predict (all of one folder), their instance truth
    (``<stem>.tif``).

    ``partial`` names test images whose truth labels only some cells: they count for SEG only."""

    name: str
    train: Path
    test_images: tuple[Path, ...]
    truth: Path
    partial: frozenset[str] = field(default_factory=frozenset)


# --- pure helpers (tested in tests/test_peers.py) -----------------------------------------------------------------


def parse_names(text: str, allowed: Sequence[str], what: str) -> list[str]:
    """Comma-separated names, each one of ``allowed``, in the order given, without repeats.

    >>> parse_names("nuclei,dic", CASES, "case")
    ['nuclei', 'dic']

    Raises
    ------
    ValueError
        If a name is unknown or none is given.
    """
    names = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise ValueError(f"{what} must be comma-separated names from {', '.join(allowed)}, got {text!r}")
    return names


def budget_label(seconds: float) -> str:
    """``600 -> '10m'``, ``90 -> '90s'``, ``3600 -> '60m'``: the budget as the table and the commands show it.

    >>> budget_label(600.0), budget_label(90.0), budget_label(1800.0)
    ('10m', '90s', '30m')
    """
    return f"{seconds / 60:g}m" if seconds % 60 == 0 else f"{seconds:g}s"


def run_key(case: str, budget_s: float, tool: str) -> str:
    """What identifies a run in the results file.

    >>> run_key("dic", 600.0, "stardist")
    'dic/10m/stardist'
    """
    return f"{case}/{budget_label(budget_s)}/{tool}"


def read_results(path: Path) -> dict[str, dict[str, Any]]:
    """The records of a results file (JSON lines) by :func:`run_key`; a later line replaces an earlier one.

    Raises
    ------
    ValueError
        If a line is not a JSON object with ``case``, ``budget_s`` and ``tool``.
    """
    records: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return records
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        record = json.loads(line)
        if not isinstance(record, dict) or not {"case", "budget_s", "tool"} <= set(record):
            raise ValueError(f"{path}:{number}: expected a JSON object with case, budget_s and tool")
        records[run_key(record["case"], float(record["budget_s"]), record["tool"])] = record
    return records


def pooled_scores(all_images: dict[str, Any], complete: dict[str, Any] | None = None) -> dict[str, Any]:
    """The table's scores from ``biounet evaluate --kind instances --json`` output: SEG pooled over every annotated
    cell of ``all_images``; object accuracy (``average_precision`` at IoU 0.5), F1, precision and recall from
    ``complete`` (the completely annotated images), or from ``all_images`` where every image is complete.

    >>> pooled = {"average_precision": 0.5, "f1": 2 / 3, "precision": 1.0, "recall": 0.5, "seg": 0.4,
    ...           "cells": 4, "predicted_cells": 2}
    >>> pooled_scores({"pooled": pooled})["accuracy"], pooled_scores({"pooled": pooled})["seg_cells"]
    (0.5, 4)
    """
    objects = (complete or all_images)["pooled"]
    pooled = all_images["pooled"]
    return {"accuracy": objects["average_precision"], "f1": objects["f1"], "precision": objects["precision"],
            "recall": objects["recall"], "object_cells": objects["cells"],
            "predicted_cells": objects["predicted_cells"], "seg": pooled["seg"], "seg_cells": pooled["cells"]}


def render_markdown(records: Iterable[dict[str, Any]]) -> str:
    """The results as a Markdown table (by case, budget, tool), then each run's commands."""
    rows = sorted(records, key=lambda r: (CASES.index(r["case"]) if r["case"] in CASES else len(CASES),
                                          float(r["budget_s"]), TOOLS.index(r["tool"]) if r["tool"] in TOOLS
                                          else len(TOOLS)))
    lines = ["| case | budget | tool | accuracy at IoU 0.5 | F1 at IoU 0.5 | SEG | trained | train s | wall s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["scores"]
        lines.append(f"| {r['case']} | {budget_label(float(r['budget_s']))} | {r['tool']} {r.get('version', '')} | "
                     f"{_number(s.get('accuracy'))} | {_number(s.get('f1'))} | {_number(s.get('seg'))} | "
                     f"{r.get('trained', '')} | {_number(r.get('train_s'), 0)} | {_number(r.get('wall_s'), 0)} |")
    lines += ["", "Commands:", ""]
    for r in rows:
        commands = "; ".join(f"`{c}`" for c in r["commands"])
        lines.append(f"- {run_key(r['case'], float(r['budget_s']), r['tool'])}: {commands}")
    return "\n".join(lines) + "\n"


def _number(value: Any, digits: int = 3) -> str:
    return "" if value is None else f"{float(value):.{digits}f}"


# --- the cases ----------------------------------------------------------------------------------------------------


def prepare_case(name: str, work: Path) -> Case:
    """Build (once; reused while ``WORK/cases/NAME/done`` exists) the pairs folder, test images and truth of a case."""
    root = work / "cases" / name
    builders = {"dic": _prepare_dic, "nuclei": _prepare_nuclei, "isbi": _prepare_isbi, "dsb": _prepare_dsb}
    if not (root / "done").exists():
        if root.exists():
            shutil.rmtree(root)
        builders[name](root)
        (root / "done").write_text("")
    tests = tuple(sorted((root / "test").glob("*.tif")))
    return Case(name, root / "train", tests, root / "truth", DIC_PARTIAL if name == "dic" else frozenset())


def _write(path: Path, array: Any) -> None:
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array)  # uncompressed: both peers read it without imagecodecs


def _prepare_dic(root: Path) -> None:
    import numpy as np

    from biounet.data.images import read_image, read_labels

    data = SHARED_DATA / "DIC-C2DH-HeLa"
    gold = {p.stem.removeprefix("man_seg"): p for p in (data / "01_GT" / "SEG").glob("man_seg*.tif")}
    silver = {p.stem.removeprefix("man_seg"): p for p in (data / "01_ST" / "SEG").glob("man_seg*.tif")}
    for frame_path in sorted((data / "01").glob("t*.tif")):
        frame = frame_path.stem[1:]
        image = np.asarray(read_image(frame_path))[..., 0]  # (H, W, 1) uint8, as the file holds it
        if frame in DIC_HELD_OUT:
            _write(root / "test" / f"t{frame}.tif", image)
            _write(root / "truth" / f"t{frame}.tif", read_labels(gold[frame])[0].astype(np.uint16))
            continue
        labels = gold.get(frame) or silver.get(frame)
        if labels is None:
            continue
        _write(root / "train" / "images" / f"t{frame}.tif", image)
        _write(root / "train" / "labels" / f"t{frame}.tif", read_labels(labels)[0].astype(np.uint16))


def _prepare_nuclei(root: Path) -> None:
    import numpy as np

    from biounet.data.synthetic import make_dataset, write_dataset

    write_dataset(make_dataset("cells", 16, size=(256, 256), rng=0), root / "train")
    for index, sample in enumerate(make_dataset("cells", 8, size=(256, 256), rng=1)):
        _write(root / "test" / f"nuclei_{index}.tif", sample.image[..., 0].astype(np.float32))
        _write(root / "truth" / f"nuclei_{index}.tif", sample.instances.astype(np.uint16))


DSB_HELD_OUT_EVERY = 5
"""``dsb``: every fifth image of ``dsb2018-fluo`` by sorted name is a test image (as ``experiments/nuclei.py``)."""


def _prepare_dsb(root: Path) -> None:
    import numpy as np

    from biounet.data.images import read_image, read_labels

    data = SHARED_DATA / "dsb2018-fluo"
    names = sorted(path.name for path in (data / "images").iterdir())
    for index, name in enumerate(names):
        image = np.asarray(read_image(data / "images" / name))[..., 0]
        labels = read_labels(data / "labels" / name)[0].astype(np.uint16)
        if index % DSB_HELD_OUT_EVERY == 0:
            _write(root / "test" / name, image)
            _write(root / "truth" / name, labels)
        else:
            _write(root / "train" / "images" / name, image)
            _write(root / "train" / "labels" / name, labels)


def _prepare_isbi(root: Path) -> None:
    import numpy as np
    from PIL import Image
    from scipy import ndimage

    data = SHARED_DATA / "isbi2012" / "train"
    for index in (*ISBI_TRAIN, *ISBI_TEST):
        image = np.asarray(Image.open(data / "image" / f"{index}.png").convert("L"))
        cells, _ = ndimage.label(np.asarray(Image.open(data / "label" / f"{index}.png").convert("L")) == 255)
        if index in ISBI_TEST:
            _write(root / "test" / f"slice{index:02d}.tif", image)
            _write(root / "truth" / f"slice{index:02d}.tif", cells.astype(np.uint16))
        else:
            _write(root / "train" / "images" / f"slice{index:02d}.tif", image)
            _write(root / "train" / "labels" / f"slice{index:02d}.tif", cells.astype(np.uint16))


# --- the runs -----------------------------------------------------------------------------------------------------


def _shown(command: Sequence[str]) -> str:
    """A command as someone would type it from the repository root."""
    words = [str(w) for w in command]
    if words[0] == sys.executable:
        words = ["python", *words[1:]]
    return shlex.join(os.path.relpath(w, REPO) if w.startswith(str(REPO) + os.sep) else w for w in words)


def _run(command: Sequence[str], *, capture: bool = False) -> str:
    print(f"$ {_shown(command)}", file=sys.stderr, flush=True)
    result = subprocess.run([str(c) for c in command], stdout=subprocess.PIPE if capture else sys.stderr,
                            text=True, check=False, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(f"exit code {result.returncode}: {_shown(command)}")
    return result.stdout if capture else ""


def _biounet(case: Case, budget_s: float, run: Path, extra: Sequence[str]) -> dict[str, Any]:
    biounet = [sys.executable, "-m", "biounet"]
    train = [*biounet, "train", "--data", case.train, "--label-kind", "instances", "--out", run / "run",
             "--time-budget", budget_label(budget_s), "-q", *extra]
    start = time.perf_counter()
    _run(train)
    train_wall_s = time.perf_counter() - start
    predict = _predict_command(case, run)
    _run(predict)
    with (run / "run" / "metrics.csv").open() as handle:
        last = list(csv.DictReader(handle))[-1]
    from biounet import __version__

    return {"version": __version__, "commands": [_shown(train), _shown(predict)], "trained": f"{int(last['step'])} "
            "steps", "steps": int(last["step"]), "train_s": float(last["elapsed_s"]), "train_wall_s": train_wall_s,
            "wall_s": time.perf_counter() - start}


def _predict_command(case: Case, run: Path) -> list[Any]:
    """``biounet predict --instances`` of a case's test images with the model in ``run/run``, into ``run/pred``."""
    return [sys.executable, "-m", "biounet", "predict", run / "run" / "model.pt", case.test_images[0].parent,
            "--out", run / "pred", "--instances", "-q"]


def _rechosen(case: Case, run: Path, previous: dict[str, Any]) -> dict[str, Any]:
    """A biounet run already trained: its post-processing chosen again on its own validation images by the current
    rules (:func:`biounet.training.train.rechoose_post_processing`), its test images predicted again."""
    from dataclasses import asdict

    from biounet.data.checkpoint import load_checkpoint
    from biounet.training.train import rechoose_post_processing

    start = time.perf_counter()
    params = rechoose_post_processing(run / "run")
    if (run / "pred").exists():
        shutil.rmtree(run / "pred")
    predict = _predict_command(case, run)
    _run(predict)
    kept = {key: previous[key] for key in ("version", "trained", "steps", "train_s", "train_wall_s", "wall_s")
            if key in previous}
    rechoose = f"biounet.training.train.rechoose_post_processing({_shown([run / 'run'])!r})"
    tta = bool(load_checkpoint(run / "run" / "model.pt").get("tta", False))
    return {**kept, "commands": [previous["commands"][0], rechoose, _shown(predict)],
            "rechosen": {**asdict(params), "tta": tta}, "rechoose_s": time.perf_counter() - start}


def _peer(tool: str, case: Case, budget_s: float, run: Path) -> dict[str, Any]:
    command = [sys.executable, REPO / "benchmarks" / "peers.py", tool, "--data", case.train, "--test",
               case.test_images[0].parent, "--time-budget", budget_label(budget_s), "--out", run / "pred"]
    record = json.loads(_run(command, capture=True).strip().splitlines()[-1])
    trained = f"{record['epochs']} epoch{'s' * (record['epochs'] != 1)}, {record['steps']} steps"
    return {"version": record["version"], "commands": [_shown(command)], "trained": trained,
            "steps": record["steps"], "epochs": record["epochs"], "train_s": record["train_s"],
            "wall_s": record["wall_s"], "peer": record}


def _evaluate(case: Case, pred: Path) -> tuple[dict[str, Any], list[str]]:
    evaluate = [sys.executable, "-m", "biounet", "evaluate", "--kind", "instances", "--json"]
    every = [*evaluate, "--pred", pred, "--truth", case.truth]
    all_images = json.loads(_run(every, capture=True))
    if not case.partial:
        return pooled_scores(all_images), [_shown(every)]
    complete_pred, complete_truth = pred.parent / "pred_complete", pred.parent / "truth_complete"
    for folder in (complete_pred, complete_truth):
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir()
    for truth in sorted(case.truth.glob("*.tif")):
        if truth.stem not in case.partial:
            shutil.copy(truth, complete_truth)
            shutil.copy(pred / f"{truth.stem}_instances.tif", complete_pred)
    complete = [*evaluate, "--pred", complete_pred, "--truth", complete_truth]
    return pooled_scores(all_images, json.loads(_run(complete, capture=True))), [_shown(every), _shown(complete)]


def _trained(case: Case, budget_s: float, tool: str, run: Path, biounet_extra: Sequence[str]) -> dict[str, Any]:
    if tool.startswith("biounet"):
        target = ["--target", tool.removeprefix("biounet-")] if tool != "biounet" else []
        return _biounet(case, budget_s, run, [*target, *biounet_extra])
    return _peer(tool, case, budget_s, run)


def run_one(case: Case, budget_s: float, tool: str, work: Path, biounet_extra: Sequence[str],
            previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train, predict and score one tool on one case for one budget; the record for the results file. With the
    ``previous`` record of a biounet run whose folder is still there: its post-processing chosen again instead."""
    run = work / "runs" / case.name / budget_label(budget_s) / tool
    if previous is not None:
        result = _rechosen(case, run, previous)
    else:
        if run.exists():
            shutil.rmtree(run)
        run.mkdir(parents=True)
        result = _trained(case, budget_s, tool, run, biounet_extra)
    scores, evaluate_commands = _evaluate(case, run / "pred")
    return {"case": case.name, "budget_s": budget_s, "tool": tool, "scores": scores, **result,
            "commands": [*result["commands"], *evaluate_commands], "date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": _machine()}


def _machine() -> dict[str, Any]:
    cpu = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), "")
    return {"cpu": cpu, "cores": os.cpu_count(), "loadavg_1min": os.getloadavg()[0]}


def _record(args: argparse.Namespace, case: Case, budget_s: float, tool: str,
            previous: dict[str, Any] | None) -> dict[str, Any] | None:
    """The new record of one run (None: nothing to do): trained unless the results file has it (``--redo``: again);
    with ``--rechoose``, a biounet run it has, its post-processing chosen again."""
    if args.rechoose:
        if not tool.startswith("biounet") or previous is None:
            return None
        return run_one(case, budget_s, tool, args.work, [], previous=previous)
    if previous is not None and not args.redo:
        print(f"peers_table.py: {run_key(case.name, budget_s, tool)} already in {args.results}, skipped",
              file=sys.stderr)
        return None
    return run_one(case, budget_s, tool, args.work, args.biounet_extra.split())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated, from " + ", ".join(CASES))
    parser.add_argument("--budgets", default="10m,30m", help="comma-separated training budgets (default: 10m,30m)")
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated, from " + ", ".join(TOOLS))
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "peers", help="case folders and runs")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="JSON lines, filled incrementally")
    parser.add_argument("--biounet-extra", default="", help="more biounet train flags, space separated")
    parser.add_argument("--redo", action="store_true", help="run again what the results file already has")
    parser.add_argument("--prepare-only", action="store_true", help="build the case folders and stop")
    parser.add_argument("--render", action="store_true", help="only rewrite the Markdown from the results file")
    parser.add_argument("--rechoose", action="store_true",
                        help="biounet runs already in the results file and --work: choose their post-processing again "
                             "with the current rules and predict and score again, without training")
    args = parser.parse_args(argv)
    try:
        cases = parse_names(args.cases, CASES, "--cases")
        tools = parse_names(args.tools, TOOLS, "--tools")
        budgets = [parse_duration(b) for b in args.budgets.split(",") if b.strip()]
        done = read_results(args.results)
    except ValueError as err:
        print(f"peers_table.py: error: {err}", file=sys.stderr)
        return 2
    markdown = args.results.with_suffix(".md")
    if args.render:
        markdown.write_text(render_markdown(done.values()))
        return 0
    prepared = {name: prepare_case(name, args.work) for name in cases}
    if args.prepare_only:
        for case in prepared.values():
            print(json.dumps({"case": case.name, "train": str(case.train), "test": [str(p) for p in case.test_images],
                              "truth": str(case.truth), "partial": sorted(case.partial)}))
        return 0
    for name in cases:
        for budget_s in budgets:
            for tool in tools:
                record = _record(args, prepared[name], budget_s, tool, done.get(run_key(name, budget_s, tool)))
                if record is None:
                    continue
                print(json.dumps(record), flush=True)
                with args.results.open("a") as handle:
                    handle.write(json.dumps(record) + "\n")
                done[run_key(name, budget_s, tool)] = record
                markdown.write_text(render_markdown(done.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
