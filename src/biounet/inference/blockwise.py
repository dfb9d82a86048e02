"""Blockwise prediction of big zarr images on a Dask cluster, identical to the single-process overlap-tile result.

The image is cut into square output blocks whose side is a multiple of the tile step (itself a multiple of
``2**depth``), so block origins are multiples of it; each block is one chunk of the output zarr arrays, so
workers write disjoint chunks and need no locks. A worker reads its block plus the network's context margin
(real neighbouring pixels where they exist, mirrored at the image border), cuts it into the tiles the
single-process prediction runs at the same places (both through
:func:`biounet.inference.predict.predict_plane`, the block as its ``window``), and writes ``<stem>.zarr`` (class
labels from the class channels only) and, if asked, ``<stem>_prob.zarr`` (float32, every output channel: the class
probabilities, then a ``distance`` model's distance map), in the layout of the single-process outputs: ``(H, W)``
and ``(K', H, W)`` for one plane, ``(Z, H, W)`` and ``(Z, K', H, W)`` for a stack. Every pixel's value comes from
the same tile as in the single-process run, so the outputs are equal, not just close (with ``batch_size=1``; other
batch sizes may differ by float rounding, as they do in one process).

Intensity normalisation is computed once per plane on the client, from the whole plane as
:func:`biounet.inference.predict.predict_file` does, and sent to the workers.

Restarts: the outputs grow inside the progress folder ``<stem>.blocks/`` and are moved to their final names only
when every block (and the instances) is done, after which the folder is removed; so an interrupted or failed run
leaves no output that looks complete. After a block's chunks are written its marker
``<stem>.blocks/done/<block>.npz`` is written atomically; a rerun with the same settings skips the blocks that
have one (a block killed half-way has none and is predicted again). ``<stem>.blocks/job.json`` holds the
settings; a rerun with other settings is refused.

Instances (:func:`instances_blockwise`, the ``paper`` way: connected components of the foreground, gaps given
back): each block labels its foreground's 4-connected components with ids offset by its block number (unique
across blocks) and reports each component's size and first pixel. The client merges components that touch
across block faces (union-find, as the connected components of a graph of touching ids), drops cells below
``min_size_px`` by their merged size, and numbers the rest in raster order of their first pixel, as
:func:`scipy.ndimage.label` does on a whole plane. A second pass gives the gaps back
(:func:`biounet.inference.instances.fill_gaps`, which looks only a few pixels away) on each block with a halo of
:data:`FILL_HALO_PX` pixels. The result equals :func:`biounet.inference.instances.instances_from_labels` on the whole plane.
The watershed split and the ``boundary``, ``distance`` and ``stardist`` targets are not local to a block and are
refused.

Volumes (a 3D U-Net, Cicek et al. 2016): a ``(Z, Y, X)`` zarr volume is cut into boxes (:class:`VolumeBlock`) whose
sides are multiples of the 3D tile step per axis (:func:`volume_block_shape`); a worker reads its box plus the
context margins and predicts the tiles of the one-process overlap-tile run that fall in it
(:func:`predict_volume_block`), so every voxel again comes from the same tile as in
:func:`biounet.inference.volumes.predict_volume`. The volume is normalised as a whole on the client
(:func:`biounet.data.volumes.volume_normalization`, as ``predict_volume_file`` does). Outputs: ``<stem>.zarr``
``(Z, Y, X)`` and ``<stem>_prob.zarr`` ``(Z, K', Y, X)`` (the order of the one-process ``<stem>_prob.tif``), one
chunk per box. Blockwise instances of volumes (3D objects merged across boxes) are not supported.

Dask (``distributed``) is an optional dependency (``pip install 'biounet[dask]'``), imported only when used.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from biounet.core.extras import require
from biounet.data.files import atomic_path, check_writable_dir, output_stem, remove_tree
from biounet.data.images import ImageSource, label_dtype, open_image
from biounet.data.normalization import Normalization, normalization_for
from biounet.data.volumes import volume_normalization
from biounet.inference.instances import MEMBRANES, SEEDED_BY_OUTPUTS, InstanceParams, fill_gaps
from biounet.inference.predict import (
    PredictOptions,
    Segmentation,
    check_compatible,
    check_native_scale,
    load_predictor,
    predict_plane,
    tile_for,
    volume_tile_for,
)
from biounet.inference.predict_volume import VolumeSegmentation, check_dims
from biounet.inference.predictor import Predictor
from biounet.inference.tiling import TileGeometry, mirror_indices, tile_starts
from biounet.inference.volumes import VolumeGeometry, read_mirrored_box, volume_geometry

DEFAULT_BLOCK_PX = 1024
"""Target block side; the block used is the multiple of the tile step nearest to it (at least one step)."""
DEFAULT_VOLUME_BLOCK = 256
"""Target side of a volume's box per axis; the box used is the multiple of the tile step nearest to it per axis."""
FILL_HALO_PX = 16
"""Neighbouring pixels read around a block to give gaps back; :func:`fill_gaps` looks at most ~8 px away."""


@dataclass(frozen=True)
class Block:
    """One output block: one chunk of every output array."""

    plane: int
    number: int  # position in the job's list of blocks; offsets the block's component ids
    rows: tuple[int, int]  # [start, stop) in image pixels
    cols: tuple[int, int]

    @property
    def name(self) -> str:
        return f"z{self.plane}_y{self.rows[0]}_x{self.cols[0]}"

    @property
    def region(self) -> tuple[int, slice, slice]:
        return self.plane, slice(*self.rows), slice(*self.cols)


