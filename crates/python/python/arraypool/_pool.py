"""Pools as seen from Python: creating or joining the process's pool
(``start_pool``), opening other pools by name for handles, and leaving them
when the process ends.

The conventions are Node's (``src/pool.ts``), so processes of either
language join their parent's pool: the pool's locator reaches children in
``ARRAYPOOL_SEGMENT`` (each member puts itself first: ``name@pid:fd,...``),
and ``ARRAYPOOL_SIZE`` sets a new pool's size."""

import atexit
import os
import re
import threading

from . import _native
from ._errors import ArrayPoolError

#: The variable through which a pool's locator reaches the processes started after it.
SEGMENT_ENV = "ARRAYPOOL_SEGMENT"
#: The variable that sets the default pool size (``'512M'``, ``'4G'``, bytes).
SIZE_ENV = "ARRAYPOOL_SIZE"

MEMFD_PREFIX = "arraypool-memfd-"

_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_size(size) -> int:
    """``'512M'``, ``'4G'``, ``'1.5GiB'``, ``'4096'`` (binary units) or bytes."""
    if type(size) is int and 0 < size <= 2**53 - 1:
        return size
    if isinstance(size, str):
        m = _SIZE.match(size)
        if m:
            n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
            if 0 < n <= 2**53 - 1:
                return n
    raise ArrayPoolError("ERR_INVALID_ARG", f"invalid pool size {size!r}: use bytes or e.g. '512M', '4G'")


def pool_key(locator: str) -> str:
    """The name a pool is known by, from a name or a locator: without the
    hints and without one leading ``/`` (Node's ``poolKey``)."""
    name = locator.split("@", 1)[0]
    return name[1:] if name.startswith("/") else name


class Pool:
    """This process's attachment to a pool."""

    def __init__(self, pool_id: int):
        self.id = pool_id
        self.name = _native.pool_name(pool_id)
        self.backing = _native.pool_backing(pool_id)

    def __repr__(self) -> str:
        return f"<arraypool.Pool {self.name} ({self.backing}){' closed' if self.closed else ''}>"

    @property
    def is_creator(self) -> bool:
        return _native.is_creator(self.id)

    @property
    def closed(self) -> bool:
        return _native.is_closed(self.id)

    def locator(self) -> str:
        """What a child passes to ``start_pool`` (through ``ARRAYPOOL_SEGMENT``)."""
        return _native.pool_locator(self.id, os.environ.get(SEGMENT_ENV) or None)

    def stats(self) -> dict:
        """capacity_bytes, heap_bytes, used_bytes, free_bytes,
        largest_free_bytes, live_blocks, cached_bytes, cached_blocks (freed
        small blocks processes keep for reuse: used + free + cached =
        heap_bytes), in_flight_blocks, processes, lock_takeovers,
        backed_bytes (memory the segment costs now), held_references (this
        process's)."""
        return _native.stats(self.id)

    def check(self) -> dict:
        """Walks the whole pool: blocks, free_blocks, violation (None if sound)."""
        return _native.check(self.id)

    def reap(self) -> dict:
        """Drops the references of processes that died without releasing them:
        processes, references, blocks_freed, bytes_freed."""
        return _native.reap(self.id)

    def close(self) -> None:
        """Closes the pool in this process: operations on it fail with
        ERR_POOL_CLOSED from now on (``start_pool``, ``get_pool`` and revived
        handles join it anew), and the creator unlinks a named pool. numpy
        arrays cannot be detached, so the blocks of arrays still alive stay
        held (never reused under them): the process leaves the pool, its
        references dropped, once the last of them is gone (or at exit)."""
        global _default
        if self.closed:
            return
        created = self.is_creator
        _native.close_pool(self.id)
        with _lock:
            _by_name.pop(self.name, None)
            if _default is self:
                _default = None
                if created and pool_key(os.environ.get(SEGMENT_ENV, "")) == self.name:
                    del os.environ[SEGMENT_ENV]


_lock = threading.RLock()
_by_name = {}
_default = None


