"""Images held as bytes (shard members, Arrow cells) -> ``uint8`` RGB tensors.

The same decoders as the folders' :func:`fastvit.data.datasets.load_rgb`:
``torchvision.io`` (libjpeg-turbo / libpng) first, PIL for the formats it does
not read; every image becomes 3-channel RGB.
"""

from __future__ import annotations

import io

import torch
from PIL import Image, UnidentifiedImageError

from fastvit.data.datasets import decode_native, pil_rgb

#: member suffixes of a shard sample that hold the image, in order of preference
IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "ppm", "jfif")


def decode_bytes(data: bytes) -> torch.Tensor:
    """Decode encoded image bytes to a ``(3, H, W)`` uint8 tensor.

    Raises ``OSError``/``RuntimeError``/``ValueError`` for data no decoder reads.
    """
    if not data:
        raise ValueError("empty image data")
    image = decode_native(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    if image is not None:
        return image
    try:
        pil = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ValueError("not an image any decoder reads") from None
    with pil:
        return pil_rgb(pil)