def plan_blocks(planes: int, shape: tuple[int, int], block: int) -> list[Block]:
    """The blocks covering ``planes`` planes of ``shape`` (H, W), ``block`` x ``block`` pixels (smaller at the
    right and bottom edges), plane by plane, row by row.

    >>> [b.name for b in plan_blocks(1, (5, 7), 4)]
    ['z0_y0_x0', 'z0_y0_x4', 'z0_y4_x0', 'z0_y4_x4']
    """
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    height, width = shape
    blocks: list[Block] = []
    for plane in range(planes):
        for top in range(0, height, block):
            for left in range(0, width, block):
                rows, cols = (top, min(top + block, height)), (left, min(left + block, width))
                blocks.append(Block(plane, len(blocks), rows, cols))
    return blocks


def block_side(geometry: TileGeometry, requested: int | None = None) -> int:
    """Block side for tiles of ``geometry``: ``requested`` (checked) or the multiple of the tile step nearest to
    :data:`DEFAULT_BLOCK_PX`.

    >>> block_side(TileGeometry(in_tile=700, out_tile=516, margin=92, align=16))
    1024

    Raises
    ------
    ValueError
        If ``requested`` is not a positive multiple of the tile step; the message names the nearest ones.
    """
    step = geometry.step
    if requested is None:
        return step * max(1, round(DEFAULT_BLOCK_PX / step))
    if requested < step or requested % step:
        below = max(step, requested // step * step)
        raise ValueError(f"block size {requested} must be a multiple of the tile step {step} (tile "
                         f"{geometry.in_tile} -> {geometry.out_tile}); nearest: {below} or {below + step}")
    return requested


def output_index(block: Block, planar: bool, *, channels: bool = False) -> tuple[Any, ...]:
    """Where ``block`` goes in an output array: ``(plane, rows, cols)``, with ``:`` for the channels before the
    rows where ``channels``; without the plane where ``planar`` (a single plane written 2-D).

    >>> output_index(Block(0, 0, (0, 4), (4, 8)), True)
    (slice(0, 4, None), slice(4, 8, None))
    """
    plane, rows, cols = block.region
    inner = (slice(None), rows, cols) if channels else (rows, cols)
    return inner if planar else (plane, *inner)


@dataclass(frozen=True)
class VolumeBlock:
    """One box of a volume: one chunk of every output array."""

    number: int  # position in the job's list of boxes
    zs: tuple[int, int]  # [start, stop) in voxels
    rows: tuple[int, int]
    cols: tuple[int, int]

    @property
    def name(self) -> str:
        return f"z{self.zs[0]}_y{self.rows[0]}_x{self.cols[0]}"

    @property
    def region(self) -> tuple[slice, slice, slice]:
        return slice(*self.zs), slice(*self.rows), slice(*self.cols)


def plan_volume_blocks(shape: Sequence[int], block: Sequence[int]) -> list[VolumeBlock]:
    """The boxes covering a volume of ``shape`` (Z, Y, X), ``block`` (z, y, x) voxels each (smaller at the far
    edges), x fastest.

    >>> [b.name for b in plan_volume_blocks((5, 4, 7), (4, 4, 4))]
    ['z0_y0_x0', 'z0_y0_x4', 'z4_y0_x0', 'z4_y0_x4']
    """
    if len(shape) != 3 or len(block) != 3 or min(block) < 1:
        raise ValueError(f"shape and block must be (z, y, x), block sizes >= 1, got {tuple(shape)} and {tuple(block)}")
    spans = [[(start, min(start + size, length)) for start in range(0, length, size)]
             for length, size in zip(shape, block)]
    return [VolumeBlock(number, *span) for number, span in enumerate(itertools.product(*spans))]


def volume_block_shape(geometry: VolumeGeometry, requested: int | None = None) -> tuple[int, int, int]:
    """Box shape ``(z, y, x)`` for 3D tiles of ``geometry``: per axis the multiple of the tile step nearest to
    :data:`DEFAULT_VOLUME_BLOCK` (at least one step); ``requested`` sets the in-plane sides (checked).

    >>> volume_block_shape(VolumeGeometry((20, 44, 44), (12, 20, 20), (4, 12, 12), (2, 8, 8)))
    (252, 256, 256)

    Raises
    ------
    ValueError
        If ``requested`` is not a positive multiple of the in-plane tile steps; the message names the nearest ones.
    """
    step = geometry.step
    shape = [s * max(1, round(DEFAULT_VOLUME_BLOCK / s)) for s in step]
    if requested is not None:
        plane_step = math.lcm(step[1], step[2])
        if requested < plane_step or requested % plane_step:
            below = max(plane_step, requested // plane_step * plane_step)
            raise ValueError(f"block size {requested} must be a multiple of the in-plane tile step {plane_step} "
                             f"(tile {geometry.in_shape} -> {geometry.out_shape}); nearest: {below} or "
                             f"{below + plane_step}")
        shape[1:] = [requested, requested]
    return tuple(shape)  # type: ignore[return-value]


@dataclass(frozen=True)
class BlockJob:
    """What every block task needs; picklable, and stored as ``job.json`` to check a restart against."""

    model: str
    image: str
    out_dir: str
    stem: str
    shape: tuple[int, int, int]  # planes, H, W
    device: str
    precision: str
    tta: bool | None
    in_tile: int
    block: int
    batch_size: int
    save_probabilities: bool
    normalizations: tuple[Normalization, ...]  # one per plane

    @property
    def work_dir(self) -> Path:
        return Path(self.out_dir) / f"{self.stem}.blocks"

    @property
    def labels_path(self) -> Path:
        return Path(self.out_dir) / f"{self.stem}.zarr"

    @property
    def probabilities_path(self) -> Path:
        return Path(self.out_dir) / f"{self.stem}_prob.zarr"

    @property
    def instances_path(self) -> Path:
        return Path(self.out_dir) / f"{self.stem}_instances.zarr"

    @property
    def planar(self) -> bool:
        """One plane: the outputs are 2-D images, as :func:`biounet.inference.predict.predict_file` writes them."""
        return self.shape[0] == 1

    def staged(self, final: Path) -> Path:
        """Where the output ``final`` grows until the run is complete: inside :attr:`work_dir`."""
        return self.work_dir / final.name

    def marker(self, block: Block | VolumeBlock) -> Path:
        return self.work_dir / "done" / f"{block.name}.npz"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    def output_layout(self, channels: int | None = None) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """``(shape, chunks)`` of the labels, or with ``channels`` of the outputs: one chunk per block."""
        planes, height, width = self.shape
        lead = [] if self.planar else [planes]
        inner = [] if channels is None else [channels]
        return (*lead, *inner, height, width), (*[1] * len(lead), *inner, self.block, self.block)


@dataclass(frozen=True)
class VolumeJob(BlockJob):
    """A :class:`BlockJob` for a volume and a 3D U-Net: 3D tiles of ``in_shape``, boxes of ``block_shape``
    (``in_tile``/``block`` hold their in-plane sides, ``normalizations`` the whole volume's one)."""

    in_shape: tuple[int, int, int] = (0, 0, 0)
    block_shape: tuple[int, int, int] = (0, 0, 0)

    @property
    def planar(self) -> bool:
        return False

    def output_layout(self, channels: int | None = None) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Labels ``(Z, Y, X)``, outputs ``(Z, K', Y, X)``, chunked by box."""
        (depth, *plane), (bz, *box) = self.shape, self.block_shape
        inner = [] if channels is None else [channels]
        return (depth, *inner, *plane), (bz, *inner, *box)


@dataclass
class BlockwiseResult:
    """Arrays written for one image, the tiling used, and which blocks were predicted or skipped as done."""

    labels_path: Path
    probabilities_path: Path | None
    instances_path: Path | None
    shape: tuple[int, int, int]
    in_tile: int
    block: int
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    in_shape: tuple[int, int, int] | None = None  # a volume's 3D tile (z, y, x); None for planes
    block_shape: tuple[int, int, int] | None = None  # a volume's box (z, y, x)


# --- client side ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def open_client(address: str | None = None, *, workers: int | None = None, processes: bool = True) -> Iterator[Any]:
    """A ``distributed.Client`` of the scheduler at ``address``, or of a local cluster of ``workers``
    single-thread workers (closed afterwards).

    Raises
    ------
    ModuleNotFoundError
        If ``distributed`` is not installed; the message says how to install it.
    ValueError
        If neither or both of ``address`` and ``workers`` are given.
    """
    if (address is None) == (workers is None):
        raise ValueError("give either a Dask scheduler address or a number of local workers, not both or neither")
    distributed = require("distributed", "blockwise prediction", extra="dask")
    Client, LocalCluster = distributed.Client, distributed.LocalCluster
    if address is not None:
        with Client(address) as client:
            yield client
        return
    with (LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes, dashboard_address=":0")
          as cluster, Client(cluster) as client):
        yield client


def predict_blockwise(
    model: str | os.PathLike[str],
    image: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    client: Any,
    options: PredictOptions = PredictOptions(),
    *,
    device: str = "auto",
    precision: str = "auto",
    tta: bool | None = None,
    block_size: int | None = None,
    instances: InstanceParams | None = None,
    target: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BlockwiseResult:
    """Segment the zarr image at ``image`` block by block on the Dask ``client``'s workers (module docstring).

    ``model`` and ``image`` must be readable at the same paths by every worker, and ``out_dir`` writable by all
    of them (a shared file system). ``device`` and ``precision`` are resolved on each worker
    (:func:`biounet.inference.predict.load_predictor`). ``block_size`` defaults to :func:`block_side`. ``instances`` asks
    for ``<stem>_instances.zarr`` (:func:`instances_blockwise`) with these settings, for a model of ``target``.
    ``progress(done, total)`` counts blocks.

    The outputs get their final names only when the run is complete (module docstring); an interrupted run keeps
    ``<stem>.blocks/`` for the rerun.

    Raises
    ------
    ValueError
        If the image is not a zarr array, its channels do not fit the model, the block size is not a multiple of
        the tile step, the outputs would overwrite the input, instances are asked for a target or setting that is
        not local (``boundary``, ``watershed``), or ``out_dir`` holds a job with other settings.
    """
    predictor = load_predictor(model, device="cpu", precision="fp32")
    source = _open_zarr_source(image)
    check_compatible(predictor, source)
    if instances is not None:
        _check_local_instances(predictor, instances, target)
    out = check_writable_dir(out_dir)
    settings = {"device": device, "precision": precision, "tta": tta, "block_size": block_size}
    if predictor.dims == 3:
        job: BlockJob = _make_volume_job(predictor, source, model, out, options, **settings)  # type: ignore[arg-type]
        blocks: Sequence[Block | VolumeBlock] = plan_volume_blocks(job.shape, job.block_shape)  # type: ignore[attr-defined]
        task: Callable[..., None] = _predict_volume_block
    else:
        job = _make_job(predictor, source, model, out, options, **settings)  # type: ignore[arg-type]
        blocks, task = plan_blocks(source.planes, (source.height, source.width), job.block), _predict_block
    _prepare_outputs(job, predictor)
    done = {path.stem for path in (job.work_dir / "done").glob("*.npz")}
    todo = [b for b in blocks if b.name not in done]
    futures = [client.submit(task, job, b, pure=False) for b in todo]
    _wait(futures, progress, start=len(blocks) - len(todo), total=len(blocks))
    if instances is not None:
        instances_blockwise(client, job.staged(job.labels_path), job.staged(job.instances_path), params=instances)
    _commit(job, instances=instances is not None)
    return BlockwiseResult(
        job.labels_path, job.probabilities_path if job.save_probabilities else None,
        job.instances_path if instances is not None else None, job.shape, job.in_tile, job.block,
        computed=[b.name for b in todo], skipped=[b.name for b in blocks if b.name in done],
        in_shape=getattr(job, "in_shape", None), block_shape=getattr(job, "block_shape", None),
    )


def _open_zarr_source(image: str | os.PathLike[str]) -> ImageSource:
    """A zarr array, or the full-resolution array of an OME-Zarr image, as an :class:`ImageSource`."""
    import zarr

    path = Path(image)
    if path.suffix.lower() != ".zarr":
        raise ValueError(f"{path}: blockwise prediction reads zarr arrays (.zarr); convert the image, or predict "
                         f"it without --dask")
    if not path.is_dir() or hasattr(node := zarr.open(str(path), mode="r"), "shape"):
        return open_image(path)
    attrs = dict(node.attrs)
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if not multiscales:
        raise ValueError(f"{path}: a zarr group without OME-Zarr multiscales; give the path of an array in it")
    scale = multiscales[0]
    array = node[scale["datasets"][0]["path"]]
    axes = "".join((a["name"] if isinstance(a, dict) else a) for a in scale.get("axes", "tczyx"[-array.ndim:]))
    kept = "".join(a for a, n in zip(axes.lower(), array.shape) if n > 1 or a in "yx")
    layouts = {"yx": "YX", "cyx": "CYX", "zyx": "ZYX"}
    if kept not in layouts:
        raise ValueError(f"{path}: OME-Zarr axes {axes!r} of shape {tuple(array.shape)}; blockwise prediction takes "
                         f"yx, cyx or zyx once axes of size 1 are dropped")
    view = _Squeezed(array, [a in kept for a in axes.lower()])
    shape = dict(zip(kept, view.shape))
    full = (shape.get("z", 1), shape["y"], shape["x"], shape.get("c", 1))
    return ImageSource(path, view, full, np.dtype(array.dtype), layouts[kept])  # type: ignore[arg-type]


class _Squeezed:
    """An array indexed without its axes of size 1 (``keep[i]`` False): OME-Zarr's ``t``, ``c``, ``z`` of one."""

    def __init__(self, array: Any, keep: Sequence[bool]) -> None:
        self.array, self.keep = array, list(keep)
        self.shape = tuple(n for n, k in zip(array.shape, keep) if k)
        self.dtype = array.dtype

    def __getitem__(self, key: Any) -> npt.NDArray[Any]:
        parts = iter(key if isinstance(key, tuple) else (key,))
        return np.asarray(self.array[tuple(next(parts, slice(None)) if k else 0 for k in self.keep)])


def _check_local_instances(predictor: Predictor, params: InstanceParams, target: str | None) -> None:
    if predictor.dims == 3:
        raise ValueError("blockwise instances of a volume (3D objects merged across boxes) are not supported; "
                         "predict without --instances, or without --dask")
    if target == MEMBRANES:
        raise ValueError("blockwise instances do not support the segments of a membrane model (their agglomeration "
                         "sees the whole map); predict this model without --dask")
    if params.watershed:
        raise ValueError("blockwise instances do not support --watershed (a watershed is not local to a block); "
                         "predict without --dask, or without --watershed")
    if target in ("boundary", *SEEDED_BY_OUTPUTS) or (target is None and predictor.num_classes == 3):
        raise ValueError(f"blockwise instances support the paper target (connected components of the "
                         f"foreground), not the {target or 'boundary'} target's seeded split (not local to a "
                         "block); predict this model without --dask")


def _make_job(
    predictor: Predictor, source: ImageSource, model: str | os.PathLike[str], out: Path, options: PredictOptions,
    *, device: str, precision: str, tta: bool | None, block_size: int | None,
) -> BlockJob:
    check_native_scale(predictor, source, options, "blockwise prediction")
    shape = (source.height, source.width)
    in_tile = tile_for(predictor, shape, options)
    job = BlockJob(
        model=str(Path(model).resolve()), image=str(source.path.resolve()), out_dir=str(out.resolve()),
        stem=output_stem(source.path), shape=(source.planes, *shape), device=device, precision=precision, tta=tta,
        in_tile=in_tile, block=block_side(predictor.geometry(in_tile), block_size), batch_size=options.batch_size,
        save_probabilities=options.save_probabilities,
        normalizations=tuple(normalization_for(source, z, predictor.normalization) for z in range(source.planes)),
    )
    return _check_not_input(job, source)


def _check_not_input(job: BlockJob, source: ImageSource) -> BlockJob:
    if Path(job.image) in (job.labels_path, job.probabilities_path, job.instances_path):
        raise ValueError(f"{source.path}: the outputs would overwrite the input; choose another --out")
    return job


def _make_volume_job(
    predictor: Predictor, source: ImageSource, model: str | os.PathLike[str], out: Path, options: PredictOptions,
    *, device: str, precision: str, tta: bool | None, block_size: int | None,
) -> VolumeJob:
    """The job of a zarr volume ``(Z, Y, X)`` and a 3D U-Net: the one-process tile shape, the whole volume's
    normalisation, boxes of :func:`volume_block_shape`."""
    check_dims(predictor, 3 if "Z" in source.layout else 2, source.path)
    shape = (source.planes, source.height, source.width)
    in_shape = volume_tile_for(predictor, shape, options)
    block_shape = volume_block_shape(volume_geometry(predictor.model_config, in_shape), block_size)
    job = VolumeJob(
        model=str(Path(model).resolve()), image=str(source.path.resolve()), out_dir=str(out.resolve()),
        stem=output_stem(source.path), shape=shape, device=device, precision=precision, tta=tta,
        in_tile=in_shape[-1], block=block_shape[-1], batch_size=options.batch_size,
        save_probabilities=options.save_probabilities,
        normalizations=(volume_normalization(source, predictor.normalization),),
        in_shape=in_shape, block_shape=block_shape,
    )
    return _check_not_input(job, source)  # type: ignore[return-value]


def _prepare_outputs(job: BlockJob, predictor: Predictor) -> None:
    """Create the staged output arrays and ``job.json`` in the progress folder, or check that the unfinished job
    there has the same settings (and resume it)."""
    import zarr

    settings = job.work_dir / "job.json"
    if settings.exists():
        previous, now = json.loads(settings.read_text()), json.loads(job.to_json())
        changed = sorted(k for k in set(previous) | set(now) if previous.get(k) != now.get(k))
        if changed:
            raise ValueError(f"{job.work_dir}: holds a blockwise job with other settings ({', '.join(changed)}); "
                             f"remove it and its outputs, or choose another --out")
        staged = [job.labels_path] + ([job.probabilities_path] if job.save_probabilities else [])
        if all(job.staged(path).exists() for path in staged):
            return
    remove_tree(job.work_dir)  # a job that never wrote its settings (or lost its arrays) finished no block
    (job.work_dir / "done").mkdir(parents=True)
    shape, chunks = job.output_layout()
    zarr.open_array(str(job.staged(job.labels_path)), mode="w", shape=shape, chunks=chunks,
                    dtype=label_dtype(predictor.num_classes))
    if job.save_probabilities:
        shape, chunks = job.output_layout(predictor.output_channels)
        zarr.open_array(str(job.staged(job.probabilities_path)), mode="w", shape=shape, chunks=chunks,
                        dtype=np.float32)
    with atomic_path(settings) as tmp:
        tmp.write_text(job.to_json())


def _commit(job: BlockJob, *, instances: bool) -> None:
    """Give the staged outputs their final names (replacing earlier outputs of the stem, and removing those this
    run does not write), the labels last, then remove the progress folder."""
    outputs = ((job.instances_path, instances), (job.probabilities_path, job.save_probabilities),
               (job.labels_path, True))
    for final, written in outputs:
        remove_tree(final)
        if written:
            os.replace(job.staged(final), final)
    remove_tree(job.work_dir)


def _wait(futures: Sequence[Any], progress: Callable[[int, int], None] | None, *, start: int, total: int) -> list[Any]:
    """Results of ``futures`` as they finish, in finishing order; a task's error is raised here."""
    from distributed import as_completed

    results, done = [], start
    if progress is not None:
        progress(done, total)
    for future in as_completed(futures):
        results.append(future.result())
        done += 1
        if progress is not None:
            progress(done, total)
    return results


# --- worker side: prediction -------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _worker_predictor(model: str, device: str, precision: str, tta: bool | None) -> Predictor:
    """One predictor per worker process and settings, loaded for its first block."""
    return load_predictor(model, device=device, precision=precision, tta=tta)


def predict_block(
    predictor: Predictor, source: ImageSource, norm: Normalization, block: Block, geometry: TileGeometry,
    *, batch_size: int = 1,
) -> Segmentation:
    """Outputs ``(K', h, w)`` and class labels ``(h, w)`` of one block, from the tiles the whole-image prediction
    runs there (:func:`biounet.inference.predict.predict_plane` with the block as its window).

    The block's rows and columns must start at multiples of ``geometry.step`` (as :func:`plan_blocks` with
    :func:`block_side` gives them): then its tiles start where the whole-image run's do, and each pixel comes from
    the same tile. The context is read once: the block, the margin, and the last tiles' overhang, mirrored outside
    the image.

    Raises
    ------
    ValueError
        If the block does not start at multiples of the tile step, or the pixels hold NaN or Inf.
    """
    (top, bottom), (left, right) = block.rows, block.cols
    if top % geometry.step or left % geometry.step:
        raise ValueError(f"block {block.name} must start at multiples of the tile step {geometry.step}")
    m, size, out = geometry.margin, geometry.in_tile, geometry.out_tile
    rows = mirror_indices(top - m, top - m + tile_starts(bottom - top, out, geometry.step)[-1] + size, source.height)
    cols = mirror_indices(left - m, left - m + tile_starts(right - left, out, geometry.step)[-1] + size,
                          source.width)
    r0, c0 = int(rows.min()), int(cols.min())
    try:
        raw = norm.apply(source.read(block.plane, slice(r0, int(rows.max()) + 1), slice(c0, int(cols.max()) + 1)))
    except ValueError as err:
        raise ValueError(f"{source.path}: {err}") from err

    def read(r: slice, c: slice) -> npt.NDArray[np.float32]:  # the tiles' context, all inside what was read
        return raw[r.start - r0 : r.stop - r0, c.start - c0 : c.stop - c0]

    shape = (bottom - top, right - left)
    probabilities = np.zeros((predictor.output_channels, *shape), np.float32)
    labels = np.zeros(shape, label_dtype(predictor.num_classes))
    predict_plane(predictor, read, (source.height, source.width), geometry, probabilities=probabilities,
                  labels=labels, batch_size=batch_size, window=(block.rows, block.cols), path=source.path)
    return Segmentation(probabilities, labels, geometry.in_tile)


def _predict_block(job: BlockJob, block: Block) -> None:
    """Task: predict one block, write its output chunks, then its marker."""
    import zarr

    predictor = _worker_predictor(job.model, job.device, job.precision, job.tta)
    result = predict_block(predictor, _open_zarr_source(job.image), job.normalizations[block.plane], block,
                           predictor.geometry(job.in_tile), batch_size=job.batch_size)
    zarr.open_array(str(job.staged(job.labels_path)), mode="r+")[output_index(block, job.planar)] = result.labels
    if job.save_probabilities:
        probabilities = zarr.open_array(str(job.staged(job.probabilities_path)), mode="r+")
        probabilities[output_index(block, job.planar, channels=True)] = result.probabilities
    with atomic_path(job.marker(block)) as tmp, tmp.open("wb") as handle:
        np.savez(handle, precision=np.array(predictor.precision))


def predict_volume_block(
    predictor: Predictor, source: ImageSource, norm: Normalization, block: VolumeBlock, geometry: VolumeGeometry,
    *, batch_size: int = 1,
) -> VolumeSegmentation:
    """Outputs ``(K', z, y, x)`` and class labels ``(z, y, x)`` of one box of a volume, from the tiles the
    whole-volume prediction (:func:`biounet.inference.volumes.predict_volume`) runs there, in the same order.

    The box must start at multiples of ``geometry.step`` per axis and (except at the volume's far edges) end at
    them, as :func:`plan_volume_blocks` with :func:`volume_block_shape` gives it: then each voxel is written last by
    the same tile as in the whole-volume run, so the values are equal. The context is read once (the box, the
    margins and the last tiles' overhang, mirrored outside the volume).

    Raises
    ------
    ValueError
        If the box does not start at multiples of the tile step, or the voxels hold NaN or Inf.
    FloatingPointError
        If the network's output is NaN or infinite.
    """
    spans = (block.zs, block.rows, block.cols)
    volume = (source.planes, source.height, source.width)
    if any(start % step for (start, _), step in zip(spans, geometry.step)):
        raise ValueError(f"box {block.name} must start at multiples of the tile step {geometry.step}")
    starts = [[start + s for s in tile_starts(stop - start, out, step)]
              for (start, stop), out, step in zip(spans, geometry.out_shape, geometry.step)]
    read = _context_reader(source, norm, volume, starts, geometry)
    extent = tuple(stop - start for start, stop in spans)
    probabilities = np.zeros((predictor.output_channels, *extent), np.float32)
    labels = np.zeros(extent, label_dtype(predictor.num_classes))
    origins = list(itertools.product(*starts))
    for first in range(0, len(origins), batch_size):
        batch_origins = origins[first : first + batch_size]
        tiles = [read_mirrored_box(read, volume, [o - m for o, m in zip(origin, geometry.margins)], geometry.in_shape)
                 for origin in batch_origins]
        probs = predictor(np.ascontiguousarray(np.stack(tiles).transpose(0, 4, 1, 2, 3), dtype=np.float32))
        if not np.all(np.isfinite(probs)):
            raise FloatingPointError(f"{source.path}: the network's output is NaN or infinite in box {block.name}")
        for origin, tile in zip(batch_origins, probs):
            size = [min(out, stop - o) for out, (_, stop), o in zip(geometry.out_shape, spans, origin)]
            inside = tile[(slice(None), *(slice(0, n) for n in size))]
            region = tuple(slice(o - start, o - start + n) for o, (start, _), n in zip(origin, spans, size))
            probabilities[(slice(None), *region)] = inside
            labels[region] = np.argmax(inside[: predictor.num_classes], axis=0)
    return VolumeSegmentation(probabilities, labels, geometry.in_shape)


def _context_reader(source: ImageSource, norm: Normalization, volume: tuple[int, int, int],
                    starts: Sequence[Sequence[int]], geometry: VolumeGeometry) -> Callable[..., npt.NDArray[Any]]:
    """``read(zs, ys, xs)`` over the normalised voxels the tiles at ``starts`` (per axis) need, read once."""
    indices = [mirror_indices(axis[0] - m, axis[-1] - m + size, length)
               for axis, m, size, length in zip(starts, geometry.margins, geometry.in_shape, volume)]
    low = [int(index.min()) for index in indices]
    try:
        raw = norm.apply(source.read_region(*(slice(lo, int(index.max()) + 1) for lo, index in zip(low, indices))))
    except ValueError as err:
        raise ValueError(f"{source.path}: {err}") from err

    def read(zs: slice, ys: slice, xs: slice) -> npt.NDArray[np.float32]:
        return raw[tuple(slice(s.start - lo, s.stop - lo) for s, lo in zip((zs, ys, xs), low))]

    return read


def _predict_volume_block(job: VolumeJob, block: VolumeBlock) -> None:
    """Task: predict one box of a volume, write its output chunks, then its marker."""
    import zarr

    predictor = _worker_predictor(job.model, job.device, job.precision, job.tta)
    result = predict_volume_block(predictor, _open_zarr_source(job.image), job.normalizations[0], block,
                                  volume_geometry(predictor.model_config, job.in_shape), batch_size=job.batch_size)
    zs, rows, cols = block.region
    zarr.open_array(str(job.staged(job.labels_path)), mode="r+")[zs, rows, cols] = result.labels
    if job.save_probabilities:
        probabilities = zarr.open_array(str(job.staged(job.probabilities_path)), mode="r+")
        probabilities[zs, :, rows, cols] = np.moveaxis(result.probabilities, 0, 1)
    with atomic_path(job.marker(block)) as tmp, tmp.open("wb") as handle:
        np.savez(handle, precision=np.array(predictor.precision))


# --- instances ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _InstanceJob:
    labels: str  # (H, W) or (Z, H, W) class labels, chunks (block, block) or (1, block, block)
    components: str  # scratch array of block-unique component ids, (Z, H, W)
    out: str  # the instances, in the layout of the labels
    shape: tuple[int, int, int]  # Z, H, W
    block: int
    planar: bool  # labels and instances are (H, W)


def instances_blockwise(
    client: Any, labels_path: str | os.PathLike[str], out_path: str | os.PathLike[str], *,
    params: InstanceParams = InstanceParams(),
) -> Path:
    """Instances of an ``(H, W)`` or ``(Z, H, W)`` class-label zarr array, block by block on the Dask ``client``:
    equal to :func:`biounet.inference.instances.instances_from_labels` (``paper`` target) on each whole plane
    (module docstring).

    Blocks are the array's chunks, which must be ``(b, b)`` or ``(1, b, b)``; writes ``out_path`` (uint32, same
    shape and chunks).

    Raises
    ------
    ValueError
        If the array is not 2-D with ``(b, b)`` or 3-D with ``(1, b, b)`` chunks, or ``params`` asks for the
        watershed split.
    """
    import zarr

    if params.watershed:
        raise ValueError("blockwise instances do not support the watershed split (not local to a block)")
    labels = zarr.open_array(str(labels_path), mode="r")
    planar = labels.ndim == 2
    shape, chunks = ((1, *labels.shape), (1, *labels.chunks)) if planar else (labels.shape, labels.chunks)
    if len(shape) != 3 or chunks[0] != 1 or chunks[1] != chunks[2]:
        raise ValueError(f"{labels_path}: need (H, W) or (Z, H, W) labels in (b, b) or (1, b, b) chunks, got shape "
                         f"{labels.shape}, chunks {labels.chunks}")
    out_path = Path(out_path)
    job = _InstanceJob(str(labels_path), str(out_path.with_name(f".{out_path.name}.components")), str(out_path),
                       tuple(shape), int(chunks[1]), planar)  # type: ignore[arg-type]
    blocks = plan_blocks(job.shape[0], job.shape[1:], job.block)
    stride_ok = len(blocks) * job.block**2 < 2**32
    zarr.open_array(job.components, mode="w", shape=shape, chunks=chunks, dtype=np.uint32 if stride_ok else np.uint64)
    zarr.open_array(job.out, mode="w", shape=labels.shape, chunks=labels.chunks, dtype=np.uint32)
    try:
        records = client.gather([client.submit(_label_block, job, b, pure=False) for b in blocks])
        keys, values = merge_components(job, blocks, records, min_size_px=params.min_size_px)
        keys_future, values_future = client.scatter([keys, values], broadcast=True)
        _wait([client.submit(_fill_block, job, b, keys_future, values_future, pure=False) for b in blocks], None,
              start=0, total=len(blocks))
    finally:
        remove_tree(Path(job.components))
    return out_path


def _label_block(job: _InstanceJob, block: Block) -> dict[str, npt.NDArray[Any]]:
    """Task: the block's 4-connected foreground components, ids offset by ``block.number * block**2`` (unique
    across blocks), written to the scratch array; returns their ids, sizes and first pixels (flat index in the
    plane, raster order)."""
    import zarr

    foreground = np.asarray(zarr.open_array(job.labels, mode="r")[output_index(block, job.planar)]) > 0
    local, _ = ndimage.label(foreground)
    offset = np.uint64(block.number * job.block**2)
    ids, first, counts = np.unique(local, return_index=True, return_counts=True)
    cells = ids > 0
    ids, first, counts = ids[cells], first[cells], counts[cells]
    array = zarr.open_array(job.components, mode="r+")
    array[block.region] = np.where(local > 0, local.astype(np.uint64) + offset, 0).astype(array.dtype)
    rows, cols = np.divmod(first, block.cols[1] - block.cols[0])
    return {"ids": ids.astype(np.uint64) + offset, "counts": counts.astype(np.int64),
            "first": ((rows + block.rows[0]) * job.shape[2] + cols + block.cols[0]).astype(np.int64)}


def merge_components(
    job: _InstanceJob, blocks: Sequence[Block], records: Sequence[dict[str, npt.NDArray[Any]]], *, min_size_px: int,
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint32]]:
    """Final instance id of every block component: ``(keys, values)``, ``keys`` sorted; 0 for dropped cells.

    Components that touch across a block face (4-connectivity) are one cell; cells smaller than ``min_size_px``
    are dropped (none for 0 or 1); the rest are numbered 1..N per plane in raster order of their first pixel.
    """
    import zarr
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ids = np.concatenate([r["ids"] for r in records]).astype(np.uint64)
    first = np.concatenate([r["first"] for r in records]).astype(np.int64)
    counts = np.concatenate([r["counts"] for r in records]).astype(np.int64)
    planes = np.concatenate([np.full(len(r["ids"]), b.plane) for r, b in zip(records, blocks)])
    if not len(ids):
        return ids, np.zeros(0, np.uint32)
    order = np.argsort(ids)
    ids, first, counts, planes = ids[order], first[order], counts[order], planes[order]
    pairs = _face_pairs(zarr.open_array(job.components, mode="r"), job)
    u, v = np.searchsorted(ids, pairs[:, 0]), np.searchsorted(ids, pairs[:, 1])
    graph = coo_matrix((np.ones(len(u), np.int8), (u, v)), shape=(len(ids), len(ids)))
    count, cell = connected_components(graph, directed=False)
    sizes = np.bincount(cell, weights=counts, minlength=count)
    first_pixel = np.full(count, np.iinfo(np.int64).max)
    np.minimum.at(first_pixel, cell, first)
    cell_plane = np.zeros(count, np.int64)
    cell_plane[cell] = planes
    keep = sizes >= min_size_px if min_size_px > 1 else np.ones(count, bool)
    final = np.zeros(count, np.uint32)
    for plane in np.unique(cell_plane):
        chosen = np.flatnonzero(keep & (cell_plane == plane))
        final[chosen[np.argsort(first_pixel[chosen], kind="stable")]] = np.arange(1, len(chosen) + 1)
    return ids, final[cell]


def _face_pairs(components: Any, job: _InstanceJob) -> npt.NDArray[np.uint64]:
    """``(n, 2)`` component ids that touch across a block face (both non-zero), over all planes."""
    planes, height, width = job.shape
    found = [np.zeros((0, 2), np.uint64)]
    for plane in range(planes):
        for col in range(job.block, width, job.block):
            strip = np.asarray(components[plane, :, col - 1 : col + 1])
            found.append(strip[(strip[:, 0] > 0) & (strip[:, 1] > 0)].astype(np.uint64))
        for row in range(job.block, height, job.block):
            strip = np.asarray(components[plane, row - 1 : row + 1, :]).T
            found.append(strip[(strip[:, 0] > 0) & (strip[:, 1] > 0)].astype(np.uint64))
    return np.unique(np.concatenate(found), axis=0)


def _fill_block(job: _InstanceJob, block: Block, keys: npt.NDArray[np.uint64],
                values: npt.NDArray[np.uint32]) -> None:
    """Task: final ids of one block and a halo around it, gaps given back, the block written out."""
    import zarr

    _, height, width = job.shape
    top, left = max(block.rows[0] - FILL_HALO_PX, 0), max(block.cols[0] - FILL_HALO_PX, 0)
    bottom, right = min(block.rows[1] + FILL_HALO_PX, height), min(block.cols[1] + FILL_HALO_PX, width)
    components = np.asarray(zarr.open_array(job.components, mode="r")[block.plane, top:bottom, left:right])
    labels = np.zeros(components.shape, np.int32)
    if len(keys):
        index = np.clip(np.searchsorted(keys, components), 0, len(keys) - 1)
        labels = np.where(components > 0, values[index], 0).astype(np.int32)
    filled = fill_gaps(labels)
    inner = filled[block.rows[0] - top : block.rows[1] - top, block.cols[0] - left : block.cols[1] - left]
    zarr.open_array(job.out, mode="r+")[output_index(block, job.planar)] = inner


__all__ = [
    "DEFAULT_BLOCK_PX",
    "DEFAULT_VOLUME_BLOCK",
    "FILL_HALO_PX",
    "Block",
    "BlockJob",
    "BlockwiseResult",
    "VolumeBlock",
    "VolumeJob",
    "block_side",
    "instances_blockwise",
    "merge_components",
    "open_client",
    "output_index",
    "plan_blocks",
    "plan_volume_blocks",
    "predict_block",
    "predict_blockwise",
    "predict_volume_block",
    "volume_block_shape",
]
