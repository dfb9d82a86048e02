"""From a model and an image to labels: the overlap-tile strategy (:mod:`.tiling`), predictors, prediction of files and big images (blockwise, OME-Zarr), instances and segments."""
