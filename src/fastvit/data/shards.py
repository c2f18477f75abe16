"""WebDataset shards: ``train-*.tar`` / ``val-*.tar`` of ``KEY.jpg`` + ``KEY.cls`` samples.

Millions of small files are the usual bottleneck of a shared filesystem; a shard
is one file read front to back. The tars are read (local paths, or any ``fsspec``
URL when fsspec is installed) with a lean header parser that groups members into
samples as ``webdataset`` does (:mod:`fastvit.data.tar_samples`);
:mod:`fastvit.data.shard_writer` (``fastvit shards``) writes them with
``shards.json`` beside them: the class names and the sample count of every shard.

The order of an epoch is planned in advance so that it can be split and resumed
exactly (:func:`stream_plan`): the shards are shuffled with ``(seed, epoch)``,
their samples concatenated, cut into one equal run per rank (the remainder of
``N / world`` waits for the next epoch), and each rank's run cut into ``streams``
contiguous pieces of whole batches, one per DataLoader worker; batch ``b`` of a
rank comes from stream ``b % streams``. A stream opens only the shards its piece
touches (split by shard, and by sample only where a cut falls inside a shard),
shuffles its samples through a seeded buffer, and on resume skips, without
decoding, the samples its batches already delivered. So within an epoch no sample
is seen twice and none of the planned ones is skipped, whatever the stop point.
"""

from __future__ import annotations

import functools
import os
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from torch.utils.data import IterableDataset, get_worker_info

from fastvit.data.datasets import BAD_IMAGE_MODES, BadSample, read_sample
from fastvit.data.decode import IMAGE_SUFFIXES, decode_bytes
from fastvit.data.shard_index import (
    SHARDS_JSON,
    find_shard_urls,
    is_remote,
    open_url,
    read_class_names,
    read_index,
)
from fastvit.data.tar_samples import tar_samples
from fastvit.errors import DataError

DEFAULT_SHUFFLE_BUFFER = 1000


@dataclass(frozen=True)
class Segment:
    """Samples ``start`` (inclusive) to ``stop`` of shard ``shard`` (an index of the split)."""

    shard: int
    start: int
    stop: int


@dataclass
class ShardSplit:
    """The shards of one split with their sample counts (``urls[i]`` has ``counts[i]``)."""

    urls: list[str]
    counts: list[int]

    @property
    def total(self) -> int:
        return sum(self.counts)

    def offsets(self) -> list[int]:
        """Global ordinal of each shard's first sample (the shards in their listed order)."""
        out, acc = [], 0
        for count in self.counts:
            out.append(acc)
            acc += count
        return out


def iterate_shard(url: str) -> Iterator[dict[str, Any]]:
    """Samples ``{"__key__", "__url__", "jpg"|"png"|..., "cls", ...}`` of one shard, in file
    order (:func:`fastvit.data.tar_samples.tar_samples`).

    A tar that ends early or is not a tar raises one :class:`DataError` naming it.
    """
    try:
        stream = open_url(url)
    except OSError as err:
        raise DataError(f"cannot open shard {url}: {err}") from None
    with stream:
        try:
            yield from tar_samples(stream, url)
        except (EOFError, OSError, ValueError) as err:
            raise DataError(f"truncated or corrupt shard {url} ({err}); rewrite it "
                            f"(fastvit shards) or remove it") from None
        if not is_remote(url) and not _has_end_marker(stream):
            # a stream cut at a member boundary reads as a shorter tar: the end blocks tell
            raise DataError(f"truncated or corrupt shard {url} (no end-of-archive marker: "
                            f"the file was cut); rewrite it (fastvit shards) or remove it")


def _has_end_marker(fh: Any) -> bool:
    """A complete tar ends with two zero blocks (1024 zero bytes); checked on the open
    file, without opening it again."""
    fh.seek(0, os.SEEK_END)
    if fh.tell() < 1024:
        return False
    fh.seek(-1024, os.SEEK_END)
    return not fh.read(1024).strip(b"\0")


def count_samples(url: str) -> tuple[int, int]:
    """``(samples, highest class index + 1)`` of a shard, by reading it (no decoding)."""
    count, classes = 0, 0
    for sample in iterate_shard(url):
        count += 1
        if "cls" in sample:
            classes = max(classes, int(sample["cls"]) + 1)
    return count, classes


def load_split(value: str, split: str, index: dict[str, Any]) -> tuple[ShardSplit, int]:
    """The shards of ``split`` with their counts: from ``shards.json`` when it lists every
    shard, else by reading them once. Also the class count seen (0 when not read)."""
    urls = find_shard_urls(value, split)
    known = index.get("counts", {})
    names = [u.rsplit("/", 1)[-1] for u in urls]
    if all(n in known for n in names):
        return ShardSplit(urls, [int(known[n]) for n in names]), 0
    counted = [count_samples(u) for u in urls]
    return ShardSplit(urls, [c for c, _ in counted]), max(k for _, k in counted)


