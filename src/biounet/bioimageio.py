"""The stable import path that biounet's bioimage.io packages record for their architecture
(``import_from: biounet.bioimageio``), whatever the package's layout; the code lives in
:mod:`biounet.integrations.bioimageio`."""

from biounet.integrations.bioimageio import ProbabilityUNet

__all__ = ["ProbabilityUNet"]
