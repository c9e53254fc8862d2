"""Arrays in the pool: numpy arrays that view a block with no copy.

Each array made or revived here is a ``PoolArray`` (an ndarray subclass)
whose ``base`` chain ends at a native ``Block``, which holds one reference
to the block. numpy keeps the Block alive while any view of it (slices,
reshapes, ``np.asarray``) lives; the reference is released when the last
one goes, so no array ever views a freed block. Pickling a PoolArray
yields its handle (one small dict), not its bytes."""

import contextvars
import gc
import traceback
import weakref

import numpy as np

from . import _native
from ._dtypes import NUMPY_OF, handle_dtype_name
from ._errors import ArrayPoolError
from ._handle import Handle, check_shape, looks_like_handle, parse_handle
from ._pool import get_pool, pool_by_name


class PoolArray(np.ndarray):
    """A numpy array over pool memory. Everything numpy does works on it;
    ``pickle`` (multiprocessing, concurrent.futures) carries its handle."""

    def __reduce__(self):
        h = _handle_of(self, mark=True, strict=False)
        if h is None:
            # Not a C-ordered view of pool memory (e.g. the result of
            # ``a + 1``, or a transposed view): pickled as a plain array.
            return np.asarray(self).__reduce__()
        return (_revive_handle, (h.to_dict(),))

    def __reduce_ex__(self, protocol):
        return self.__reduce__()


def _block_of(array):
    """The Block an array's memory belongs to, or None."""
    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    return base if isinstance(base, _native.Block) else None


def _handle_of(array, mark: bool, strict: bool):
    """The handle of an array over pool memory (marking the block's handle
    as having left this process if ``mark``); None (or with ``strict`` an
    ERR_INVALID_ARG) if it is not a C-ordered array over a block."""

    def refuse(why: str):
        if strict:
            raise ArrayPoolError("ERR_INVALID_ARG", f"handle: {why}")
        return None

    if not isinstance(array, np.ndarray):
        return refuse(f"expected a numpy array over pool memory, got {type(array).__name__}")
    block = _block_of(array)
    if block is None:
        return refuse("the array does not view pool memory (make it with make_transferable, empty or zeros)")
    if not array.flags.c_contiguous:
        return refuse("the array is not C-contiguous (a handle names one C-ordered range): copy it first")
    dtype = block.dtype if array.dtype == NUMPY_OF[block.dtype] else None
    if dtype is None:
        try:
            dtype = handle_dtype_name(array.dtype)
        except ArrayPoolError:
            if strict:
                raise
            return None
    relative = array.__array_interface__["data"][0] - block.address
    if relative < 0 or relative + array.nbytes > block.byte_length or relative % array.itemsize:
        return refuse("the array's memory is not inside its block")
    try:
        shape, _ = check_shape(array.shape)
    except ArrayPoolError:
        if strict:
            raise
        return None
    if mark:
        block.mark_escaped()
    return Handle(
        block.segment,
        block.offset,
        block.generation,
        block.byte_offset + relative,
        array.nbytes,
        dtype,
        shape,
    )


def handle(array) -> dict:
    """The JSON-compatible handle of an array over pool memory (Node's
    format). Marks the block's handle as having left this process, so the
    block keeps the transferred rule: with ``transfer_required`` (the
    default) it outlives this process's last view until some process
    revives the handle."""
    return _handle_of(array, mark=True, strict=True).to_dict()


# Blocks made while an object_pool() scope is current join it.
_scope = contextvars.ContextVar("arraypool_scope", default=None)


def _wrap(block) -> PoolArray:
    scope = _scope.get()
    if scope is not None:
        scope._adopt(block)
    return np.asarray(block).view(PoolArray)


def _allocate(dtype_name: str, shape, transfer_required: bool):
    if type(transfer_required) is not bool:
        raise ArrayPoolError("ERR_INVALID_ARG", f"transfer_required must be a bool, got {transfer_required!r}")
    dims, size = check_shape([shape] if isinstance(shape, int) or hasattr(shape, "__index__") else shape)
    np_dtype = NUMPY_OF[dtype_name]
    pool = get_pool()
    block = _native.allocate(pool.id, size * np_dtype.itemsize, transfer_required, dtype_name, list(dims))
    return _wrap(block)


