"""Python's multiprocessing.Pool on the workloads of bench/compare_pool.cpp, same work,
same machine. Prints one JSON object of median seconds.

    python3 pool_bench.py --workers 2 --repeat 5
"""
import argparse
import json
import statistics
import sys
import time
from multiprocessing import Pool


def square(x):
    return x * x


def median_time(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--map-items", type=int, default=1_000_000)
    ap.add_argument("--chunk1-items", type=int, default=20_000)
    ap.add_argument("--applies", type=int, default=2_000)
    args = ap.parse_args()
    out = {}

    def start_first():
        with Pool(args.workers) as p:
            assert p.apply(square, (7,)) == 49

    out["start_first_result"] = median_time(start_first, args.repeat)

    # The seed's vector_square as a whole: start Pool(2), map square over 2,000,000
    # floats, close and join.
    squares = [i * 1e-3 for i in range(2_000_000)]

    def vector_square_whole():
        p = Pool(args.workers)
        r = p.map(square, squares)
        p.close()
        p.join()
        assert r[-1] == squares[-1] * squares[-1]

    out["vector_square_whole"] = median_time(vector_square_whole, min(args.repeat, 3))

    with Pool(args.workers) as pool:
        pool.map(square, range(1000))  # warm up

        def big_map():
            r = pool.map(square, range(args.map_items))
            assert r[-1] == (args.map_items - 1) ** 2

        out["map_trivial"] = median_time(big_map, args.repeat)

        def chunk1():
            r = pool.map(square, range(args.chunk1_items), chunksize=1)
            assert r[-1] == (args.chunk1_items - 1) ** 2

        out["map_chunksize1_per_item"] = median_time(chunk1, args.repeat) / args.chunk1_items

        def applies():
            for i in range(args.applies):
                assert pool.apply(square, (i,)) == i * i

        out["apply_round_trip"] = median_time(applies, args.repeat) / args.applies

    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
