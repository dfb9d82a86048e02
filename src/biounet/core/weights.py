"""Pixel-wise loss weights of Ronneberger et al. (2015), eq. 2, and the separation of touching cells.

The weight map ``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 sigma**2))`` balances the class frequencies
(``w_c``) and forces the network to learn the thin background gaps between touching cells (the border term).
The gaps themselves are cut into the instance labels by :func:`separation_borders`. Every function takes 2-D
(H, W) images and 3-D (Z, Y, X) volumes; the distances of a volume are physical through ``spacing`` (the voxel
size relative to the in-plane pixel), as Cicek et al. (2016) train the 3D U-Net with the same weighted loss.
NumPy/SciPy only.

References
----------
.. [1] Ronneberger, Fischer, Brox (2015). U-Net: Convolutional Networks for Biomedical Image Segmentation.
   MICCAI. arXiv:1505.04597
.. [2] Cicek, Abdulkadir, Lienkamp, Brox, Ronneberger (2016). 3D U-Net: Learning Dense Volumetric Segmentation
   from Sparse Annotation. MICCAI. arXiv:1606.06650
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import ndimage

__all__ = [
    "BORDER_TRUNCATION",
    "border_weights",
    "check_spacing",
    "class_balance_weights",
    "nearest_two_distances",
    "separation_borders",
    "weight_map",
    "weight_map_from_classes",
]

BORDER_TRUNCATION = 1e-6
"""The border term is set to 0 where ``exp(-(d1 + d2)**2 / (2 sigma**2)) < BORDER_TRUNCATION``.

