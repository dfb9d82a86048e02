"""Make docs/napari.png: the plugin's segment widget on the sample cells, in a hidden napari viewer.

Trains a small U-Net on synthetic cells for ``--time-budget`` seconds (the demo's recipe), segments the plugin's
sample image with the Segment widget, and saves a screenshot of the whole window.
Usage: QT_QPA_PLATFORM=offscreen python scripts/napari_screenshot.py [--time-budget 120] [--out docs/napari.png]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--time-budget", type=float, default=120.0)
    parser.add_argument("--out", type=Path, default=Path("docs/napari.png"))
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    from biounet.data.synthetic import make_dataset, write_dataset
    from biounet.integrations.demo import demo_config
    from biounet.integrations.napari import SegmentWidget, sample_cells
    from biounet.training.train import fit

    work = Path(tempfile.mkdtemp(prefix="biounet-screenshot-"))
    data = write_dataset(make_dataset("cells", 12, size=(256, 256), rng=0), work / "data")
    fit(demo_config(str(data), args.time_budget), work / "run", device="cpu")

    viewer = napari.Viewer(show=False)
    for layer_data, meta, kind in sample_cells():
        getattr(viewer, f"add_{kind}")(layer_data, **meta)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="biounet: Segment")
    widget.image_layer.value = viewer.layers["synthetic cells"]
    widget.model_file.value = work / "run" / "model.pt"
    widget.start()
    while widget.busy:
        QApplication.processEvents()
        time.sleep(0.01)
    QApplication.processEvents()
    viewer.layers["synthetic cells instances"].opacity = 0.45
    viewer.window._qt_window.resize(1200, 760)
    QApplication.processEvents()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(args.out), canvas_only=False)
    print(f"wrote {args.out}: {widget.status.value}")
    viewer.close()


if __name__ == "__main__":
    main()
