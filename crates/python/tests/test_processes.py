"""Python processes as pool members: multiprocessing and concurrent.futures
workers (initializer=start_pool), forked children, killed members."""

import gc
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

import arraypool
import tasks


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_multiprocessing_pool_passes_arrays_both_ways_without_copies(pool, method):
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(2, initializer=arraypool.start_pool) as workers:
        x = arraypool.make_transferable(np.arange(1000, dtype=np.float64))
        result = workers.apply(tasks.add_one_in_place, (x,))
        # The worker wrote into our block, and its result is a block too.
        assert x[0] == 1 and x[-1] == 1000
        assert isinstance(result, arraypool.PoolArray)
        np.testing.assert_array_equal(result, x * 2)
        grid = arraypool.zeros("int32", (8, 4))
        pids = workers.starmap(tasks.fill_row, [(grid, i, i) for i in range(8)])
        assert all(pid != os.getpid() for pid in pids)
        np.testing.assert_array_equal(grid[:, 0], np.arange(8))
    # Leaving the `with` terminates the workers (SIGTERM), possibly before a
    # worker dropped its last task's arguments: a killed member's references
    # are reaped, as any dead process's.
    pool.reap()
    del x, result, grid


def test_process_pool_executor_passes_arrays_both_ways(pool):
    with ProcessPoolExecutor(2, initializer=arraypool.start_pool) as ex:
        x = arraypool.make_transferable(np.ones(10_000))
        result = ex.submit(tasks.add_one_in_place, x).result()
        assert (x == 2).all()
        assert (result == 4).all()
        assert isinstance(result, arraypool.PoolArray)
    del x, result


def test_workers_joined_the_parents_pool(pool):
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1, initializer=arraypool.start_pool) as workers:
        name = workers.apply(_pool_name)
    pool.reap()  # terminated workers (see above)
    assert name == pool.name


def _pool_name():
    return arraypool.start_pool().name


def test_a_forked_child_never_releases_the_parents_references(pool):
    a = arraypool.make_transferable(np.arange(4.0))
    held = pool.stats()["held_references"]
    pid = os.fork()
    if pid == 0:  # the child: drops its inherited copy, joins as itself
        code = 0
        try:
            del a
            gc.collect()
            child = arraypool.start_pool()
            code = 0 if child.name == pool.name and child.stats()["held_references"] == 0 else 3
        except BaseException:
            code = 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert pool.stats()["held_references"] == held
    assert list(a) == [0, 1, 2, 3]
    del a


def test_a_killed_member_is_reaped(pool, python_member):
    member = python_member()
    assert member.ready["segment"] == pool.name
    base = pool.stats()
    mine = arraypool.make_transferable(np.arange(8.0), transfer_required=False)
    assert member.request(op="hold", input=arraypool.handle(mine), count=3) == {"held": 4}
    assert pool.stats()["live_blocks"] == base["live_blocks"] + 4
    member.kill()
    report = pool.reap()
    assert report["processes"] == 1 and report["references"] == 4
    # Its own three blocks are freed; ours, which we still view, is not.
    assert report["blocks_freed"] == 3
    assert pool.stats()["live_blocks"] == base["live_blocks"] + 1
    assert list(mine[:3]) == [0, 1, 2]
    del mine


def test_a_member_answers_add_one(pool, python_member):
    member = python_member()
    x = arraypool.make_transferable(np.arange(5.0))
    answer = member.request(op="add_one", input=arraypool.handle(x))
    result = arraypool.revive(answer["result"])
    assert list(x) == [1, 2, 3, 4, 5]
    assert list(result) == [2, 4, 6, 8, 10]
    member.stop()
    del x, result


def test_a_member_that_exits_leaves_the_pool_with_its_references(pool, python_member):
    member = python_member()
    base = pool.stats()
    assert member.request(op="hold", count=2) == {"held": 2}
    assert pool.stats()["live_blocks"] == base["live_blocks"] + 2
    member.stop()  # stdin closes: it returns from its loop and exits
    after = pool.stats()
    assert after["live_blocks"] == base["live_blocks"]
    assert after["processes"] == base["processes"] - 1
