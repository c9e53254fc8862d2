"""Making, viewing, reviving and freeing arrays in one process."""

import gc
import json
import pickle

import numpy as np
import pytest

import arraypool
from arraypool import ArrayPoolError


def test_make_transferable_copies_once_and_handle_revives_the_same_memory(pool):
    source = np.arange(12, dtype=np.float64).reshape(3, 4)
    a = arraypool.make_transferable(source)
    assert isinstance(a, arraypool.PoolArray)
    assert a.shape == (3, 4) and a.dtype == np.float64
    np.testing.assert_array_equal(a, source)
    assert not np.shares_memory(a, source)
    b = arraypool.revive(json.loads(json.dumps(arraypool.handle(a))))
    assert np.shares_memory(np.asarray(a), np.asarray(b)) or a.ctypes.data == b.ctypes.data
    b[1, 2] = -1.0
    assert a[1, 2] == -1.0


def test_empty_and_zeros_allocate_in_the_pool(pool):
    before = pool.stats()["live_blocks"]
    e = arraypool.empty("int32", (2, 3))
    z = arraypool.zeros(np.float32, 5)
    assert e.shape == (2, 3) and e.dtype == np.int32
    assert z.shape == (5,) and z.dtype == np.float32
    assert (z == 0).all()
    assert pool.stats()["live_blocks"] == before + 2
    del e, z
    assert pool.stats()["live_blocks"] == before


@pytest.mark.parametrize("name", sorted(arraypool.DTYPES))
def test_every_node_dtype_maps_to_numpy_and_back(pool, name):
    a = arraypool.zeros(name, (2, 3))
    assert a.dtype == arraypool.DTYPES[name]
    a[...] = 7
    h = arraypool.handle(a)
    assert h["dtype"] == name  # uint8clamped and buffer keep their names
    assert h["byteLength"] == 6 * a.itemsize
    b = arraypool.revive(h)
    assert b.dtype == a.dtype and (b == 7).all()


@pytest.mark.parametrize("dtype", [np.bool_, np.complex128, np.float16, ">f8", object])
def test_unsupported_dtypes_are_refused(pool, dtype):
    with pytest.raises(ArrayPoolError) as info:
        arraypool.empty(dtype, 3)
    assert info.value.code == "ERR_UNSUPPORTED_DTYPE"


@pytest.mark.parametrize("shape", [(), [-1], [1.5], [2**53], [2**30, 2**30], [1] * 33, "3"])
def test_bad_shapes_are_refused(pool, shape):
    with pytest.raises(ArrayPoolError) as info:
        arraypool.empty("float64", shape)
    assert info.value.code == "ERR_INVALID_SHAPE"


def test_handle_is_nodes_json_format(pool):
    a = arraypool.make_transferable(np.ones((4, 5), dtype=np.uint16), transfer_required=False)
    h = arraypool.handle(a)
    assert tuple(h) == arraypool.HANDLE_FIELDS
    assert h["__arraypool__"] == 1
    assert h["segment"] == pool.name
    assert h["offset"] % 64 == 0 and h["generation"] >= 1
    assert (h["byteOffset"], h["byteLength"], h["dtype"], h["shape"]) == (0, 40, "uint16", [4, 5])
    assert json.loads(json.dumps(h)) == h


def test_a_slice_has_the_handle_of_its_range(pool):
    a = arraypool.make_transferable(np.arange(10, dtype=np.int64))
    h = arraypool.handle(a[3:7])
    assert (h["byteOffset"], h["byteLength"], h["shape"], h["dtype"]) == (24, 32, [4], "bigint64")
    assert list(arraypool.revive(h)) == [3, 4, 5, 6]
    with pytest.raises(ArrayPoolError) as info:
        arraypool.handle(a[::2])
    assert info.value.code == "ERR_INVALID_ARG"
    with pytest.raises(ArrayPoolError) as info:
        arraypool.handle(np.zeros(3))
    assert info.value.code == "ERR_INVALID_ARG"


def test_pickling_carries_the_handle_not_the_bytes(pool):
    a = arraypool.make_transferable(np.arange(100_000, dtype=np.float64))
    data = pickle.dumps(a)
    assert len(data) < 1000
    b = pickle.loads(data)
    b[0] = 99
    assert a[0] == 99
    # Not pool memory (a ufunc result): pickled as a plain array, by value.
    c = pickle.loads(pickle.dumps(a[:3] + 1))
    assert list(c) == [100, 2, 3]


