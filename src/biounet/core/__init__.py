"""The network and what it is trained toward: the U-Net (:mod:`.model`), the weight map of eq. 2 (:mod:`.weights`), training targets, topology, devices, FLOPs."""
