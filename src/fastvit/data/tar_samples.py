"""WebDataset samples of a tar stream, read with a lean header parser.

A shard sample is a few small members (``KEY.png`` + ``KEY.cls``); ``tarfile``
builds a ``TarInfo`` per member and checks every header field, which costs as much
as decoding a small image. This reads each 512-byte header for the three fields a
sample needs (name, size, type), checks its checksum, and groups the members as
``webdataset``'s ``tar_file_iterator`` + ``group_by_keys`` do: regular files only,
``__meta__`` files skipped, ``KEY`` = the name up to the first dot of its last path
part, the rest (lowercased) the member's suffix; POSIX (pax) and GNU long names are
followed. A cut or corrupt stream raises ``ValueError``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import IO, Any

BLOCK = 512
_REGULAR = (b"0", b"\0", b"7")
_KEY = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
_META = re.compile(r"__[^/]*__($|/)")


def _number(field: bytes) -> int:
    """A header's numeric field: octal text, or base-256 (GNU) when its top bit is set."""
    if field[0] & 0x80:
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _read(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise ValueError("unexpected end of data")
    return data


def tar_members(stream: IO[bytes]) -> Iterator[tuple[str, bytes]]:
    """``(name, data)`` of every regular file of a tar stream, in order."""
    long_name: str | None = None
    while True:
        header = stream.read(BLOCK)
        if not header.strip(b"\0"):  # end-of-archive (or end of file, checked by the caller)
            return
        if len(header) != BLOCK:
            raise ValueError("unexpected end of data")
        stored = _number(header[148:156])
        if stored != sum(header[:148]) + 256 + sum(header[156:]):
            raise ValueError("invalid header (bad checksum)")
        size, kind = _number(header[124:136]), header[156:157]
        data = _read(stream, size)
        _read(stream, -size % BLOCK)
        if kind == b"x":  # pax extended header of the next member: its path
            for record in data.decode("utf-8", "replace").split("\n"):
                key, _, value = record.partition(" ")[2].partition("=")
                if key == "path":
                    long_name = value
            continue
        if kind == b"L":  # GNU long name of the next member
            long_name = data.rstrip(b"\0").decode("utf-8", "replace")
            continue
        if kind == b"g":  # pax global header
            continue
        name = long_name
        long_name = None
        if kind not in _REGULAR:
            continue
        if name is None:
            name = header[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
            if header[257:265] == b"ustar\x0000" and header[345] != 0:  # POSIX prefix
                name = header[345:500].split(b"\0", 1)[0].decode("utf-8", "replace") + "/" \
                    + name
        yield name, data


def tar_samples(stream: IO[bytes], url: str) -> Iterator[dict[str, Any]]:
    """``{"__key__", "__url__", SUFFIX: bytes, ...}`` per sample (consecutive members with
    the same key), as webdataset groups them."""
    sample: dict[str, Any] | None = None
    for name, data in tar_members(stream):
        if "/" not in name and name.startswith("__") and name.endswith("__") \
                or _META.match(name):
            continue
        match = _KEY.match(name)
        if match is None:
            continue
        key, suffix = match.group(1), match.group(2).lower()
        if sample is None or key != sample["__key__"]:
            if sample is not None:
                yield sample
            sample = {"__key__": key, "__url__": url}
        if suffix in sample:
            raise ValueError(f"{name}: duplicate file name in tar file {suffix}")
        sample[suffix] = data
    if sample is not None:
        yield sample
