"""Handles: the JSON-compatible dicts that cross process boundaries in place
of an array, the same format as Node's (``src/handle.ts``), so a handle made
in either language revives in the other. Two spellings, both accepted::

    {"__arraypool__": 1, "segment": "arraypool-memfd-...", "offset": 4096,
     "generation": 7, "byteOffset": 0, "byteLength": 800,
     "dtype": "float64", "shape": [10, 10]}

    {"__arraypool__": "2:arraypool-memfd-...:4096:7:0:800:float64:10,10"}

The first (format 1) is what Python makes, as Node's ``toHandle()`` does;
the second (format 2, compact) is what a Node TransferableArray is cloned
to (structured clone, JSON).

A received handle is untrusted input: every field is checked here before
anything derived from it reaches the core (which checks it again against
the pool)."""

from typing import NamedTuple, Tuple

from ._dtypes import NUMPY_OF
from ._errors import ArrayPoolError

#: Format version; the marker by which ``revive`` recognises handles.
HANDLE_FORMAT = 1

#: The compact form's version: the first field of its string.
COMPACT_HANDLE_FORMAT = 2

#: The longest compact string read (a real one is under 150 characters).
MAX_COMPACT_LENGTH = 1024

#: The handle's keys, in order (Node's ``HANDLE_FIELDS``).
HANDLE_FIELDS = (
    "__arraypool__",
    "segment",
    "offset",
    "generation",
    "byteOffset",
    "byteLength",
    "dtype",
    "shape",
)

#: JavaScript's Number.MAX_SAFE_INTEGER: handles hold only numbers both
#: languages read exactly.
MAX_SAFE_INTEGER = 2**53 - 1

#: Most dimensions a shape may have (Node's limit).
MAX_DIMS = 32


class Handle(NamedTuple):
    segment: str
    offset: int
    generation: int
    byte_offset: int
    byte_length: int
    dtype: str
    shape: Tuple[int, ...]

    def to_dict(self) -> dict:
        return {
            "__arraypool__": HANDLE_FORMAT,
            "segment": self.segment,
            "offset": self.offset,
            "generation": self.generation,
            "byteOffset": self.byte_offset,
            "byteLength": self.byte_length,
            "dtype": self.dtype,
            "shape": list(self.shape),
        }


def looks_like_handle(value) -> bool:
    """Whether a value claims to be a handle (it may still be malformed)."""
    return type(value) is dict and "__arraypool__" in value


def _is_index(value) -> bool:
    # bool is an int subclass: True is not an offset.
    return type(value) is int and 0 <= value <= MAX_SAFE_INTEGER


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_shape(shape) -> Tuple[Tuple[int, ...], int]:
    """A shape as a tuple and its element count; ERR_INVALID_SHAPE unless it
    is a list or tuple of 1 to 32 non-negative safe integers whose non-zero
    product stays a safe integer (Node's ``checkShape``)."""
    if not isinstance(shape, (list, tuple)):
        raise ArrayPoolError(
            "ERR_INVALID_SHAPE", f"shape must be a list of 1 to {MAX_DIMS} non-negative integers"
        )
    if not 1 <= len(shape) <= MAX_DIMS:
        raise ArrayPoolError(
            "ERR_INVALID_SHAPE",
            f"shape must have 1 to {MAX_DIMS} dimensions, got {len(shape)}",
        )
    dims = []
    size = 1
    zero = False
    for d in shape:
        if hasattr(d, "__index__") and type(d) is not bool and type(d) is not int:
            d = d.__index__()  # numpy integers
        if not _is_index(d):
            raise ArrayPoolError(
                "ERR_INVALID_SHAPE", f"shape entries must be non-negative safe integers, got {_show(d)}"
            )
        dims.append(d)
        if d == 0:
            zero = True
            continue
        size *= d
        if size > MAX_SAFE_INTEGER:
            raise ArrayPoolError(
                "ERR_INVALID_SHAPE", f"shape {_show(shape)} has more than 2**53 - 1 elements"
            )
    return tuple(dims), 0 if zero else size


def _decimal(text: str):
    """A compact field as an int: plain ASCII digits, no sign, no leading
    zero, at most 16 of them (Node's ``decimalAt``); None otherwise."""
    n = len(text)
    if n == 0 or n > 16 or (n > 1 and text[0] == "0"):
        return None
    if not all("0" <= c <= "9" for c in text):
        return None
    return int(text)


def _bad(why: str, cause=None):
    raise ArrayPoolError("ERR_INVALID_HANDLE", f"invalid handle: {why}") from cause


def parse_handle(value) -> Handle:
    """Validates every field of a received handle, in either form;
    ERR_INVALID_HANDLE."""
    if type(value) is not dict:
        _bad(f"expected a dict, got {type(value).__name__}")
    get = value.get
    fmt = get("__arraypool__")
    if type(fmt) is str:
        return _parse_compact(fmt)
    if type(fmt) is not int or fmt != HANDLE_FORMAT:
        _bad(f"unknown format {_show(fmt)}")
    return _check_fields(
        get("segment"),
        get("offset"),
        get("generation"),
        get("byteOffset"),
        get("byteLength"),
        get("dtype"),
        get("shape"),
    )


def _parse_compact(text: str) -> Handle:
    if len(text) > MAX_COMPACT_LENGTH:
        _bad(f"the compact form is longer than {MAX_COMPACT_LENGTH} characters")
    parts = text.split(":")
    if parts[0] != str(COMPACT_HANDLE_FORMAT):
        _bad(f"unknown format {_show(parts[0])}")
    if len(parts) != 8:
        _bad(f"the compact form has 8 fields separated by ':', got {len(parts)}")
    return _check_fields(
        parts[1],
        _decimal(parts[2]),
        _decimal(parts[3]),
        _decimal(parts[4]),
        _decimal(parts[5]),
        parts[6],
        [_decimal(d) for d in parts[7].split(",")],
    )


def _check_fields(segment, offset, generation, byte_offset, byte_length, dtype, shape) -> Handle:
    """The checks both forms share, on the values read from the handle."""
    # Printable ASCII only, as Node checks it (lengths then count the same).
    if type(segment) is not str or len(segment) > 200 or not all(" " <= c <= "~" for c in segment):
        _bad("segment must be a string of at most 200 printable ASCII characters")
    if not _is_index(offset):
        _bad("offset must be a non-negative safe integer")
    if not _is_index(generation):
        _bad("generation must be a non-negative safe integer")
    if not _is_index(byte_offset):
        _bad("byteOffset must be a non-negative safe integer")
    if not _is_index(byte_length):
        _bad("byteLength must be a non-negative safe integer")
    if type(dtype) is not str or dtype not in NUMPY_OF:
        _bad(f"unknown dtype {_show(dtype)}")
    try:
        dims, size = check_shape(shape)
    except ArrayPoolError as error:
        _bad(f"shape: {error}", error)
    itemsize = NUMPY_OF[dtype].itemsize
    if size * itemsize != byte_length:
        _bad("shape does not match byteLength")
    if byte_offset % itemsize != 0:
        _bad("byteOffset is not aligned to the dtype")
    return Handle(segment, offset, generation, byte_offset, byte_length, dtype, dims)
