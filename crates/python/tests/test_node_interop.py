"""A Python parent with Node children (the repo's built dist/): handles made
in either language revive in the other, writes are seen without copying,
and a killed Node member is reaped by Python."""

import shutil

import numpy as np
import pytest

import arraypool
from conftest import FIXTURES, REPO, member_fixture

NODE = shutil.which("node")
DIST = REPO / "dist" / "index.js"
pytestmark = pytest.mark.skipif(
    NODE is None or not DIST.exists(), reason="needs node on PATH and the built dist/ (npm run build)"
)


node_member = member_fixture([NODE, str(FIXTURES / "node_member.mjs")])


def test_node_joins_the_python_parents_pool(pool, node_member):
    assert node_member().ready["segment"] == pool.name


def test_node_writes_in_place_and_returns_an_array_made_with_empty(pool, node_member):
    member = node_member()
    x = arraypool.make_transferable(np.arange(6.0).reshape(2, 3))
    answer = member.request(op="add_one", input=arraypool.handle(x))
    result = arraypool.revive(answer["result"])
    np.testing.assert_array_equal(x, np.arange(1.0, 7.0).reshape(2, 3))
    assert result.shape == (2, 3) and result.dtype == np.float64
    np.testing.assert_array_equal(result, x * 2)
    member.stop()
    del x, result


def test_every_node_dtype_revives_in_python_with_the_same_handle(pool, node_member):
    member = node_member()
    made = member.request(op="make_every_dtype")
    assert set(made) == set(arraypool.DTYPES)
    for dtype, sent in made.items():
        x = arraypool.revive(sent["handle"])
        assert x.dtype == arraypool.DTYPES[dtype] and x.shape == (2, 1)
        assert str(x[0, 0]) == sent["first"] or float(x[0, 0]) == float(sent["first"])
        # Python's handle of the revived array is Node's, field for field.
        assert arraypool.handle(x) == sent["handle"]
        del x
    member.stop()


def test_python_handles_revive_in_node_with_the_same_json(pool, node_member):
    member = node_member()
    for dtype in arraypool.DTYPES:
        x = arraypool.zeros(dtype, (2, 2))
        x[0, 0] = 7
        h = arraypool.handle(x)
        answer = member.request(op="revive", input=h)
        assert answer["ok"] and answer["first"] == "7"
        assert answer["handle"] == h
        del x
    member.stop()


def test_node_refuses_stale_and_forged_python_handles_with_the_same_codes(pool, node_member):
    member = node_member()
    x = arraypool.empty("float64", 4, transfer_required=False)
    h = arraypool.handle(x)
    assert member.request(op="revive", input={**h, "offset": h["offset"] + 1}) == {
        "ok": False,
        "code": "ERR_INVALID_HANDLE",
    }
    del x
    assert member.request(op="revive", input=h) == {"ok": False, "code": "ERR_STALE_HANDLE"}
    member.stop()


def test_a_killed_node_member_is_reaped_by_python(pool, node_member):
    member = node_member()
    base = pool.stats()
    assert member.request(op="hold", count=3) == {"held": 3}
    assert pool.stats()["live_blocks"] == base["live_blocks"] + 3
    member.kill()
    report = pool.reap()
    assert report["processes"] == 1 and report["blocks_freed"] == 3
    assert pool.stats()["live_blocks"] == base["live_blocks"]
