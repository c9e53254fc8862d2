"""Stale, forged and malformed handles raise ArrayPoolError with Node's
codes, never a crash."""

import numpy as np
import pytest

import arraypool
from arraypool import ArrayPoolError


@pytest.fixture
def live(pool):
    """The handle of a live block (the array is dropped at teardown)."""
    kept = [arraypool.make_transferable(np.arange(16, dtype=np.float64), transfer_required=False)]
    yield arraypool.handle(kept[0])
    kept.clear()


def code_of(value):
    with pytest.raises(ArrayPoolError) as info:
        arraypool.revive(value)
    return info.value.code


def test_a_freed_block_is_stale(pool):
    a = arraypool.empty("float64", 4, transfer_required=False)
    h = arraypool.handle(a)
    del a
    assert code_of(h) == "ERR_STALE_HANDLE"


def test_a_reused_block_is_stale(pool):
    a = arraypool.empty("float64", 4, transfer_required=False)
    h = arraypool.handle(a)
    del a
    b = arraypool.empty("float64", 4)  # likely the same offset, a new generation
    assert code_of(h) == "ERR_STALE_HANDLE"
    del b


@pytest.mark.parametrize(
    "change",
    [
        {"offset": 1},
        {"offset": 2**40},
        {"offset": 64},
        {"generation": 0},
        {"generation": 2**52},
        {"byteOffset": 8, "byteLength": 128, "shape": [16]},
        {"byteLength": 2**20, "shape": [2**17]},
        {"offset": -64},
        {"offset": 2**53},
        {"offset": "64"},
        {"offset": True},
        {"offset": 64.0},
        {"generation": None},
        {"byteOffset": 4},
        {"dtype": "complex128"},
        {"dtype": None},
        {"shape": [15]},
        {"shape": []},
        {"shape": "16"},
        {"shape": [2**53]},
        {"__arraypool__": 2},
        {"__arraypool__": True},
        {"segment": 5},
        {"segment": "x" * 201},
        {"segment": "../../etc/passwd"},
        {"segment": "/tmp/arraypool-x"},
    ],
)
def test_forged_and_malformed_handles_are_invalid(live, change):
    h = live
    assert code_of({**h, **change}) == "ERR_INVALID_HANDLE"


def compact(h, **change):
    """A format-1 handle in the compact form (what Node clones arrays to)."""
    fields = {**h, **change}
    shape = fields["shape"]
    dims = ",".join(map(str, shape)) if isinstance(shape, list) else str(shape)
    return {
        "__arraypool__": f"2:{fields['segment']}:{fields['offset']}:{fields['generation']}:"
        f"{fields['byteOffset']}:{fields['byteLength']}:{fields['dtype']}:{dims}"
    }


def test_the_compact_form_names_the_same_array(live):
    a = arraypool.revive(compact(live))
    assert a.tolist() == list(range(16))
    assert arraypool.parse_handle(compact(live)) == arraypool.parse_handle(live)


@pytest.mark.parametrize(
    "change",
    [
        {"offset": "0" + "64"},
        {"offset": "-64"},
        {"offset": "6.4e1"},
        {"offset": " 64"},
        {"offset": "\u0664"},  # an Arabic-Indic digit: str.isdigit() would take it
        {"offset": 2**53},
        {"generation": ""},
        {"byteOffset": "0x0"},
        {"dtype": "FLOAT64"},
        {"shape": "16,"},
        {"shape": "016"},
        {"shape": ",".join(["1"] * 33)},
        {"segment": "../../etc/passwd"},
        {"segment": "a:b"},
        {"segment": "arraypool-\u00e9"},
        {"segment": "\U0001F600" * 101},
    ],
)
def test_forged_compact_handles_are_invalid(live, change):
    forged = compact(live, **change)
    assert code_of(forged) == "ERR_INVALID_HANDLE", forged


@pytest.mark.parametrize(
    "text",
    ["2", "1:x", "3:a:1:1:0:8:float64:1", "2:" + "x" * 2000, "2:arraypool-x:64:1:0:8:float64:1:extra"],
)
def test_malformed_compact_strings_are_invalid(text):
    assert code_of({"__arraypool__": text}) == "ERR_INVALID_HANDLE"


def test_a_handle_of_a_pool_that_does_not_exist(live):
    h = live
    assert code_of({**h, "segment": "arraypool-memfd-" + "0" * 32}) == "ERR_SEGMENT_NOT_FOUND"
    assert code_of({**h, "segment": "arraypool-no-such-pool"}) == "ERR_SEGMENT_NOT_FOUND"


def test_a_failed_revive_releases_what_it_attached(live, pool):
    h = live
    held = pool.stats()["held_references"]
    assert code_of([h, {**h, "offset": 1}]) == "ERR_INVALID_HANDLE"
    assert pool.stats()["held_references"] == held


def test_parse_handle_rejects_non_dicts():
    with pytest.raises(ArrayPoolError) as info:
        arraypool.parse_handle([1, 2])
    assert info.value.code == "ERR_INVALID_HANDLE"


@pytest.mark.parametrize(
    "dtype, shape, code",
    [
        ("float64", [1000], "ERR_INVALID_SHAPE"),
        ("float64", [2**62, 4], "ERR_INVALID_SHAPE"),
        ("float64", [], "ERR_INVALID_SHAPE"),
        ("complex", [1], "ERR_UNSUPPORTED_DTYPE"),
    ],
)
def test_the_extension_never_makes_an_array_larger_than_its_range(pool, dtype, shape, code):
    # Below the Python checks: the native layer checks the layout itself.
    with pytest.raises(ArrayPoolError) as info:
        arraypool._native.allocate(pool.id, 8, False, dtype, shape)
    assert info.value.code == code