def test_revive_walks_dicts_lists_and_tuples(pool):
    a = arraypool.make_transferable(np.arange(3, dtype=np.int32))
    h = arraypool.handle(a)
    message = {"x": [1, (h, "t")], "y": {"z": h}, "n": None}
    out = arraypool.revive(message)
    assert out is message
    first, second = out["x"][1][0], out["y"]["z"]
    assert isinstance(out["x"][1], tuple) and out["x"][1][1] == "t"
    assert first is second  # one handle object: one array
    assert list(first) == [0, 1, 2]
    assert arraypool.revive(5) == 5


def test_the_transferred_rule(pool):
    stats = pool.stats
    base = stats()
    # Never sent: freed by the last view even with transfer_required.
    a = arraypool.empty("uint8", 100)
    del a
    assert stats()["live_blocks"] == base["live_blocks"]
    # Sent (its handle left): in flight after the last local view ...
    a = arraypool.empty("uint8", 100)
    h = arraypool.handle(a)
    del a
    assert stats()["in_flight_blocks"] == base["in_flight_blocks"] + 1
    # ... until some process revives it; freed with that view.
    b = arraypool.revive(h)
    assert stats()["in_flight_blocks"] == base["in_flight_blocks"]
    del b
    assert stats()["live_blocks"] == base["live_blocks"]
    # transfer_required=False: freed by the last view even once sent.
    a = arraypool.empty("uint8", 100, transfer_required=False)
    arraypool.handle(a)
    del a
    assert stats()["live_blocks"] == base["live_blocks"]


def test_object_pool_releases_blocks_held_only_by_cycles(pool):
    base = pool.stats()["live_blocks"]
    with arraypool.object_pool() as scope:
        cycle = [arraypool.empty("float64", 10)]
        cycle.append(cycle)
        kept = arraypool.zeros("float64", 10)
        del cycle
        assert pool.stats()["live_blocks"] == base + 2
    assert pool.stats()["live_blocks"] == base + 1
    assert scope.still_viewed == 1
    assert (kept == 0).all()  # a live array is never freed under it
    del kept
    assert pool.stats()["live_blocks"] == base


def test_stats_check_and_reap(pool):
    s = pool.stats()
    assert s["processes"] >= 1 and s["capacity_bytes"] == 256 << 20
    c = pool.check()
    assert c["violation"] is None and c["blocks"] >= 1
    r = pool.reap()
    assert set(r) == {"processes", "references", "blocks_freed", "bytes_freed"}


def test_start_pool_is_idempotent_and_refuses_other_pools(pool):
    assert arraypool.start_pool() is pool
    with pytest.raises(ArrayPoolError) as info:
        arraypool.start_pool(backing="shm")
    assert info.value.code == "ERR_INVALID_ARG"
    with pytest.raises(ArrayPoolError) as info:
        arraypool.start_pool(backing="disk")
    assert info.value.code == "ERR_INVALID_ARG"


def test_errors_pickle_with_their_code():
    e = pickle.loads(pickle.dumps(ArrayPoolError("ERR_POOL_FULL", "full")))
    assert (e.code, str(e)) == ("ERR_POOL_FULL", "full")


def test_a_full_pool_raises_err_pool_full(pool):
    with pytest.raises(ArrayPoolError) as info:
        arraypool.empty("uint8", 1 << 30)
    assert info.value.code == "ERR_POOL_FULL"
    gc.collect()


def test_views_keep_the_block_until_the_last_one_goes(pool):
    base = pool.stats()["live_blocks"]
    a = arraypool.make_transferable(np.arange(10, dtype=np.int16))
    part = a[2:5]
    plain = np.asarray(a).reshape(2, 5)
    del a
    gc.collect()
    assert pool.stats()["live_blocks"] == base + 1
    part[0] = 100
    assert plain[0, 2] == 100
    del part
    gc.collect()
    assert pool.stats()["live_blocks"] == base + 1
    del plain
    assert pool.stats()["live_blocks"] == base
