"""Fetching weight files into the ecosystem's caches, safely.

* URLs go to ``$FASTVIT_CACHE/official`` when that is set, else to torch.hub's
  checkpoint folder (``$TORCH_HOME/hub/checkpoints/fastvit``). A transfer is
  written to a temporary file and renamed into place only once complete
  (byte count checked against Content-Length, sha256 checked when known), so an
  interrupted or truncated download never leaves a file that is later taken as
  valid. The sha256 is recorded next to the file (``NAME.sha256``, the
  ``sha256sum`` format) for ``fastvit weights verify``.
* Hub files go through ``huggingface_hub`` into its cache (``$HF_HUB_CACHE``,
  ``$HF_HOME/hub``), or ``$FASTVIT_CACHE/hub`` when that is set, so weights
  fetched by timm are found here and the other way round.
* ``HF_HUB_OFFLINE=1`` means no network at all: cached files only, and an error
  naming what is missing and where it was looked for.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from fastvit.errors import FastVitError
from fastvit.files import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

CACHE_ENV = "FASTVIT_CACHE"
OFFLINE_ENVS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
HUB_EXTRA = "pip install 'fastvit[hub]' (or pip install huggingface_hub)"
CHUNK = 1 << 20


class WeightsError(FastVitError, ValueError):
    """Weights cannot be found, fetched or trusted."""


class WeightsNotCached(WeightsError):
    """Offline, and the weights are not in the cache."""


def is_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set to a true value, read now."""
    return any(os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")
               for name in OFFLINE_ENVS)


def url_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where downloaded URLs are kept: ``cache_dir/official``, ``$FASTVIT_CACHE/official``,
    else ``torch.hub.get_dir()/checkpoints/fastvit`` (follows ``$TORCH_HOME``)."""
    root = cache_dir or os.environ.get(CACHE_ENV)
    if root:
        return Path(root).expanduser() / "official"
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / "fastvit"


def hub_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The Hugging Face cache used: ``cache_dir/hub``, ``$FASTVIT_CACHE/hub``, else
    ``$HF_HUB_CACHE``, ``$HF_HOME/hub`` or ``~/.cache/huggingface/hub`` (read now)."""
    root = cache_dir or os.environ.get(CACHE_ENV)
    if root:
        return Path(root).expanduser() / "hub"
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def hash_record(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def recorded_sha256(path: Path) -> str | None:
    """The sha256 written next to ``path`` on its download, if any."""
    record = hash_record(path)
    if not record.is_file():
        return None
    text = record.read_text().split()
    return text[0].lower() if text else None


def _progress(total: int | None, name: str, enabled: bool | None) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                disable=(not enabled) if enabled is not None else None, leave=False)


def download_url(url: str, dest: str | os.PathLike, *, sha256: str | None = None,
                 progress: bool | None = None, timeout: float = 60.0) -> Path:
    """``dest`` holding ``url``'s content: the cached file, else a verified download.

    ``progress`` shows a tqdm bar (None: only on a terminal). Raises
    :class:`WeightsNotCached` when offline and the file is not cached,
    :class:`WeightsError` on a network error, a truncated transfer or a hash
    mismatch; in every failure nothing is left at ``dest``.
    """
    dest = Path(dest)
    if dest.is_file():
        return dest
    if is_offline():
        raise WeightsNotCached(f"offline (HF_HUB_OFFLINE=1) and {dest} is not cached; "
                               f"fetch {url} on a machine with network access (fastvit "
                               f"weights download) and copy the cache")
    from filelock import FileLock  # a dependency of torch: one download per file at a time

    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest.with_name(dest.name + ".lock"))):
        if dest.is_file():  # another process finished it while we waited
            return dest
        log.info("downloading %s to %s", url, dest)
        with atomic_path(dest) as tmp:
            digest = _fetch(url, tmp, progress=progress, timeout=timeout)
            if sha256 is not None and digest != sha256.lower():
                raise WeightsError(f"sha256 mismatch for {url}: expected {sha256}, got "
                                   f"{digest}; the download was discarded")
        atomic_write_text(hash_record(dest), f"{digest}  {dest.name}\n")
    return dest


