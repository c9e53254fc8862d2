"""Pool.close(): numpy arrays cannot be detached as Node's ArrayBuffers are,
so a closed pool keeps the blocks of live arrays (never reused under them)
and the process leaves it when the last of them is gone."""

import json
import os
import subprocess
import sys
import textwrap

# The children's prelude: the code of the ArrayPoolError a call raises, or None.
CODE_OF = textwrap.dedent(
    """
    import arraypool

    def code(call):
        try:
            call()
        except arraypool.ArrayPoolError as error:
            return error.code
        return None
    """
)

# Runs in a child that joins the test session's pool (ARRAYPOOL_SEGMENT),
# so that closing its attachment leaves the session's pool alone.
CHILD = CODE_OF + textwrap.dedent(
    """
    import gc, json
    import numpy as np
    import arraypool
    from arraypool import _native
    from arraypool._arrays import _block_of


    first = arraypool.start_pool()
    a = arraypool.empty("float64", 64, transfer_required=False)
    a[...] = 1
    h = arraypool.handle(a)
    first.close()
    closed = {
        "closed": first.closed,
        "allocate": code(lambda: _native.allocate(first.id, 8, False, "float64", [1])),
        "attach": code(lambda: _native.attach(first.id, h["offset"], h["generation"], 0, 8, "float64", [1])),
        "escaped": _block_of(a).escaped(),
    }
    second = arraypool.start_pool()  # joins the same pool anew
    b = arraypool.empty("float64", 64)
    b[...] = 7
    c = arraypool.revive(h)  # a's block, through the new attachment
    before = second.stats()
    a_is_ones = bool((a == 1).all()) and bool((c == 1).all())
    del a
    gc.collect()
    left_after_a = first.closed
    after_a = second.stats()
    del c
    gc.collect()
    after = second.stats()
    print(json.dumps({
        "same_pool": first.name == second.name and first.id != second.id,
        "closed": closed,
        "a_is_ones": a_is_ones,
        "b_is_sevens": bool((b == 7).all()),
        "before": before,
        "after_a": after_a,
        "after": after,
        "first_stats_after": code(first.stats),
    }))
    """
)


def test_close_keeps_live_arrays_blocks_and_leaves_after_the_last(pool):
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120, check=True)
    r = json.loads(out.stdout)
    assert r["same_pool"]
    # Closed for new operations at once.
    assert r["closed"] == {"closed": True, "allocate": "ERR_POOL_CLOSED", "attach": "ERR_POOL_CLOSED", "escaped": True}
    # a's block was not freed (nor reused for b) while a lived.
    assert r["a_is_ones"] and r["b_is_sevens"]
    before, after_a, after = r["before"], r["after_a"], r["after"]
    # Dropping a (its last Block in the closed attachment) left the pool:
    # one process fewer, and the closed attachment's references are gone.
    assert after_a["processes"] == before["processes"] - 1
    assert r["first_stats_after"] == "ERR_POOL_CLOSED"
    # a's block was still held by the new attachment (c): freed with c.
    assert after_a["live_blocks"] == before["live_blocks"]
    assert after["live_blocks"] == before["live_blocks"] - 1
    assert after["held_references"] == before["held_references"] - 1


def test_stats_parts_add_up(pool):
    s = pool.stats()
    assert s["used_bytes"] + s["free_bytes"] + s["cached_bytes"] == s["heap_bytes"]
    assert s["cached_blocks"] >= 0 and s["backed_bytes"] > 0


# A child with pools of its own (no ARRAYPOOL_SEGMENT): each closed pool is
# unmapped once its last array is gone, so opening and closing pools keeps
# none of their pages.
UNMAP_CHILD = CODE_OF + textwrap.dedent(
    """
    import gc, json
    import arraypool

    def mapped(name):
        with open("/proc/self/maps") as maps:
            return f"/memfd:{name} " in maps.read()


    rounds = []
    for i in range(3):
        pool = arraypool.start_pool(size="16M")
        a = arraypool.empty("float64", 1 << 20)  # 8 MiB, touched
        a[...] = i
        pool.close()
        kept = mapped(pool.name) and bool((a == i).all())
        del a
        gc.collect()
        rounds.append({"kept_while_viewed": kept, "mapped_after": mapped(pool.name), "stats": code(pool.stats)})
    print(json.dumps(rounds))
    """
)


def test_a_closed_pool_is_unmapped_once_its_last_array_is_gone():
    env = {k: v for k, v in os.environ.items() if k != "ARRAYPOOL_SEGMENT"}
    out = subprocess.run([sys.executable, "-c", UNMAP_CHILD], capture_output=True, text=True, timeout=120, check=True, env=env)
    rounds = json.loads(out.stdout)
    assert rounds == [{"kept_while_viewed": True, "mapped_after": False, "stats": "ERR_POOL_CLOSED"}] * 3
