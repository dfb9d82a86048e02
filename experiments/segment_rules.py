"""How the segment settings are chosen: the selection rules compared, choosing on validation slices and scoring the
choice on slices left out of training.

For one model's maps (``biounet predict --save-probabilities`` of the validation and test slices), the table of
every :data:`biounet.evaluation.validation.SEGMENT_GRID` setting (:func:`biounet.evaluation.validation.segment_table`) is computed on
both sets; each rule picks a setting on the validation table, and its test scores are printed beside the map's
(best thresholds) and the best setting on the test slices (an oracle, not a result). Prints JSON.

    python experiments/segment_rules.py runs/isbi2012_segments_30m/pred_all 2,3,11 16,17,18,19
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

import numpy as np
import tifffile
from _common import SHARED_DATA, emit, hardware
from PIL import Image

from biounet.core.samples import Sample
from biounet.evaluation import metrics
from biounet.evaluation.validation import pick_segment_setting, segment_table

Row = tuple[object, dict[str, float]]


def truth(name: str) -> np.ndarray:
    return np.asarray(Image.open(SHARED_DATA / "isbi2012" / "train" / "label" / f"{name}.png")) > 0


def samples(names: list[str]) -> list[Sample]:
    """Label-only samples: class 1 on the membrane (what segment_table reads)."""
    return [Sample(n, np.zeros((*truth(n).shape, 1), np.float32), (~truth(n)).astype(np.int64),
                   np.zeros(truth(n).shape, np.int32)) for n in names]


def map_scores(maps: list[np.ndarray], names: list[str]) -> dict[str, float]:
    rows = [(metrics.rand_error(m[1].astype(np.float64), truth(n)).error,
             metrics.warping_error(m[1].astype(np.float64), truth(n)).error,
             metrics.pixel_error(m[1].astype(np.float64), truth(n)).error) for m, n in zip(maps, names)]
    return dict(zip(("rand_error", "warping_error", "pixel_error"), np.mean(rows, axis=0).tolist()))


def rules(table: list[Row], reference: dict[str, float]) -> dict[str, Row]:
    """Each rule's pick: ``current`` is biounet's (:func:`biounet.evaluation.validation.choose_segment_params`:
    lowest Rand error with pixel error up to the paper's); ``rand`` its first rule (lowest Rand error among
    settings within 5 % of the best pixel error); the others for comparison."""
    best_pixel = min(scores["pixel_error"] for _, scores in table)
    admissible = [row for row in table if row[1]["pixel_error"] <= 1.05 * best_pixel]

    def relative(row: Row) -> float:
        return (row[1]["rand_error"] / reference["rand_error"]
                + row[1]["warping_error"] / reference["warping_error"])

    return {
        "current": pick_segment_setting(table),
        "rand": min(admissible, key=lambda row: row[1]["rand_error"]),
        "rand_and_warping": min(admissible, key=relative),
        "warping": min(admissible, key=lambda row: row[1]["warping_error"]),
        "rand_any_width": min(table, key=lambda row: row[1]["rand_error"]),
        "rand_and_warping_any_width": min(table, key=relative),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pred", type=Path, help="folder with <slice>_prob.tif")
    parser.add_argument("validation", help="slices to choose on, e.g. 2,3,11")
    parser.add_argument("test", help="slices to score on, e.g. 16,17,18,19")
    parser.add_argument("--classes-only", action="store_true",
                        help="an affinities model's maps: agglomerate its membrane map by the multicut, not its "
                        "affinities by the mutex watershed")
    args = parser.parse_args()
    names = {"validation": args.validation.split(","), "test": args.test.split(",")}
    maps = {part: [tifffile.imread(args.pred / f"{n}_prob.tif") for n in names[part]] for part in names}
    if args.classes_only:
        maps = {part: [m[:2] for m in found] for part, found in maps.items()}
    tables = {part: segment_table(maps[part], samples(names[part])) for part in names}
    reference = {part: map_scores(maps[part], names[part]) for part in names}
    test = dict(tables["test"])
    picks = rules(tables["validation"], reference["validation"])
    emit({"experiment": "segment_rules", "pred": str(args.pred), "classes_only": args.classes_only,
          "slices": names, "hardware": hardware(),
          "map": reference,
          "rules": {name: {"settings": asdict(params), "validation": scores, "test": test[params]}  # type: ignore
                    for name, (params, scores) in picks.items()},
          "oracle_test": {measure: {"settings": asdict(p), "test": s} for measure in ("rand_error", "warping_error")
                          for p, s in [min(test.items(), key=lambda row: row[1][measure])]}})


if __name__ == "__main__":
    main()
