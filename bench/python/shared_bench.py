"""Python's multiprocessing Queue, Manager().dict() and Value on the workloads of
bench/compare_shared.cpp: same work, same machine. Prints one JSON object of rates
(operations per second, medians of --repeat runs).

    python3 shared_bench.py --repeat 3
"""
import argparse
import json
import statistics
import time
from multiprocessing import Manager, Process, Queue, Value


def produce(q, n):
    for i in range(n):
        q.put(i)


def queue_rate(n):
    q = Queue()
    p = Process(target=produce, args=(q, n))
    t = time.perf_counter()
    p.start()
    total = 0
    for _ in range(n):
        total += q.get()
    elapsed = time.perf_counter() - t
    p.join()
    assert total == n * (n - 1) // 2
    return n / elapsed


def dict_writer(d, worker, n, keys):
    for i in range(n):
        d["k%d" % ((i * 7 + worker) % keys)] = i


def manager_rate(n, keys):
    with Manager() as m:
        d = m.dict()
        ps = [Process(target=dict_writer, args=(d, w, n, keys)) for w in range(2)]
        t = time.perf_counter()
        for p in ps:
            p.start()
        for p in ps:
            p.join()
        elapsed = time.perf_counter() - t
        assert len(d) == keys
    return 2 * n / elapsed


def locked_adder(v, n):
    for _ in range(n):
        with v.get_lock():
            v.value += 1


def value_rate(n):
    v = Value("q", 0)
    ps = [Process(target=locked_adder, args=(v, n)) for _ in range(2)]
    t = time.perf_counter()
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    elapsed = time.perf_counter() - t
    assert v.value == 2 * n
    return 2 * n / elapsed


def median(fn, repeat):
    return statistics.median(fn() for _ in range(repeat))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--queue-messages", type=int, default=200_000)
    ap.add_argument("--dict-updates", type=int, default=20_000)
    ap.add_argument("--dict-keys", type=int, default=1_000)
    ap.add_argument("--value-adds", type=int, default=200_000)
    args = ap.parse_args()
    out = {
        "queue_small_per_s": median(lambda: queue_rate(args.queue_messages), args.repeat),
        "manager_set_per_s": median(
            lambda: manager_rate(args.dict_updates, args.dict_keys), args.repeat),
        "value_locked_add_per_s": median(lambda: value_rate(args.value_adds), args.repeat),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
