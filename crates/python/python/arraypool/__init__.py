"""arraypool for Python: numpy arrays in the shared-memory block pool of
the Node.js package, so Python and Node processes are members of one pool.

    import arraypool, numpy as np
    arraypool.start_pool()
    a = arraypool.make_transferable(np.arange(10.0))  # one copy into the pool
    h = arraypool.handle(a)        # JSON-compatible; Node's revive() takes it
    b = arraypool.revive(h)        # another view of the same memory

Pickling a pool array carries its handle, so ``multiprocessing.Pool`` and
``concurrent.futures.ProcessPoolExecutor`` with ``initializer=start_pool``
pass arrays without copying them."""

from . import _native
from ._arrays import PoolArray, empty, handle, make_transferable, object_pool, revive, zeros
from ._dtypes import NUMPY_OF as DTYPES
from ._errors import ArrayPoolError
from ._handle import COMPACT_HANDLE_FORMAT, HANDLE_FIELDS, HANDLE_FORMAT, parse_handle
from ._pool import SEGMENT_ENV, SIZE_ENV, Pool, get_pool, start_pool


def layout_version() -> int:
    """The shared-memory layout version (must equal Node's ``layoutVersion()``)."""
    return _native.layout_version()


__all__ = [
    "ArrayPoolError",
    "DTYPES",
    "COMPACT_HANDLE_FORMAT",
    "HANDLE_FIELDS",
    "HANDLE_FORMAT",
    "Pool",
    "PoolArray",
    "SEGMENT_ENV",
    "SIZE_ENV",
    "empty",
    "get_pool",
    "handle",
    "layout_version",
    "make_transferable",
    "object_pool",
    "parse_handle",
    "revive",
    "start_pool",
    "zeros",
]
