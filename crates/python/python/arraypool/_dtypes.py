"""The dtype names of handles (Node's, ``src/dtypes.ts``) and the numpy
dtypes they map to. Every array is little-endian (the only byte order the
pool's platforms have) and C-ordered."""

import numpy as np

from ._errors import ArrayPoolError

#: Handle dtype name -> numpy dtype. Node's `uint8clamped` and `buffer` are
#: plain bytes to numpy; an array revived from such a handle keeps the name
#: for its own handle, so a round trip gives Node back what it sent.
NUMPY_OF = {
    "int8": np.dtype("<i1"),
    "uint8": np.dtype("<u1"),
    "uint8clamped": np.dtype("<u1"),
    "int16": np.dtype("<i2"),
    "uint16": np.dtype("<u2"),
    "int32": np.dtype("<i4"),
    "uint32": np.dtype("<u4"),
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
    "bigint64": np.dtype("<i8"),
    "biguint64": np.dtype("<u8"),
    "buffer": np.dtype("<u1"),
}

#: numpy's type string (``dtype.str``) -> the handle dtype name an array of
#: it gets. Keyed by the string: aliases (``'l'``, ``'q'``, ``int``) all
#: spell ``'<i8'``, and a big-endian ``'>f8'`` is simply absent.
NAME_OF = {
    "|i1": "int8",
    "|u1": "uint8",
    "<i2": "int16",
    "<u2": "uint16",
    "<i4": "int32",
    "<u4": "uint32",
    "<f4": "float32",
    "<f8": "float64",
    "<i8": "bigint64",
    "<u8": "biguint64",
}


def handle_dtype_name(dtype) -> str:
    """The handle name of a numpy dtype (or of anything ``np.dtype`` takes,
    or of a handle name); ERR_UNSUPPORTED_DTYPE for the others (bool,
    complex, float16, big-endian, structured, object...)."""
    if isinstance(dtype, str) and dtype in NUMPY_OF:
        return dtype
    try:
        d = np.dtype(dtype)
    except TypeError as error:
        raise ArrayPoolError("ERR_UNSUPPORTED_DTYPE", f"unknown dtype {dtype!r}") from error
    name = NAME_OF.get(d.str)
    if name is None:
        raise ArrayPoolError(
            "ERR_UNSUPPORTED_DTYPE",
            f"dtype {d} has no pool handle name: use one of {sorted(NAME_OF.values())}",
        )
    return name