def pool_by_name(locator: str, lock_timeout_ms=None) -> Pool:
    """The pool a name or locator names: the one this process has open, or a new attachment."""
    with _lock:
        known = _by_name.get(pool_key(locator))
        if known is not None and not known.closed:
            return known
        pool = Pool(_native.open_pool(locator, lock_timeout_ms))
        _by_name[pool.name] = pool
        return pool


def start_pool(size=None, backing=None, name=None, lock_timeout_ms=None) -> Pool:
    """The initializer a worker calls at start-up (``initializer=start_pool``),
    and what every other entry point calls when nothing was started.

    In a process started after its parent (Node or Python) started a pool,
    joins that pool (its locator arrives in ``ARRAYPOOL_SEGMENT``), unless
    ``backing`` or ``name`` ask for another one. Otherwise creates a pool:
    anonymous memory (``'memfd'``, the default) or a named /dev/shm file
    (``'shm'``, implied by ``name``). Either way it exports the pool's
    locator, naming this process first, to the processes started afterwards.
    Idempotent: a second call returns the same pool."""
    global _default
    if backing not in (None, "memfd", "shm"):
        raise ArrayPoolError("ERR_INVALID_ARG", f"backing must be 'memfd' or 'shm', got {backing!r}")
    if name is not None and backing == "memfd":
        raise ArrayPoolError(
            "ERR_INVALID_ARG", "a name is for backing='shm' pools; anonymous (memfd) pools are found by their id"
        )
    with _lock:
        if _default is not None and not _default.closed:
            return _check_matches(_default, backing, name)
        inherited = os.environ.get(SEGMENT_ENV) or None
        inherited_backing = "memfd" if inherited and pool_key(inherited).startswith(MEMFD_PREFIX) else "shm"
        wanted = (
            inherited
            if inherited is not None
            and (name is None or pool_key(name) == pool_key(inherited))
            and (backing is None or backing == inherited_backing)
            else name
        )
        pool = None
        if wanted is not None:
            try:
                pool = pool_by_name(wanted, lock_timeout_ms)
            except ArrayPoolError as error:
                # No member of the parent's pool is left, or no pool has that
                # name yet: start a fresh one below.
                if error.code != "ERR_SEGMENT_NOT_FOUND":
                    raise
        if pool is None:
            size = size if size is not None else os.environ.get(SIZE_ENV) or None
            capacity = parse_size(size) if size is not None else None
            chosen = backing or ("shm" if name is not None else "memfd")
            pool = Pool(_native.create_pool(capacity, chosen, name, lock_timeout_ms))
            _by_name[pool.name] = pool
        _default = pool
        os.environ[SEGMENT_ENV] = _native.pool_locator(pool.id, inherited)
        _install_exit_hooks()
        return pool


def _check_matches(pool: Pool, backing, name) -> Pool:
    if backing is not None and backing != pool.backing:
        raise ArrayPoolError(
            "ERR_INVALID_ARG", f"start_pool: this process already uses pool {pool.name}, not a {backing!r} pool"
        )
    if name is not None and pool_key(name) != pool.name:
        raise ArrayPoolError("ERR_INVALID_ARG", f"start_pool: this process already uses pool {pool.name}, not {name!r}")
    return pool


def get_pool() -> Pool:
    """The process's pool, started on demand."""
    pool = _default
    return pool if pool is not None and not pool.closed else start_pool()


_hooks_installed = False


def _install_exit_hooks() -> None:
    """Leaving at exit: the process's references are dropped (others need not
    reap them) and the creator of a named pool unlinks it. multiprocessing's
    workers end with ``os._exit``, which skips ``atexit``: they leave through
    multiprocessing's own finalizers instead."""
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(_native.shutdown)
    try:
        from multiprocessing import util

        util.Finalize(None, _native.shutdown, exitpriority=-100)
    except ImportError:  # a Python without multiprocessing
        pass


def _after_fork_in_child() -> None:
    """A forked child (multiprocessing's default start method on Linux) is a
    new process: it forgets the parent's attachments (see the Rust
    ``registry``) and joins through ``start_pool()`` as itself."""
    global _default, _hooks_installed, _lock
    _native.after_fork_in_child()
    _lock = threading.RLock()
    _by_name.clear()
    _default = None
    _hooks_installed = False


os.register_at_fork(after_in_child=_after_fork_in_child)
