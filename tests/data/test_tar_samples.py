"""The lean tar reader groups members into samples exactly as webdataset does, and a cut or
corrupt stream is an error."""

from __future__ import annotations

import io
import tarfile

import pytest

from fastvit.data.tar_samples import tar_samples

wds = pytest.importorskip("webdataset.tariterators")


def _tar(fmt: int) -> bytes:
    """Samples with short, nested and long keys (a ustar name prefix; past 100 characters in
    GNU / pax tars), upper-case suffixes, a directory, a symlink and a ``__meta__`` file."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        def add(name: str, data: bytes, kind: bytes = tarfile.REGTYPE) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.size = kind, len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        add("__index__", b"meta")
        add("cls_a", b"", tarfile.DIRTYPE)
        keys = ["a/x0", "d" * 120 + "/x1", "b/deep/x.2", "x3"]
        if fmt != tarfile.USTAR_FORMAT:
            keys.append("a/" + "long" * 40)
        for i, key in enumerate(keys):
            add(f"{key}.PNG", bytes([i]) * (700 * i + 1))
            add(f"{key}.cls", str(i).encode())
        add("x3.link", b"", tarfile.SYMTYPE)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_samples_equal_webdatasets(fmt):
    data = _tar(fmt)
    expected = list(wds.group_by_keys(
        {**f, "__url__": "u"} for f in wds.tar_file_iterator(io.BytesIO(data))))
    got = list(tar_samples(io.BytesIO(data), "u"))
    assert got == expected and len(got) == (4 if fmt == tarfile.USTAR_FORMAT else 5)
    assert got[1]["__key__"] == "d" * 120 + "/x1" and got[1]["png"] == b"\1" * 701


def test_a_cut_or_corrupt_stream_raises():
    data = _tar(tarfile.PAX_FORMAT)
    with pytest.raises(ValueError, match="unexpected end of data"):
        list(tar_samples(io.BytesIO(data[:2000]), "u"))
    corrupt = bytearray(data)
    corrupt[1024 + 10] ^= 0xFF  # inside a header's name: its checksum no longer matches
    with pytest.raises(ValueError, match="bad checksum"):
        list(tar_samples(io.BytesIO(bytes(corrupt)), "u"))
