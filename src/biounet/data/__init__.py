"""Images, labels and models on disk: images read lazily and written tiled (:mod:`.images`, :mod:`.omezarr`),
intensity normalisation (:mod:`.normalization`), files by stem and atomic writes (:mod:`.files`), pixel size,
dataset layouts (:mod:`.datasets`), checkpoints, ImageJ ROIs, synthetic cells."""
