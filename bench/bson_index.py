"""BSON dumps at scale: the index pass against a full `bson.decode_file_iter` pass over the same generated file,
peak memory of each (separate processes), random-access image reads, index size; extrapolated to the real
58.2 GB train.bson.

    python bench/bson_index.py --size 2GB [--file /tmp/bench.bson] [--record]

The file is generated once (real clothing photos as 180x180 JPEGs, the real category tree) and reused.
Both passes run on a warm page cache (the file was just written or read), in fresh processes, best of --repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import SHARED, record

REAL_FILE_BYTES = 58.2e9  # CDiscount train.bson
REAL_PRODUCTS = 7_069_896

INDEX = """
import json, resource, sys, time
from pathlib import Path
from catalens.data.sources.bson_index import build_index
path, threads = Path(sys.argv[1]), int(sys.argv[2])
build_index(path, Path(sys.argv[3]), show_progress=False, threads=threads)  # warm-up: loads the compiled walk
started = time.perf_counter()
index = build_index(path, Path(sys.argv[3]), show_progress=False, threads=threads)
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "products": len(index.records), "images": int(index.records["images"].sum()),
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

DECODE = """
import json, resource, sys, time, bson
started = time.perf_counter()
products = images = 0
with open(sys.argv[1], "rb") as handle:
    for document in bson.decode_file_iter(handle):
        products += 1
        images += len(document["imgs"])
print(json.dumps({"seconds": time.perf_counter() - started, "products": products, "images": images,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

READS = """
import json, sys, time
import numpy as np
from multiprocessing import Pool
from catalens.data.sources.bson_index import open_index
from catalens.data.sources.bson_dump import IMAGES_PER_REF, BsonReader
path, count, workers, decode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "decode"
records = open_index(path, show_progress=False).records
rng = np.random.default_rng(0)
rows = rng.integers(0, len(records), count)
refs = records["offset"][rows] * IMAGES_PER_REF + rng.integers(0, records["images"][rows])
reader = BsonReader(path)

def read(part):
    for ref in part:
        if decode:
            reader.read(int(ref)).load()
        else:
            reader.picture(int(ref))
    return len(part)

started = time.perf_counter()
if workers == 1:
    done = read(refs)
else:
    with Pool(workers) as pool:
        done = sum(pool.map(read, np.array_split(refs, workers * 4)))
print(json.dumps({"images_per_s": done / (time.perf_counter() - started)}))
"""


def run_json(code: str, *args) -> dict:
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def best(code: str, repeat: int, *args) -> dict:
    runs = [run_json(code, *args) for _ in range(repeat)]
    return min(runs, key=lambda run: run["seconds"]) | {"peak_mb": max(run["peak_mb"] for run in runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="2GB")
    parser.add_argument("--file", default="/tmp/catalens-bench/train.bson")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--reads", type=int, default=20000)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()

    from catalens.data.bson_generate import generate_bson, parse_size

    path = Path(args.file)
    if not path.exists() or path.stat().st_size < parse_size(args.size):
        started = time.perf_counter()
        generate_bson(path, SHARED / "clothing-small" / "train", SHARED / "cdiscount" / "category_names.csv",
                      size=args.size, classes=500)
        print(f"generated {path} in {time.perf_counter() - started:.0f} s")
    size = path.stat().st_size
    scratch = path.with_name("bench.catalens-index")

    decode = best(DECODE, args.repeat, path)
    two = best(INDEX, args.repeat, path, os.cpu_count() or 1, scratch)
    one = best(INDEX, args.repeat, path, 1, scratch)
    assert one["products"] == two["products"] == decode["products"] and one["images"] == decode["images"]
    reads = {(mode, workers): run_json(READS, path, args.reads, workers, mode)["images_per_s"]
             for mode in ("bytes", "decode") for workers in (1, os.cpu_count() or 1)}
    index_mb = scratch.stat().st_size / 1e6
    per_million = index_mb / two["products"] * 1e6
    extrapolated = two["seconds"] * REAL_FILE_BYTES / size

    print(f"file {size / 1e9:.2f} GB, {decode['products']:,} products, {decode['images']:,} images")
    print(f"decode_file_iter pass : {decode['seconds']:.3f} s, peak {decode['peak_mb']:.0f} MB")
    print(f"index pass, {os.cpu_count()} threads: {two['seconds']:.3f} s ({decode['seconds'] / two['seconds']:.1f}x), "
          f"peak {two['peak_mb']:.0f} MB")
    print(f"index pass, 1 thread  : {one['seconds']:.3f} s ({decode['seconds'] / one['seconds']:.1f}x), "
          f"peak {one['peak_mb']:.0f} MB")
    for (mode, workers), rate in reads.items():
        print(f"random reads ({mode}, {workers} process(es)): {rate:,.0f} images/s")
    print(f"index size {index_mb:.1f} MB = {per_million:.0f} MB per million products; "
          f"58.2 GB train.bson extrapolated: {extrapolated:.0f} s")
    scratch.unlink()
    scratch.with_name(scratch.name + ".json").unlink(missing_ok=True)
    if args.record:
        cores = os.cpu_count()
        record([
            f"generated {size / 1e9:.2f} GB BSON ({decode['products']:,} products, {decode['images']:,} images, "
            f"warm page cache): index pass **{two['seconds']:.2f} s with {cores} threads = "
            f"{decode['seconds'] / two['seconds']:.1f}x** faster than a full `bson.decode_file_iter` pass "
            f"({decode['seconds']:.2f} s); 1 thread {one['seconds']:.2f} s = "
            f"{decode['seconds'] / one['seconds']:.1f}x; "
            f"peak memory (max RSS of the process) index {two['peak_mb']:.0f} MB vs decode {decode['peak_mb']:.0f} MB",
            f"random-access reads from the same file: picture bytes {reads[('bytes', 1)]:,.0f}/s (1 process), "
            f"{reads[('bytes', cores)]:,.0f}/s ({cores}); decoded to RGB {reads[('decode', 1)]:,.0f}/s (1), "
            f"**{reads[('decode', cores)]:,.0f}/s ({cores})**; index {per_million:.0f} MB per million products; "
            f"58.2 GB train.bson extrapolated index pass ~{extrapolated:.0f} s (warm cache; cold, it is bound by "
            f"the disk)",
        ])


if __name__ == "__main__":
    main()