def empty(dtype, shape, transfer_required: bool = True) -> PoolArray:
    """An uninitialised array straight in the pool: the zero-copy way to
    produce a result. ``dtype``: a numpy dtype or a handle dtype name."""
    return _allocate(handle_dtype_name(dtype), shape, transfer_required)


def zeros(dtype, shape, transfer_required: bool = True) -> PoolArray:
    """Like ``empty``, filled with zeros."""
    array = _allocate(handle_dtype_name(dtype), shape, transfer_required)
    array.fill(0)
    return array


def make_transferable(array, transfer_required: bool = True) -> PoolArray:
    """Copies an array into the pool once; the result views the block.

    ``transfer_required`` (default True): once the array's handle has left
    this process (pickled, ``handle()``), the block survives this process's
    last view until some process revives it, so a worker's result outlives
    the worker. False: freed as soon as no process views it. A block whose
    handle never left is freed by its last view either way."""
    source = np.asarray(array)
    name = handle_dtype_name(source.dtype)
    result = _allocate(name, source.shape, transfer_required)
    np.copyto(result, source, casting="no")
    return result


def _attach(h: Handle) -> PoolArray:
    try:
        pool = pool_by_name(h.segment)
    except ArrayPoolError as error:
        # A name that could never be a pool's is a malformed handle; a
        # well-formed name that is gone stays ERR_SEGMENT_NOT_FOUND.
        if error.code == "ERR_INVALID_NAME":
            raise ArrayPoolError("ERR_INVALID_HANDLE", f"invalid handle: {error}") from error
        raise
    block = _native.attach(pool.id, h.offset, h.generation, h.byte_offset, h.byte_length, h.dtype, list(h.shape))
    return _wrap(block)


def _revive_handle(value) -> PoolArray:
    """Unpickling: one handle to an array (marks the block transferred)."""
    return _attach(parse_handle(value))


def revive(value):
    """Walks dicts, lists and tuples (any depth; shared and cyclic parts
    visited once) and turns every handle into a PoolArray. Dicts and lists
    are updated in place, tuples rebuilt; returns the revived value. A bad
    handle raises its ArrayPoolError, and the containers are put back as
    they were: what was attached before it is released at once."""
    seen = {}
    replaced = []  # (container, key, old value): undone if a handle fails

    def visit(node):
        kind = type(node)
        if kind is not dict and kind is not list and kind is not tuple:
            return node
        key = id(node)
        if key in seen:
            return seen[key]
        if looks_like_handle(node):
            live = _attach(parse_handle(node))
            seen[key] = live
            return live
        seen[key] = node
        if kind is dict:
            for k, v in node.items():
                after = visit(v)
                if after is not v:
                    replaced.append((node, k, v))
                    node[k] = after
        elif kind is list:
            for i, v in enumerate(node):
                after = visit(v)
                if after is not v:
                    replaced.append((node, i, v))
                    node[i] = after
        else:
            items = tuple(visit(v) for v in node)
            if any(a is not b for a, b in zip(items, node)):
                seen[key] = items
                return items
        return node

    try:
        return visit(value)
    except BaseException as error:
        for container, key, old in reversed(replaced):
            container[key] = old
        # The traceback's frames would keep the arrays attached so far alive.
        traceback.clear_frames(error.__traceback__)
        raise
    finally:
        # `visit` refers to itself (a cycle only the collector would break).
        seen.clear()
        replaced.clear()


class object_pool:
    """A scope (``with arraypool.object_pool():``) that starts the process's
    pool and, when it ends, releases every block made or revived in it that
    no live array views any more, reference cycles included (the cycle
    collector runs once if one is still alive). A block still viewed by a
    live array stays until that array goes: a numpy array cannot be detached
    as a JavaScript ArrayBuffer can, and the scope never frees memory under
    a live view. ``still_viewed`` then says how many there were."""

    def __init__(self):
        self._blocks = []
        self._token = None
        self.still_viewed = 0

    def _adopt(self, block) -> None:
        self._blocks.append(weakref.ref(block))

    def __enter__(self) -> "object_pool":
        get_pool()
        self._token = _scope.set(self)
        return self

    def __exit__(self, *exc) -> bool:
        _scope.reset(self._token)
        if any(ref() is not None for ref in self._blocks):
            gc.collect()
        self.still_viewed = sum(ref() is not None for ref in self._blocks)
        self._blocks.clear()
        return False
