"""One plane from a single-image TIFF, as cheaply as the file allows.

MetaXpress writes each plane as a baseline TIFF: one uncompressed image whose strips
follow each other. For such a file, :func:`read_tiff_plane` reads the header's few
tags itself and the pixels with one read straight into the plane's array (about 30 us
of Python against the 0.4 ms tifffile takes to parse a file's every tag); anything
else (compressed, tiled, predictors, several samples, BigTIFF, ...) is read by
tifffile, memory mapped where its data lies uncompressed in one piece.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np
import tifffile

# TIFF 6.0 tags read here, with their defaults where the specification has one.
_WIDTH, _LENGTH, _BITS, _COMPRESSION, _FILL_ORDER, _STRIP_OFFSETS = 256, 257, 258, 259, 266, 273
_SAMPLES, _STRIP_COUNTS, _PLANAR, _PREDICTOR, _TILE_WIDTH, _SAMPLE_FORMAT = 277, 279, 284, 317, 322, 339
_DEFAULTS = {_BITS: (1,), _COMPRESSION: (1,), _FILL_ORDER: (1,), _SAMPLES: (1,), _PLANAR: (1,),
             _PREDICTOR: (1,), _SAMPLE_FORMAT: (1,)}
_TYPES = {3: "H", 4: "I", 16: "Q"}  # SHORT, LONG, LONG8: the types these tags come in
_KINDS = {1: "u", 2: "i", 3: "f"}  # SampleFormat


def _pread(fd: int, size: int, offset: int) -> bytes:
    data = os.pread(fd, size, offset)
    if len(data) != size:
        raise ValueError(f"the file ends before byte {offset + size}")
    return data


def _read_into(fd: int, out: np.ndarray, offset: int) -> None:
    view = memoryview(out).cast("B")
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done:]], offset + done)
        if n == 0:
            raise ValueError(f"the file ends before byte {offset + len(view)}")
        done += n


@dataclass(frozen=True)
class BaselineTiff:
    """Where a baseline TIFF's one plane lies: its pixels are the bytes from ``offset``
    to ``end``, in the file's byte order (``dtype``)."""

    shape: tuple[int, int]
    dtype: np.dtype
    offset: int
    end: int

    @property
    def native_dtype(self) -> str:
        return self.dtype.newbyteorder("=").name


def baseline_tiff(fd: int) -> BaselineTiff | None:
    """The plane of a baseline TIFF whose image data are uncompressed strips one after
    another, from its header alone (no pixel is read); None for any other TIFF (the
    caller then asks tifffile). ValueError when the header ends early."""
    head = _pread(fd, 8, 0)
    order = {b"II": "<", b"MM": ">"}.get(head[:2])
    if order is None or struct.unpack(order + "H", head[2:4])[0] != 42:
        return None  # not a classic TIFF (BigTIFF, or not a TIFF at all)
    (ifd,) = struct.unpack(order + "I", head[4:8])
    (count,) = struct.unpack(order + "H", _pread(fd, 2, ifd))
    entries = _pread(fd, 12 * count, ifd + 2)
    tags: dict[int, tuple] = {}
    for i in range(count):
        tag, kind, n = struct.unpack(order + "HHI", entries[12 * i:12 * i + 8])
        if tag == _TILE_WIDTH:
            return None
        code = _TYPES.get(kind)
        if code is None:
            continue  # a tag not read here (ASCII description, rationals, ...)
        size = struct.calcsize(code) * n
        raw = entries[12 * i + 8:12 * i + 8 + size] if size <= 4 else \
            _pread(fd, size, struct.unpack(order + "I", entries[12 * i + 8:12 * i + 12])[0])
        tags[tag] = struct.unpack(f"{order}{n}{code}", raw)
    get = {**_DEFAULTS, **tags}.get
    width, length, bits, kind = get(_WIDTH), get(_LENGTH), get(_BITS), _KINDS.get(get(_SAMPLE_FORMAT)[0])
    if width is None or length is None or get(_SAMPLES) != (1,) or get(_COMPRESSION) != (1,) or \
            get(_PREDICTOR) != (1,) or get(_FILL_ORDER) != (1,) or len(bits) != 1 or bits[0] not in (8, 16, 32, 64) \
            or kind is None or (kind == "f" and bits[0] == 8):
        return None
    dtype = np.dtype(f"{order}{kind}{bits[0] // 8}")
    shape = (length[0], width[0])
    offsets, counts = get(_STRIP_OFFSETS), get(_STRIP_COUNTS)
    if not offsets or counts is None or len(offsets) != len(counts):
        return None
    if any(o + c != nxt for o, c, nxt in zip(offsets, counts, offsets[1:])) or \
            sum(counts) != shape[0] * shape[1] * dtype.itemsize:
        return None  # strips apart, or not exactly the plane
    return BaselineTiff(shape, dtype, offsets[0], offsets[0] + sum(counts))


def baseline_plane(fd: int, shape: tuple[int, int], dtype: str) -> np.ndarray | None:
    """The plane of a baseline TIFF of ``shape`` and ``dtype`` (see :func:`baseline_tiff`),
    read with one read into a new native array; None for any other TIFF."""
    info = baseline_tiff(fd)
    if info is None or info.shape != tuple(shape) or info.native_dtype != np.dtype(dtype).name:
        return None
    plane = np.empty(info.shape, info.dtype)
    _read_into(fd, plane, info.offset)
    return plane if plane.dtype.isnative else plane.byteswap().view(plane.dtype.newbyteorder("="))


def read_tiff_plane(handle, shape: tuple[int, int], dtype: str) -> np.ndarray:
    """The first image of the TIFF open in ``handle`` (a binary file with a
    ``fileno``) as a native-endian array of ``shape`` and ``dtype``; ValueError when
    it is not such a plane."""
    plane = baseline_plane(handle.fileno(), shape, dtype)
    if plane is not None:
        return plane
    with tifffile.TiffFile(handle) as tif:
        page = tif.pages[0]
        if tuple(page.shape) != tuple(shape) or page.dtype is None or page.dtype != np.dtype(dtype):
            raise ValueError(f"its first page is {page.dtype} {tuple(page.shape)}, not {dtype} {tuple(shape)}")
        if page.is_memmappable:
            mapped = np.memmap(handle, dtype=page.dtype.newbyteorder(tif.byteorder), mode="r",
                               offset=page.dataoffsets[0], shape=tuple(shape))
            try:
                return np.array(mapped, dtype=page.dtype.newbyteorder("="))
            finally:
                mapped._mmap.close()  # type: ignore[attr-defined]
        return page.asarray()


__all__ = ["BaselineTiff", "baseline_plane", "baseline_tiff", "read_tiff_plane"]
