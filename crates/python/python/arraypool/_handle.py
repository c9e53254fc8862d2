"""Handles: the JSON-compatible dicts that cross process boundaries in place
of an array, the same format as Node's (``src/handle.ts``), so a handle made
in either language revives in the other::

    {"__arraypool__": 1, "segment": "arraypool-memfd-...", "offset": 4096,
     "generation": 7, "byteOffset": 0, "byteLength": 800,
     "dtype": "float64", "shape": [10, 10]}

A received handle is untrusted input: every field is checked here before
anything derived from it reaches the core (which checks it again against
the pool)."""

from typing import NamedTuple, Tuple

from ._dtypes import NUMPY_OF
from ._errors import ArrayPoolError

#: Format version; the marker by which ``revive`` recognises handles.
HANDLE_FORMAT = 1

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


def parse_handle(value) -> Handle:
    """Validates every field of a received handle; ERR_INVALID_HANDLE."""

    def bad(why: str, cause=None):
        raise ArrayPoolError("ERR_INVALID_HANDLE", f"invalid handle: {why}") from cause

    if type(value) is not dict:
        bad(f"expected a dict, got {type(value).__name__}")
    get = value.get
    fmt = get("__arraypool__")
    segment = get("segment")
    offset = get("offset")
    generation = get("generation")
    byte_offset = get("byteOffset")
    byte_length = get("byteLength")
    dtype = get("dtype")
    shape = get("shape")
    if type(fmt) is not int or fmt != HANDLE_FORMAT:
        bad(f"unknown format {_show(fmt)}")
    if type(segment) is not str or len(segment) > 200:
        bad("segment must be a string")
    if not _is_index(offset):
        bad("offset must be a non-negative safe integer")
    if not _is_index(generation):
        bad("generation must be a non-negative safe integer")
    if not _is_index(byte_offset):
        bad("byteOffset must be a non-negative safe integer")
    if not _is_index(byte_length):
        bad("byteLength must be a non-negative safe integer")
    if type(dtype) is not str or dtype not in NUMPY_OF:
        bad(f"unknown dtype {_show(dtype)}")
    try:
        dims, size = check_shape(shape)
    except ArrayPoolError as error:
        bad(f"shape: {error}", error)
    itemsize = NUMPY_OF[dtype].itemsize
    if size * itemsize != byte_length:
        bad("shape does not match byteLength")
    if byte_offset % itemsize != 0:
        bad("byteOffset is not aligned to the dtype")
    return Handle(segment, offset, generation, byte_offset, byte_length, dtype, dims)
