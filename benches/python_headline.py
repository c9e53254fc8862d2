"""The seeds' headline in Python: 2e7 float64 `add_one` in a worker process,
every way side by side in one run (medians after warm-up).

    .venv/bin/pip install npshmex SharedArray   # the comparison (pyproject's `bench` extra)
    .venv/bin/python benches/python_headline.py [--runs 7]

- numpy bare: `x + 1` in this process (the reference);
- npshmex: its ProcessPoolExecutor (arguments and results through /dev/shm
  files made per call, SharedArray);
- pickling: concurrent.futures.ProcessPoolExecutor, the array pickled both ways;
- arraypool, one copy in: `make_transferable(x)` then the worker computes
  into `empty()` and returns it (a handle back);
- arraypool, zero copy: `x` already lives in the pool; the same call.
"""

import argparse
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

import arraypool

N = int(2e7)


def add_one(x):
    return x + 1


def add_one_into_pool(x):
    """The worker's side for arraypool: the result is made in the pool."""
    result = arraypool.empty(x.dtype, x.shape)
    np.add(x, 1, out=result)
    return result


def median_ms(run, runs: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def check(result, source) -> None:
    if result[0] != source[0] + 1 or result[-1] != source[-1] + 1:
        raise SystemExit("wrong result")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    arraypool.start_pool()
    data = np.ones(N)
    rows = []

    def bare():
        check(add_one(data), data)

    rows.append(("numpy bare (`x + 1`, no worker)", median_ms(bare, runs)))

    try:
        import npshmex
    except ImportError:
        print("npshmex is not installed (pip install npshmex SharedArray): its row is left out", file=sys.stderr)
    else:
        with npshmex.ProcessPoolExecutor(max_workers=1) as ex:

            def via_npshmex():
                check(ex.submit(add_one, data).result(), data)

            rows.append(("npshmex ProcessPoolExecutor", median_ms(via_npshmex, runs)))

    with ProcessPoolExecutor(max_workers=1) as ex:

        def via_pickle():
            check(ex.submit(add_one, data).result(), data)

        rows.append(("concurrent.futures, pickling", median_ms(via_pickle, runs)))

    with ProcessPoolExecutor(max_workers=1, initializer=arraypool.start_pool) as ex:

        def one_copy_in():
            x = arraypool.make_transferable(data)
            check(ex.submit(add_one_into_pool, x).result(), data)

        rows.append(("arraypool, one copy in (`make_transferable`)", median_ms(one_copy_in, runs)))

        in_pool = arraypool.make_transferable(data)

        def zero_copy():
            check(ex.submit(add_one_into_pool, in_pool).result(), in_pool)

        rows.append(("arraypool, zero copy (input already in the pool)", median_ms(zero_copy, runs)))

    reference = rows[0][1]
    print(f"2e7 float64 add_one in a worker, median of {runs} runs after warm-up\n")
    print("| way | ms | × numpy bare |")
    print("| --- | ---: | ---: |")
    for name, ms in rows:
        print(f"| {name} | {ms:.0f} | {ms / reference:.2f}× |")


if __name__ == "__main__":
    main()
