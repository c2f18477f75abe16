"""Images held as bytes (shard members, Arrow cells) -> ``uint8`` RGB tensors.

The same decoders as the folders' :func:`fastvit.data.datasets.load_rgb`:
``torchvision.io`` (libjpeg-turbo / libpng) first, PIL for the formats it does
not read; every image becomes 3-channel RGB.
"""

from __future__ import annotations

import io
import warnings

import torch
from PIL import Image, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as TF

from fastvit.data.datasets import _DECODER_NOTICE, _is_corrupt_message, _to_rgb

#: member suffixes of a shard sample that hold the image, in order of preference
IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "ppm", "jfif")


def decode_bytes(data: bytes) -> torch.Tensor:
    """Decode encoded image bytes to a ``(3, H, W)`` uint8 tensor.

    Raises ``OSError``/``RuntimeError``/``ValueError`` for data no decoder reads.
    """
    if not data:
        raise ValueError("empty image data")
    buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", _DECODER_NOTICE, DeprecationWarning)
            image = decode_image(buffer, mode=ImageReadMode.RGB)
    except RuntimeError as err:
        if _is_corrupt_message(str(err)):
            raise
        image = None  # a format torchvision does not read: PIL
    if image is not None:
        if image.dtype != torch.uint8:
            image = TF.to_dtype(image, torch.uint8, scale=True)
        return image
    try:
        pil = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ValueError("not an image any decoder reads") from None
    with pil:
        pil.load()
        return TF.pil_to_tensor(_to_rgb(pil))