def stream_plan(split: ShardSplit, *, rank: int, world_size: int, streams: int,
                batch_size: int | None, seed: int, epoch: int, shuffle: bool,
                batch_multiple: int = 1) -> tuple[list[list[Segment]], list[int]]:
    """The pieces of this rank's epoch: per stream, its segments and its batch count.

    Training (``batch_size`` set): each rank gets ``N // world_size`` samples of the
    ``(seed, epoch)``-shuffled shard order, of which whole batches (a multiple of
    ``batch_multiple``) are used; stream ``s`` holds batches ``s, s + streams, ...``.
    Evaluation (``batch_size`` None): everything, in order, cut into near-equal runs
    (``counts`` is then the sample count of each stream).
    """
    order = list(range(len(split.urls)))
    if shuffle:
        random.Random(f"shards:{seed}:{epoch}").shuffle(order)
    total = split.total
    if batch_size is None:
        edges = [total * i // (world_size * streams) for i in range(world_size * streams + 1)]
        mine = range(rank * streams, (rank + 1) * streams)
        pieces = [(edges[i], edges[i + 1]) for i in mine]
        sizes = [b - a for a, b in pieces]
    else:
        per_rank = total // world_size
        usable = per_rank // batch_size
        usable -= usable % batch_multiple
        sizes = [len(range(s, usable, streams)) for s in range(streams)]
        start = rank * per_rank
        pieces = []
        for n in sizes:
            pieces.append((start, start + n * batch_size))
            start += n * batch_size
    # global positions -> (shard, member) segments over the shuffled shard order
    bounds, acc = [], 0
    for shard in order:
        bounds.append((acc, acc + split.counts[shard], shard))
        acc += split.counts[shard]
    plans = []
    for a, b in pieces:
        segs = [Segment(shard, max(a, lo) - lo, min(b, hi) - lo)
                for lo, hi, shard in bounds if lo < b and hi > a]
        plans.append(segs)
    return plans, sizes


@dataclass
class ShardDataset(IterableDataset):
    """One split of shards as ``(transform(uint8 RGB), label)`` samples (unreadable images:
    :class:`BadSample`). Call :meth:`set_epoch` (training) before iterating; without
    it a pass is one in-order evaluation pass split across ranks and workers."""

    split: ShardSplit
    classes: list[str]
    transform: Callable | None = None
    bad_images: str = "skip"
    rank: int = 0
    world_size: int = 1
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER
    # training state (set_epoch)
    batch_size: int | None = None
    seed: int = 0
    epoch: int = 0
    start_batch: int = 0
    streams: int = 1
    batch_multiple: int = 1
    #: (epoch, ordinal) -> a context the sample is decoded under (per-sample RNG seeds)
    sample_context: Callable[[int, int], AbstractContextManager] | None = None

    def __post_init__(self) -> None:
        if self.bad_images not in BAD_IMAGE_MODES:
            raise DataError(f"bad_images must be one of {BAD_IMAGE_MODES}, "
                            f"got {self.bad_images!r}")
        super().__init__()

    def __len__(self) -> int:
        """The samples of the split (an epoch uses whole batches of an equal share per rank)."""
        return self.split.total

    def usable_batches(self) -> int:
        _, sizes = self._plan(self.streams)
        return sum(sizes)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def _plan(self, streams: int) -> tuple[list[list[Segment]], list[int]]:
        return stream_plan(self.split, rank=self.rank, world_size=self.world_size,
                           streams=streams, batch_size=self.batch_size, seed=self.seed,
                           epoch=self.epoch, shuffle=self.batch_size is not None,
                           batch_multiple=self.batch_multiple)

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if self.batch_size is None:  # evaluation: one stream per worker
            plans, _ = stream_plan(self.split, rank=self.rank, world_size=self.world_size,
                                   streams=workers, batch_size=None, seed=0, epoch=0,
                                   shuffle=False)
            yield from self._decoded(self._records(plans[worker]))
            return
        if workers != self.streams:
            raise DataError(f"a shard loader needs one DataLoader worker per stream "
                            f"({self.streams}), got {workers}")
        # the loader takes batches from its workers in turn: batch start_batch comes first
        yield from self.iter_stream((worker + self.start_batch) % self.streams)

    def iter_stream(self, stream: int) -> Iterator[Any]:
        """The samples stream ``stream`` delivers in this epoch after ``start_batch``:
        its shuffled piece, less those its batches before ``start_batch`` held."""
        plans, _ = self._plan(self.streams)
        done = len(range(stream, self.start_batch, self.streams)) * self.batch_size
        rng = random.Random(f"buffer:{self.seed}:{self.epoch}:{self.rank}:{stream}")
        records = shuffled(self._records(plans[stream]), self.shuffle_buffer, rng)
        for position, record in enumerate(records):
            if position >= done:  # the ones before were delivered before the stop
                yield self._decode_one(record)

    def items_at(self, positions: set[int]) -> Iterator[Any]:
        """The samples at ``positions`` of the split's in-order pass (others not decoded)."""
        for position, record in enumerate(self._in_order()):
            if position in positions:
                yield self._decode_one(record)

    def named_items(self) -> Iterator[tuple[str, Any]]:
        """``(SHARD.tar:KEY.EXT, sample)`` of the split's in-order pass (``fastvit predict``)."""
        for record in self._in_order():
            yield sample_name(record[1]), self._decode_one(record)

    def _in_order(self) -> Iterator[tuple[int, dict[str, Any]]]:
        plans, _ = stream_plan(self.split, rank=0, world_size=1, streams=1, batch_size=None,
                               seed=0, epoch=0, shuffle=False)
        return self._records(plans[0])

    def _records(self, segments: Sequence[Segment]) -> Iterator[tuple[int, dict[str, Any]]]:
        offsets = self.split.offsets()
        for seg in segments:
            url = self.split.urls[seg.shard]
            seen = 0
            for member, sample in enumerate(iterate_shard(url)):
                if member >= seg.stop:
                    break
                if member >= seg.start:
                    seen += 1
                    yield offsets[seg.shard] + member, sample
            if seen < seg.stop - seg.start:
                raise DataError(f"truncated or corrupt shard {url}: it ends after "
                                f"{seg.start + seen} samples, {SHARDS_JSON} lists "
                                f"{self.split.counts[seg.shard]}; rewrite it (fastvit shards)")

    def _decoded(self, records: Iterator[tuple[int, dict[str, Any]]]) -> Iterator[Any]:
        for record in records:
            yield self._decode_one(record)

    def _decode_one(self, record: tuple[int, dict[str, Any]]) -> Any:
        ordinal, sample = record
        context = (self.sample_context(self.epoch, ordinal) if self.sample_context is not None
                   else nullcontext())
        with context:
            return decode_sample(sample, self.transform, self.bad_images, len(self.classes))


def shuffled(items: Iterator[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """A seeded shuffle buffer of ``size`` items (every item comes out exactly once)."""
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        i = rng.randrange(len(buffer))
        buffer[i], item = item, buffer[i]
        yield item
    rng.shuffle(buffer)
    yield from buffer


def image_suffix(sample: dict[str, Any]) -> str | None:
    """The member of a shard sample that holds its image (None: no image member)."""
    return next((s for s in IMAGE_SUFFIXES if s in sample), None)


def sample_name(sample: dict[str, Any]) -> str:
    """``SHARD:KEY.EXT``, how an unreadable sample is listed in ``skipped_images.txt``."""
    suffix = image_suffix(sample)
    return f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}" + (
        f".{suffix}" if suffix else "")


def decode_sample(sample: dict[str, Any], transform: Callable | None, bad_images: str,
                  num_classes: int) -> tuple[Any, int] | BadSample:
    """``(transform(image), label)`` of a shard sample, or a :class:`BadSample` (its name
    is built only then)."""
    suffix = image_suffix(sample)
    try:
        label = int(sample["cls"])
    except KeyError:
        raise DataError(f"shard sample {sample_name(sample)} has no .cls label") from None
    except ValueError:
        raise DataError(f"shard sample {sample_name(sample)}: .cls is not an integer") from None
    if not 0 <= label < num_classes:
        raise DataError(f"shard sample {sample_name(sample)}: label {label} outside "
                        f"0..{num_classes - 1}")

    def read() -> Any:
        if suffix is None:
            raise ValueError(f"no image member (one of {', '.join(IMAGE_SUFFIXES)})")
        return decode_bytes(sample[suffix])

    return read_sample(functools.partial(sample_name, sample), read, label, transform,
                       bad_images, "samples")


def open_shards(value: str, split: str, *, transform: Callable | None, bad_images: str,
                classes: list[str] | None = None) -> ShardDataset:
    """The ``split`` shards of ``value`` (folder, brace pattern or URL) as a dataset."""
    index = read_index(value)
    shard_split, seen = load_split(value, split, index)
    names = classes or read_class_names(value, index)
    if names is None:
        if not seen:
            raise DataError(f"no class names for {value}: write {SHARDS_JSON} or classes.txt "
                            f"beside the shards (fastvit shards does)")
        names = [str(i) for i in range(seen)]
    if shard_split.total == 0:
        raise DataError(f"the {split} shards of {value} hold no samples")
    return ShardDataset(shard_split, list(names), transform, bad_images)
