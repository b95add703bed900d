"""The seed's word count with multiprocessing.Pool: the reference mproc wordcount matches.

A word is what this counts: split each line on whitespace, lower-case, take the first
match of [a-z-]+. Prints every word used more than --min-count times, alphabetically,
as "word == count"; the time goes to stderr.

    python3 countwords.py [-j N] [--min-count N] PATH...
"""
import argparse
import os
import re
import sys
import time
from multiprocessing import Pool

WORD = re.compile(r"[a-z-]+")


def count_words(filename):
    counts = {}
    with open(filename, encoding="utf-8") as f:
        for line in f:
            for token in line.split():
                m = WORD.search(token.lower())
                if m:
                    w = m.group(0)
                    counts[w] = counts.get(w, 0) + 1
    return counts


def files_under(paths):
    for p in paths:
        if os.path.isdir(p):
            for root, _, names in os.walk(p):
                for n in sorted(names):
                    yield os.path.join(root, n)
        else:
            yield p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-j", "--workers", type=int, default=os.cpu_count())
    ap.add_argument("--min-count", type=int, default=2000)
    ap.add_argument("paths", nargs="+")
    args = ap.parse_args()
    files = sorted(files_under(args.paths))
    start = time.perf_counter()
    with Pool(args.workers) as pool:
        partials = pool.map(count_words, files)
    total = {}
    for part in partials:
        for w, c in part.items():
            total[w] = total.get(w, 0) + c
    elapsed = time.perf_counter() - start
    for w in sorted(total):
        if total[w] > args.min_count:
            print(f"{w} == {total[w]}")
    print(f"python countwords: {len(files)} files, {elapsed:.3f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
