"""Zero-shot classification, image embeddings and photo search with the MobileCLIP towers.

A CLIP model here is open_clip's text tower and tokenizer (the optional extra
``fastvit[clip]``, ``open_clip_torch``) around our image tower ``fastvit_mciN``, both
read from one open_clip whole-model file (:mod:`fastvit.clip.model`). One concept per
module:

* :mod:`~fastvit.clip.models` -- the open_clip model names and their towers;
* :mod:`~fastvit.clip.weights` -- ``checkpoint`` / ``pretrained`` to a local file;
* :mod:`~fastvit.clip.model` -- :class:`ClipModel` and :func:`load_clip`;
* :mod:`~fastvit.clip.zeroshot` -- labels and a template to a classifier, per image or
  over an ImageFolder;
* :mod:`~fastvit.clip.index` -- image embeddings written to / read from disk;
* :mod:`~fastvit.clip.search` -- ranking indexed images by a text or an image.

>>> clip = load_clip("MobileCLIP2-S0", pretrained="dfndr2b")
>>> classifier = ZeroShotClassifier(clip, ["cat", "dog"])
>>> classify(["pet.jpg"], classifier)[0]["predictions"][0]["label"]
"""

from fastvit.clip.index import EmbeddingIndex, embed_images, read_index, write_index
from fastvit.clip.model import ClipModel, load_clip
from fastvit.clip.models import CLIP_MODELS, clip_spec, list_clip_models
from fastvit.clip.search import image_query, search, text_query
from fastvit.clip.weights import ClipWeights, resolve_clip_weights
from fastvit.clip.zeroshot import (
    DEFAULT_TEMPLATE,
    ZeroShotClassifier,
    check_template,
    classify,
    evaluate_folder,
    parse_labels,
    prompts,
)

__all__ = [
    "CLIP_MODELS", "DEFAULT_TEMPLATE", "ClipModel", "ClipWeights", "EmbeddingIndex",
    "ZeroShotClassifier", "check_template", "classify", "clip_spec", "embed_images",
    "evaluate_folder", "image_query", "list_clip_models", "load_clip", "parse_labels",
    "prompts", "read_index", "resolve_clip_weights", "search", "text_query", "write_index",
]
