"""torch.hub entry points: every FastViT variant (the paper's seven, MCi0-4).

    model = torch.hub.load("<this repository or its folder>", "fastvit_t8", pretrained=True)
    model = torch.hub.load(repo_dir, "fastvit_sa12", source="local", pretrained="dist_in1k")

``pretrained``: False (random weights), True / ``"in1k"`` (the official ImageNet
weights), ``"dist_in1k"``, ``"in1k_reparam"``, ``"dist_in1k_reparam"`` (MCi:
``"apple_mclip"``, ``"apple_mclip2_dfndr2b"``), a file,
a URL or ``"hf-hub:ORG/NAME"``; other keyword arguments go to
``fastvit.create_model`` (``num_classes``, ``features_only``...).
"""

import os
import sys

dependencies = ["torch", "torchvision", "safetensors"]

_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src")
if os.path.isdir(_SRC) and _SRC not in sys.path:
    sys.path.insert(0, _SRC)  # a checkout or a torch.hub download: no install needed

from fastvit.factory import BUILDERS as _BUILDERS  # noqa: E402

globals().update(_BUILDERS)  # one entry point per row of the variant table
__all__ = sorted(_BUILDERS)
