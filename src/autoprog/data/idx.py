"""Reader and writer of the IDX format (the files of MNIST and Fashion-MNIST).

An IDX file is a header followed by the raw array, row-major and big-endian::

    0x00 0x00 <dtype code> <ndim>  <dim_0> ... <dim_{ndim-1}>  <data>
    2 zero bytes, 1 byte, 1 byte,  ndim big-endian int32,       prod(dims) items

with dtype codes 0x08 unsigned byte, 0x09 signed byte, 0x0B short (int16), 0x0C int (int32),
0x0D float (float32) and 0x0E double (float64). Files are often gzip-compressed; :func:`read_idx`
recognises gzip by its content (whatever the file name) and :func:`write_idx` compresses when the
name ends in ``.gz``.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = ["IDX_DTYPES", "read_idx", "write_idx"]

#: IDX dtype code -> big-endian numpy dtype of the stored items.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """All bytes of ``path``, gunzipped when the file is gzip-compressed (detected by its magic)."""
    with path.open("rb") as f:
        raw = f.read()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"malformed IDX file {path}: corrupt or truncated gzip stream ({e})") from e


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (plain or gzip-compressed) into a numpy array.

    Args:
        path: the file; gzip compression is detected from the content, not the name.

    Returns:
        A writable, native-endian array with the file's shape and dtype (``uint8``, ``int8``,
        ``int16``, ``int32``, ``float32`` or ``float64``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a well-formed IDX file (bad magic, unknown dtype code,
            truncated header or data, trailing bytes, corrupt gzip stream).
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"malformed IDX file {path}: {len(data)} bytes, shorter than the 4-byte magic")
    if data[0] != 0 or data[1] != 0:
        raise ValueError(f"malformed IDX file {path}: magic starts with {data[:2].hex()}, expected 0000")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise ValueError(f"malformed IDX file {path}: unknown dtype code 0x{code:02X} (known: {known})")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise ValueError(
            f"malformed IDX file {path}: truncated header ({len(data)} bytes, {ndim} dims need {header_len})"
        )
    shape = struct.unpack(f">{ndim}i", data[4:header_len])
    if any(d < 0 for d in shape):
        raise ValueError(f"malformed IDX file {path}: negative dimension in shape {shape}")
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(data) - header_len
    if found != expected:
        what = "truncated" if found < expected else "trailing bytes after the"
        raise ValueError(
            f"malformed IDX file {path}: {what} data (shape {shape} of {dtype.name} needs {expected} bytes, "
            f"found {found})"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``array`` as an IDX file, gzip-compressed when ``path`` ends in ``.gz``.

    Args:
        path: the destination file (overwritten).
        array: an array of dtype ``uint8``, ``int8``, ``int16``, ``int32``, ``float32`` or
            ``float64``, with at most 255 dimensions each below 2**31.

    Raises:
        ValueError: the dtype has no IDX code or the shape cannot be represented.
    """
    path = Path(path)
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        names = ", ".join(dt.newbyteorder("=").name for dt in IDX_DTYPES.values())
        raise ValueError(f"IDX cannot store dtype {array.dtype} (supported: {names})")
    if array.ndim > 255:
        raise ValueError(f"IDX cannot store {array.ndim} dimensions (at most 255)")
    if any(d >= 2**31 for d in array.shape):
        raise ValueError(f"IDX cannot store dimension sizes of 2**31 or more (shape {array.shape})")
    code = codes[native]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    payload = np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    if path.name.endswith(".gz"):
        with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
            f.write(header + payload)
    else:
        path.write_bytes(header + payload)