Equivalently, only cells closer than ``sigma_px * sqrt(2 ln(1 / BORDER_TRUNCATION))`` (5.26 sigma) to a pixel
are looked at. For ``w0 = 10`` the truncated values are below 1e-5, far below the class weights (~1)."""


def _check_label_image(array: np.ndarray, name: str) -> None:
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(array).__name__}")
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[0] >= 2)):
        # A single-slice volume (1, H, W) is refused rather than guessed at: pass the slice itself.
        raise ValueError(f"{name} must be 3-D (Z, Y, X) with Z >= 2 or 2-D (H, W), got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array, got dtype {array.dtype}")


def _check_instances(instances: np.ndarray) -> None:
    _check_label_image(instances, "instances")
    if instances.size and instances.min() < 0:
        raise ValueError(f"instances must be >= 0 (0 = background, 1..N = cells), got minimum {instances.min()}")


def check_spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...] | None:
    """A pixel/voxel size relative to the in-plane pixel as a tuple of ``ndim`` floats > 0; None stays None (unit).

    >>> check_spacing([2.24, 1, 1], 3)
    (2.24, 1.0, 1.0)
    """
    if spacing is None:
        return None
    values = tuple(float(v) for v in spacing)
    if len(values) != ndim or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing must be {ndim} finite values > 0 (one per axis), got {tuple(spacing)}")
    return values


def separation_borders(instances: npt.NDArray[np.integer]) -> npt.NDArray[np.integer]:
    """Cut a background gap between touching cells of an instance label image.

    A pixel of cell ``k`` becomes background when its 8-neighbourhood (3x3 window; 3x3x3 in a volume) contains a
    pixel of another cell. Both sides of a contact are removed, so touching cells end up separated by a gap of
    about 2 px (2 voxels) that is background in every 8-connected (26-connected) sense. Cells that do not touch
    are unchanged.

    Parameters
    ----------
    instances : (H, W) or (Z, Y, X) ndarray of int
        Instance label image; 0 is background, each cell has its own positive id.

    Returns
    -------
    separated : ndarray of the same shape and dtype as ``instances``
        A new label image, equal to ``instances`` except that contact pixels are 0.

    Raises
    ------
    TypeError
        If ``instances`` is not an integer ndarray.
    ValueError
        If ``instances`` is not (H, W) or (Z >= 2, Y, X) or has negative ids.

    Notes
    -----
    The paper only says the borders come from "morphological operations". Here a pixel is a contact pixel when
    the maximum or the minimum of the *non-zero* ids in its 3x3 window differs from its own id: two grey-value
    filters, no loop over cells. Image borders are extended by replication, which adds no new ids.

    References
    ----------
    .. [1] Ronneberger, Fischer, Brox (2015). U-Net. MICCAI, section 3. arXiv:1505.04597

    Examples
    --------
    >>> cells = np.array([[1, 1, 2, 2],
    ...                   [1, 1, 2, 2],
    ...                   [0, 0, 0, 3]])
    >>> separation_borders(cells)
    array([[1, 0, 0, 2],
           [1, 0, 0, 0],
           [0, 0, 0, 0]])
    """
    _check_instances(instances)
    if instances.size == 0:
        return instances.copy()
    foreground = instances > 0
    largest = ndimage.maximum_filter(instances, size=3, mode="nearest")
    sentinel = np.iinfo(instances.dtype).max
    smallest = ndimage.minimum_filter(np.where(foreground, instances, sentinel), size=3, mode="nearest")
    contact = foreground & ((largest != instances) | (smallest != instances))
    return np.where(contact, 0, instances).astype(instances.dtype, copy=False)


def class_balance_weights(
    classes: npt.NDArray[np.integer],
    *,
    num_classes: int,
    frequencies: Sequence[float] | npt.NDArray[np.floating] | None = None,
    ignore_index: int | None = None,
) -> npt.NDArray[np.float32]:
    """Class-balancing weights ``w_c(x)``: inverse class frequency, mean 1.

    Parameters
    ----------
    classes : (H, W) or (Z, Y, X) ndarray of int
        Class id of every pixel, in ``[0, num_classes)``, or ``ignore_index``.
    num_classes : int
        Number of classes ``K`` (2 for foreground/background). Must be >= 1.
    frequencies : sequence of float, length ``num_classes``, optional
        Class frequencies ``f_c`` measured over a whole data set (counts or fractions; they are divided by their
        sum). By default they are measured on this image, over its non-ignored pixels.
    ignore_index : int, optional
        Class value of unlabelled pixels; they get weight 0 and are not counted in the frequencies.

    Returns
    -------
    weights : ndarray of float32, the shape of ``classes``
        ``w_c(x) = 1 / (K' * f_{l(x)})`` for labelled pixels, 0 for ignored ones.

    Raises
    ------
    TypeError
        If ``classes`` is not an integer ndarray.
    ValueError
        If ``classes`` is not (H, W) or (Z >= 2, Y, X), holds a value outside ``[0, num_classes)`` other than ``ignore_index``,
        ``num_classes < 1``, or ``frequencies`` has the wrong length, a negative or non-finite entry, sums to 0,
        or is 0 for a class that occurs in ``classes``.

    Notes
    -----
    The paper does not give ``w_c``. We use ``w_c = 1 / (K' f_c)`` with ``f_c`` the fraction of pixels of class
    ``c`` and ``K'`` the number of classes with ``f_c > 0``. Every class then carries the same total weight, and
    the weights average to exactly 1 over the pixels the frequencies were measured on: this image by default,
    the data set when ``frequencies`` are passed. Classes absent from those pixels get no weight and cause no
    division by zero.

    References
    ----------
    .. [1] Ronneberger, Fischer, Brox (2015). U-Net. MICCAI, eq. 2. arXiv:1505.04597

    Examples
    --------
    >>> class_balance_weights(np.array([[0, 0, 0, 1]]), num_classes=2)
    array([[0.6666667, 0.6666667, 0.6666667, 2.       ]], dtype=float32)
    """
    _check_label_image(classes, "classes")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    labelled = np.ones(classes.shape, bool) if ignore_index is None else classes != ignore_index
    values = classes[labelled]
    if values.size and (values.min() < 0 or values.max() >= num_classes):
        bad = values[(values < 0) | (values >= num_classes)]
        raise ValueError(
            f"classes must be in [0, {num_classes}) or ignore_index={ignore_index}, got values {np.unique(bad)[:10]}"
        )
    counts = np.bincount(values.ravel(), minlength=num_classes).astype(np.float64)
    if frequencies is None:
        freq = counts
    else:
        freq = np.asarray(frequencies, dtype=np.float64)
        if freq.shape != (num_classes,):
            raise ValueError(f"frequencies must have length num_classes={num_classes}, got shape {freq.shape}")
        if not np.all(np.isfinite(freq)) or np.any(freq < 0) or freq.sum() <= 0:
            raise ValueError(f"frequencies must be finite, >= 0 and not all 0, got {freq.tolist()}")
        missing = np.flatnonzero((counts > 0) & (freq == 0))
        if missing.size:
            raise ValueError(f"frequencies are 0 for classes {missing.tolist()} that occur in classes")
    weights = np.zeros(classes.shape, np.float32)
    if freq.sum() == 0:  # nothing labelled: every pixel is ignored
        return weights
    freq = freq / freq.sum()
    present = freq > 0
    per_class = np.zeros(num_classes, np.float64)
    per_class[present] = 1.0 / (np.count_nonzero(present) * freq[present])
    weights[labelled] = per_class[values]
    return weights


def _truncation_distance(sigma_px: float) -> float:
    return sigma_px * math.sqrt(2.0 * math.log(1.0 / BORDER_TRUNCATION))


def nearest_two_distances(
    instances: npt.NDArray[np.integer],
    *,
    max_distance_px: float,
    spacing: Sequence[float] | None = None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Distances ``d1 <= d2`` from every pixel to the nearest and the second-nearest cell (eq. 2's d1, d2).

    Only cells closer than ``max_distance_px`` are looked at (farther ones give ``inf``): each cell's distance
    transform is computed on its bounding box grown by that distance, and the two smallest distances per pixel
    are kept with running minima, so the cost is ``O(sum over cells of (cell size + 2 D)^ndim)``.

    ``instances`` is (H, W) or (Z, Y, X). ``spacing`` is the size of a pixel/voxel along each axis relative to
    the in-plane pixel, e.g. ``(2.24, 1, 1)``; distances and ``max_distance_px`` are in those units (in-plane
    pixels). None: unit spacing.

    Examples
    --------
    >>> d1, d2 = nearest_two_distances(np.array([[1, 0, 0, 2]]), max_distance_px=5)
    >>> d1.tolist(), d2.tolist()
    ([[0.0, 1.0, 1.0, 0.0]], [[3.0, 2.0, 2.0, 3.0]])
    """
    _check_instances(instances)
    sampling = check_spacing(spacing, instances.ndim)
    d1 = np.full(instances.shape, np.inf)
    d2 = np.full(instances.shape, np.inf)
    cell_ids = np.unique(instances)
    cell_ids = cell_ids[cell_ids > 0]
    # Consecutive ids keep find_objects' list short whatever the ids are.
    sequential = np.searchsorted(cell_ids, instances).astype(np.int32) + 1
    sequential[instances == 0] = 0
    steps = (1.0,) * instances.ndim if sampling is None else sampling
    grow = [math.ceil(max_distance_px / step) for step in steps]
    for index, box in enumerate(ndimage.find_objects(sequential), start=1):
        if box is None:
            continue
        window = tuple(
            slice(max(axis.start - g, 0), min(axis.stop + g, size))
            for axis, g, size in zip(box, grow, instances.shape)
        )
        dist = ndimage.distance_transform_edt(sequential[window] != index, sampling=sampling)
        near1, near2 = d1[window], d2[window]  # views: updated in place
        np.minimum(near2, np.maximum(near1, dist), out=near2)
        np.minimum(near1, dist, out=near1)
    return d1, d2


def border_weights(
    instances: npt.NDArray[np.integer],
    *,
    w0: float = 10.0,
    sigma_px: float = 5.0,
    spacing: Sequence[float] | None = None,
) -> npt.NDArray[np.float32]:
    """Separation border term ``w0 * exp(-(d1 + d2)**2 / (2 sigma**2))`` of eq. 2.

    Parameters
    ----------
    instances : (H, W) or (Z, Y, X) ndarray of int
        Instance label image; 0 is background, each cell has its own positive id. Touching cells should be
        separated first (:func:`separation_borders`), otherwise there is no background between them.
    w0 : float, optional
        Peak weight, >= 0. The paper uses 10.
    sigma_px : float, optional
        Width of the term in (in-plane) pixels, > 0. The paper uses "approximately 5".
    spacing : sequence of float, optional
        Pixel/voxel size along each axis relative to the in-plane pixel, e.g. ``(2.24, 1.0, 1.0)`` for a stack
        whose slices are 2.24 pixels apart; ``d1``, ``d2`` are measured in those physical units. None: unit.

    Returns
    -------
    weights : ndarray of float32, the shape of ``instances``
        The term on background pixels, 0 on cell pixels and everywhere if there are fewer than two cells.

    Raises
    ------
    TypeError
        If ``instances`` is not an integer ndarray.
    ValueError
        If ``instances`` is not (H, W) or (Z >= 2, Y, X) or is negative, ``w0 < 0``, ``sigma_px <= 0`` or
        ``spacing`` is not one positive value per axis.

    Notes
    -----
    ``d1(x)`` and ``d2(x)`` are the Euclidean distances from pixel ``x`` to the nearest pixel of the nearest and
    of the second-nearest cell (so 1 for a background pixel next to a cell). The term is truncated to 0 where
    ``exp(...) < BORDER_TRUNCATION`` (1e-6); elsewhere it is exact. Since ``d1 <= d2``, only cells closer than
    ``D = sigma_px * sqrt(2 ln 1e6)`` matter, so each cell's distance transform is computed on its bounding box
    grown by ``D``, and the two smallest distances per pixel are kept with running minima. The cost is
    ``O(sum over cells of (cell size + 2D)^2)`` instead of ``O(cells * H * W)`` (``^3`` in a volume, where the box
    grows by ``D / spacing`` voxels along each axis).

    References
    ----------
    .. [1] Ronneberger, Fischer, Brox (2015). U-Net. MICCAI, eq. 2. arXiv:1505.04597
    .. [2] Cicek et al. (2016). 3D U-Net. MICCAI, section 2 (the same weighted loss on volumes). arXiv:1606.06650
    """
    _check_instances(instances)
    check_spacing(spacing, instances.ndim)
    if not (math.isfinite(w0) and w0 >= 0):
        raise ValueError(f"w0 must be finite and >= 0, got {w0}")
    if not (math.isfinite(sigma_px) and sigma_px > 0):
        raise ValueError(f"sigma_px must be finite and > 0, got {sigma_px}")
    out = np.zeros(instances.shape, np.float32)
    if w0 == 0:
        return out
    cutoff = _truncation_distance(sigma_px)
    d1, d2 = nearest_two_distances(instances, max_distance_px=cutoff, spacing=spacing)
    total = d1 + d2
    keep = (total <= cutoff) & (instances == 0)
    out[keep] = w0 * np.exp(-(total[keep] ** 2) / (2.0 * sigma_px**2))
    return out


def weight_map_from_classes(
    classes: npt.NDArray[np.integer],
    instances: npt.NDArray[np.integer] | None = None,
    *,
    num_classes: int,
    w0: float = 10.0,
    sigma_px: float = 5.0,
    class_frequencies: Sequence[float] | npt.NDArray[np.floating] | None = None,
    ignore_index: int | None = None,
    spacing: Sequence[float] | None = None,
) -> npt.NDArray[np.float32]:
    """Weight map ``w = w_c + border term`` for a multi-class label image (eq. 2).

    Parameters
    ----------
    classes : (H, W) or (Z, Y, X) ndarray of int
        Class id per pixel in ``[0, num_classes)``, or ``ignore_index``.
    instances : ndarray of int, the shape of ``classes``, optional
        Instance ids for the border term (0 = no cell), with touching cells already separated. Without it there
        is no border term.
    num_classes : int
        Number of classes ``K``.
    w0, sigma_px : float, optional
        Border term parameters, see :func:`border_weights`.
    class_frequencies : sequence of float, optional
        Data-set class frequencies for ``w_c``, see :func:`class_balance_weights`; per image by default.
    ignore_index : int, optional
        Class value of unlabelled pixels; their weight is 0 (both terms).
    spacing : sequence of float, optional
        Voxel size relative to the in-plane pixel for the border term's distances, see :func:`border_weights`.

    Returns
    -------
    weights : ndarray of float32, the shape of ``classes``
        ``w_c(x) + w0 exp(-(d1 + d2)^2 / (2 sigma^2))``; the border term lives on pixels with ``instances == 0``.

    Raises
    ------
    TypeError, ValueError
        As :func:`class_balance_weights` and :func:`border_weights`, and if the shapes differ.
    """
    weights = class_balance_weights(
        classes, num_classes=num_classes, frequencies=class_frequencies, ignore_index=ignore_index
    )
    if instances is not None:
        _check_instances(instances)
        if instances.shape != classes.shape:
            raise ValueError(f"instances {instances.shape} and classes {classes.shape} must have the same shape")
        weights += border_weights(instances, w0=w0, sigma_px=sigma_px, spacing=spacing)
        if ignore_index is not None:
            weights[classes == ignore_index] = 0.0
    return weights


def weight_map(
    instances: npt.NDArray[np.integer],
    *,
    w0: float = 10.0,
    sigma_px: float = 5.0,
    class_frequencies: Sequence[float] | npt.NDArray[np.floating] | None = None,
    ignore_mask: npt.NDArray[np.bool_] | None = None,
    spacing: Sequence[float] | None = None,
) -> npt.NDArray[np.float32]:
    """Pixel-wise loss weights of Ronneberger et al. (2015), eq. 2, for cell/background segmentation.

    Parameters
    ----------
    instances : (H, W) or (Z, Y, X) ndarray of int
        Instance label image; 0 is background, each cell has its own positive id. Pass the output of
        :func:`separation_borders` when cells touch: the training target is then ``instances > 0``.
    w0 : float, optional
        Peak weight of the separation border term (paper: 10).
    sigma_px : float, optional
        Width of the border term in pixels (paper: about 5). Must be > 0.
    class_frequencies : sequence of 2 floats, optional
        Frequencies of (background, cell) over the data set; measured on this image by default.
    ignore_mask : ndarray of bool, the shape of ``instances``, optional
        True for unlabelled pixels: weight 0, left out of the class frequencies (Cicek et al.: a volume
        annotated on a few slices trains with the unannotated voxels ignored).
    spacing : sequence of float, optional
        Voxel size relative to the in-plane pixel, e.g. ``(2.24, 1, 1)``; the distances ``d1``, ``d2`` are
        physical, ``sigma_px`` stays in in-plane pixels. None: unit spacing.

    Returns
    -------
    weights : ndarray of float32, the shape of ``instances``
        ``w_c(x) + w0 * exp(-(d1 + d2)**2 / (2 sigma**2))`` on background pixels and ``w_c(x)`` on cells, where
        ``w_c = 1 / (2 f_c)`` balances the two classes (mean 1 over the image).

    Raises
    ------
    TypeError
        If ``instances`` is not an integer ndarray or ``ignore_mask`` not boolean.
    ValueError
        If a shape is wrong, ``instances`` is negative or a parameter is out of range.

    References
    ----------
    .. [1] Ronneberger, Fischer, Brox (2015). U-Net. MICCAI, eq. 2. arXiv:1505.04597

    Examples
    --------
    >>> cells = separation_borders(np.array([[1, 1, 2, 2]] * 3))
    >>> (cells > 0).astype(int)
    array([[1, 0, 0, 1],
           [1, 0, 0, 1],
           [1, 0, 0, 1]])
    >>> w = weight_map(cells)  # gap pixels: w_c = 1 and d1 + d2 = 1 + 2 = 3
    >>> bool(np.isclose(w[0, 1], 1 + 10 * np.exp(-9 / 50)))
    True
    """
    _check_instances(instances)
    classes = (instances > 0).astype(np.int8)
    ignore_index = None
    if ignore_mask is not None:
        if not isinstance(ignore_mask, np.ndarray) or ignore_mask.dtype != np.bool_:
            raise TypeError(f"ignore_mask must be a boolean ndarray, got {getattr(ignore_mask, 'dtype', ignore_mask)}")
        if ignore_mask.shape != instances.shape:
            raise ValueError(
                f"ignore_mask {ignore_mask.shape} and instances {instances.shape} must have the same shape"
            )
        ignore_index = -1
        classes[ignore_mask] = ignore_index
    return weight_map_from_classes(
        classes,
        instances,
        num_classes=2,
        w0=w0,
        sigma_px=sigma_px,
        class_frequencies=class_frequencies,
        ignore_index=ignore_index,
        spacing=spacing,
    )
