"""Marketplace sources at scale, each against a baseline in the same run:

1. importing 100,000 products from a real PostgreSQL (a throw-away server on 127.0.0.1), streamed, against
   pandas.read_sql of the same query (everything loaded at once);
2. near-duplicate search over 100,000 perceptual hashes (multi-index hashing) against the naive all-pairs scan;
3. downloading image URLs from a local HTTP server with 16 concurrent connections against one at a time.

    python bench/marketplace.py [--products 100000] [--hashes 100000] [--urls 400] [--record]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
from common import REPO, SHARED, record

sys.path.insert(0, str(REPO / "tests"))
from marketplace_data import write_product_db  # noqa: E402
from postgres_server import PostgresServer  # noqa: E402

from catalens.data import DataOptions, load_catalog  # noqa: E402
from catalens.data.download import Downloader  # noqa: E402
from catalens.data.identity import all_pairs, near_pairs  # noqa: E402
from catalens.data.sources.sql import DEFAULT_NAMES, product_query  # noqa: E402


def bench_postgres(products: int, work: Path) -> dict:
    photos = sorted((SHARED / "clothing-small" / "train").glob("*/*.jpg"))[:200]
    images = work / "images"
    images.mkdir()
    for i, photo in enumerate(photos):
        shutil.copyfile(photo, images / f"{i}.jpg")
    rng = np.random.default_rng(0)
    rows = [{"id": i, "title": f"product {i}", "label": f"category {i % 50}",
             "images": [(10 * i, f"{i % len(photos)}.jpg", 0), (10 * i + 1, f"{(i + 1) % len(photos)}.jpg", 1)],
             "descriptions": [("us", f"text {i}", None if rng.random() < 0.5 else f"translated {i}")]}
            for i in range(products)]
    base = Path(tempfile.mkdtemp(prefix="catalens-bench-pg-"))
    server = PostgresServer(base / "pg")
    url = server.start()
    try:
        started = time.perf_counter()
        write_product_db(sa.create_engine(url), rows)
        print(f"wrote {products:,} products to PostgreSQL in {time.perf_counter() - started:.1f} s")
        engine = sa.create_engine(url)
        started = time.perf_counter()
        frame = pd.read_sql(product_query(DEFAULT_NAMES, "Category"), engine, params={"country": "us"})
        pandas_s = time.perf_counter() - started
        assert len(frame) == products
        started = time.perf_counter()
        catalog = load_catalog(url, DataOptions(label_column="Category", images=str(images)), split=False)
        catalens_s = time.perf_counter() - started
        assert len(catalog) == products, len(catalog)
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    return {"catalens_s": catalens_s, "pandas_s": pandas_s, "rows_per_s": products / catalens_s,
            "pandas_rows_per_s": products / pandas_s}


def bench_dedupe(count: int, distance: int) -> dict:
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**62, count, dtype=np.int64).astype(np.uint64) * np.uint64(4) + \
        rng.integers(0, 4, count).astype(np.uint64)
    for _ in range(count // 20):  # 5 % near copies, 0..distance bits apart
        value = int(hashes[rng.integers(count)])
        for bit in rng.choice(64, rng.integers(0, distance + 1), replace=False):
            value ^= 1 << int(bit)
        hashes[rng.integers(count)] = value
    started = time.perf_counter()
    fast = near_pairs(hashes, distance)
    fast_s = time.perf_counter() - started
    started = time.perf_counter()
    slow = all_pairs(hashes, distance)
    slow_s = time.perf_counter() - started
    assert np.array_equal(fast, slow)
    return {"pairs": len(fast), "mih_s": fast_s, "all_pairs_s": slow_s}


SERVER = """
import http.server, sys, time
from pathlib import Path
files = sorted(Path(sys.argv[1]).glob("*/*.jpg"))
data = [path.read_bytes() for path in files]

class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        body = data[int(self.path.strip("/").split(".")[0]) % len(data)]
        time.sleep(float(sys.argv[2]))  # server-side latency, as any real server has
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def bench_download(urls: int, work: Path, latency: float = 0.02) -> dict:
    """A separate server process (so it does not share the client's GIL) with `latency` per request."""
    folder = SHARED / "clothing-small" / "validation"
    sizes = [path.stat().st_size for path in sorted(folder.glob("*/*.jpg"))]
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(folder), str(latency)], stdout=subprocess.PIPE,
                              text=True)
    base = f"http://127.0.0.1:{server.stdout.readline().strip()}"
    megabytes = sum(sizes[i % len(sizes)] for i in range(urls)) / 1e6
    result = {}
    try:
        for workers in (1, 16):
            cache = work / f"cache-{workers}"
            started = time.perf_counter()
            fetched = Downloader(cache, workers=workers).fetch_all([f"{base}/{i}.jpg" for i in range(urls)])
            seconds = time.perf_counter() - started
            assert all(item.path for item in fetched.values()), [i.error for i in fetched.values() if i.error][:3]
            result[workers] = {"images_per_s": urls / seconds, "mb_per_s": megabytes / seconds}
    finally:
        server.terminate()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--hashes", type=int, default=100_000)
    parser.add_argument("--distance", type=int, default=6)
    parser.add_argument("--urls", type=int, default=400)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="catalens-bench-"))
    try:
        pg = bench_postgres(args.products, work)
        print(f"PostgreSQL import: {pg['rows_per_s']:,.0f} rows/s ({pg['catalens_s']:.2f} s, streamed, catalog "
              f"built); pandas.read_sql of the same query {pg['pandas_rows_per_s']:,.0f} rows/s")
        dd = bench_dedupe(args.hashes, args.distance)
        print(f"near duplicates over {args.hashes:,} hashes (<= {args.distance} bits): multi-index hashing "
              f"{dd['mih_s']:.2f} s, all pairs {dd['all_pairs_s']:.1f} s, same {dd['pairs']:,} pairs")
        dl = bench_download(args.urls, work)
        print(f"downloads: {dl[16]['images_per_s']:,.0f} images/s ({dl[16]['mb_per_s']:.1f} MB/s) with 16 "
              f"connections, {dl[1]['images_per_s']:,.0f} images/s one at a time")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.record:
        record([
            f"PostgreSQL 15 on 127.0.0.1, {args.products:,} products (index-0 image of 2, 'us' description): import "
            f"**{pg['rows_per_s']:,.0f} rows/s** ({pg['catalens_s']:.2f} s, streamed rows + path checks + catalog); "
            f"baseline pandas.read_sql of the same query, all in memory: {pg['pandas_rows_per_s']:,.0f} rows/s",
            f"near-duplicate search, {args.hashes:,} 64-bit hashes, distance <= {args.distance}: multi-index hashing "
            f"**{dd['mih_s']:.2f} s** vs naive all pairs {dd['all_pairs_s']:.1f} s ({dd['pairs']:,} pairs, identical)",
            f"image downloads from a local HTTP server (another process, 20 ms latency per request, {args.urls} "
            "clothing photos, each checked and stored by content hash): "
            f"**{dl[16]['images_per_s']:,.0f} images/s** ({dl[16]['mb_per_s']:.1f} MB/s) with 16 connections vs "
            f"{dl[1]['images_per_s']:,.0f} images/s one at a time",
        ])


if __name__ == "__main__":
    main()