def _fetch(url: str, target: Path, *, progress: bool | None, timeout: float) -> str:
    """Stream ``url`` into ``target``; the sha256 of what was written."""
    request = urllib.request.Request(url, headers={"User-Agent": "fastvit"})
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            received = 0
            with open(target, "wb") as out, _progress(total, Path(url).name, progress) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as err:
        raise WeightsError(f"cannot download {url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", None) or err
        raise WeightsError(f"cannot download {url}: {reason}") from None
    if total is not None and received != total:
        raise WeightsError(f"download of {url} was cut short ({received} of {total} bytes); "
                           f"nothing was kept, try again")
    if received == 0:
        raise WeightsError(f"download of {url} was empty; nothing was kept")
    return digest.hexdigest()


def _hub():
    try:
        import huggingface_hub
    except ImportError:
        raise WeightsError(f"loading from the Hugging Face Hub needs huggingface_hub: "
                           f"{HUB_EXTRA}") from None
    return huggingface_hub


def hub_available() -> bool:
    try:
        _hub()
    except WeightsError:
        return False
    return True


def cached_hub_file(repo_id: str, filename: str, *, revision: str | None = None,
                    cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The cached copy of a Hub file (no network), or None."""
    found = _hub().try_to_load_from_cache(repo_id, filename, cache_dir=hub_cache_dir(cache_dir),
                                          revision=revision)
    return Path(found) if isinstance(found, str) else None


def hub_download(repo_id: str, filename: str, *, revision: str | None = None,
                 cache_dir: str | os.PathLike | None = None, missing_ok: bool = False
                 ) -> Path | None:
    """A file of a Hub repository through huggingface_hub's cache.

    Offline (``HF_HUB_OFFLINE=1``) only the cache is read; ``HF_ENDPOINT`` (a mirror)
    is read at call time too. ``missing_ok``: None
    when the repository has no such file (instead of an error).
    """
    hub = _hub()
    from huggingface_hub import errors

    where = f"hf-hub:{repo_id}{'@' + revision if revision else ''}"
    cache = hub_cache_dir(cache_dir)
    offline = is_offline()
    try:
        return Path(hub.hf_hub_download(repo_id, filename, revision=revision,
                                        cache_dir=cache, local_files_only=offline,
                                        endpoint=os.environ.get("HF_ENDPOINT") or None))
    except errors.LocalEntryNotFoundError:
        if offline:
            repo_cached = _snapshot_exists(cache, repo_id)
            if missing_ok and repo_cached:
                return None
            what = f"{filename} of {where} is" if repo_cached else f"{where} is"
            raise WeightsNotCached(f"offline (HF_HUB_OFFLINE=1) and {what} not in the Hugging "
                                   f"Face cache {cache}; fetch it on a machine with network "
                                   f"access (fastvit weights download {where}) and copy the "
                                   f"cache") from None
        raise WeightsError(f"cannot reach the Hugging Face Hub for {filename} of {where} and "
                           f"it is not cached in {cache}") from None
    except errors.EntryNotFoundError:
        if missing_ok:
            return None
        raise WeightsError(f"{where} has no file {filename}") from None
    except errors.RevisionNotFoundError:
        raise WeightsError(f"{where}: no such revision") from None
    except errors.RepositoryNotFoundError:
        raise WeightsError(f"{where}: no such repository, or it is private (log in with "
                           f"`hf auth login` or set HF_TOKEN)") from None
    except (errors.HfHubHTTPError, OSError) as err:
        raise WeightsError(f"cannot download {filename} of {where}: "
                           f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
                           ) from None


def _snapshot_exists(cache: Path, repo_id: str) -> bool:
    """Offline: is the repository itself cached (so a missing file is really absent)?"""
    folder = cache / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    return folder.is_dir() and any(folder.iterdir())
