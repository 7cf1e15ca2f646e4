"""Compressed neural-network weights (p-adic containers), loaded straight into
PyTorch and NumPy.

The API mirrors safetensors::

    import padic_burst, padic_burst.torch
    padic_burst.compress_file("model.safetensors", "model.padic")
    tensors = padic_burst.torch.load_file("model.padic")

``padic_burst.torch.save_file(tensors, "model.padic")`` (and NumPy's) compresses
tensors held in memory. ``compress_file`` and every ``load_file`` also take a
sharded model directory
(``model-00001-of-00003.safetensors``, ..., the index, ``config.json``): each
shard becomes ``<stem>.padic`` and every other file is copied unchanged.
"""

from ._padic_burst import CUDA_BUILD, PadicError, __version__, compress_file
from ._pipeline import Pipeline, safe_open

__all__ = ["CUDA_BUILD", "PadicError", "Pipeline", "__version__", "compress_file", "safe_open"]
