"""Published weights: the registry of official weights, safe downloads into the
ecosystem's caches, and resolution of ``pretrained=`` into a local file.

Imports nothing above :mod:`fastvit.models` (and :mod:`fastvit.files`), so the
factory and the pipeline can both use it.
"""

from fastvit.weights.download import (
    CACHE_ENV,
    WeightsError,
    WeightsNotCached,
    download_url,
    hub_cache_dir,
    hub_download,
    is_offline,
    sha256_of,
    url_cache_dir,
)
from fastvit.weights.registry import (
    DEFAULT_TAG,
    OFFICIAL_URL_BASE,
    TAGS,
    URL_BASE_ENV,
    OfficialWeights,
    list_weights,
    normalize_tag,
    official_weights,
)
from fastvit.weights.resolve import (
    HUB_PREFIX,
    ResolvedWeights,
    cached_official,
    fetch_official,
    is_remote,
    resolve_weights,
)

__all__ = [
    "CACHE_ENV", "DEFAULT_TAG", "HUB_PREFIX", "OFFICIAL_URL_BASE", "TAGS", "URL_BASE_ENV",
    "OfficialWeights", "ResolvedWeights", "WeightsError", "WeightsNotCached",
    "cached_official", "download_url", "fetch_official", "hub_cache_dir", "hub_download",
    "is_offline", "is_remote", "list_weights", "normalize_tag", "official_weights",
    "resolve_weights", "sha256_of", "url_cache_dir",
]
