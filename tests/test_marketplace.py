"""Marketplace CSV exports (duplicates exact and near) and SQL product databases (SQLite and a real PostgreSQL),
with image URLs served by a local HTTP server (slow, 404, HTML, oversized, flaky) and path-traversal attempts."""

from __future__ import annotations

import csv
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from conftest import shared
from marketplace_data import make_shopee, write_product_db

from catalens import CatalensError
from catalens.data import DataOptions, load_catalog
from catalens.data.identity import all_pairs, near_pairs


def stats(spec, *args):
    result = subprocess.run([sys.executable, "-m", "catalens.cli", "catalog", "stats", spec, "--json", *args],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# -- duplicate search ----------------------------------------------------------------------------------------
def test_multi_index_hashing_finds_exactly_the_all_pairs_answer():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**62, 3000, dtype=np.int64).astype(np.uint64)
    for k in range(300):  # plant near copies at 0..8 bits
        value = int(hashes[k])
        for bit in rng.choice(64, k % 9, replace=False):
            value ^= 1 << int(bit)
        hashes[1000 + k] = value
    for distance in (0, 3, 6, 8):
        expected = all_pairs(hashes, distance)
        assert np.array_equal(near_pairs(hashes, distance), expected)
        assert len(expected) >= 300 * min(distance + 1, 9) // 9
    with pytest.raises(CatalensError, match="--max-distance"):
        near_pairs(hashes, 40)


# -- CSV -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shopee(tmp_path_factory):
    root = tmp_path_factory.mktemp("shopee")
    planted = make_shopee(root, shared("clothing-small/train"))
    return root, planted


def test_shopee_csv_with_dedupe_and_top_groups(shopee):
    root, planted = shopee
    spec = f"csv:{root / 'train.csv'}"
    plain = load_catalog(spec, split=False)
    assert len(plain) == 32 and len(plain.classes) == 4 and plain.table["title"].str.startswith("title of").all()
    deduped = load_catalog(spec, DataOptions(dedupe=True), split=False)
    report = deduped.report
    assert report["removed_exact"] == 4 and report["removed_near"] == 4 and len(deduped) == 24
    clusters = [set(cluster) for cluster in report["clusters"]]
    for pair in planted["exact"] + planted["near"]:
        assert any(set(pair) <= cluster for cluster in clusters)
    assert not any(p.endswith(("_copy", "_near")) for p in deduped.table["item_id"])  # the first one is kept
    top = stats(spec, "--top-groups", "2", "--dedupe", "--no-verify")
    assert top["classes"] == 2 and top["items"] == 12 and top["removed_exact"] == 2


def test_phash_computed_when_the_csv_has_none(tmp_path):
    make_shopee(tmp_path, shared("clothing-small/train"), classes=2, with_phash=False)
    catalog = load_catalog(f"csv:{tmp_path / 'train.csv'}", DataOptions(dedupe=True), split=False)
    assert catalog.report["removed_exact"] == 2 and catalog.report["removed_near"] == 2


def test_csv_columns_malformed_rows_and_traversal(tmp_path):
    make_shopee(tmp_path, shared("clothing-small/train"), classes=2, per_class=3)
    rows = list(csv.reader(open(tmp_path / "train.csv")))
    rows[0] = ["id", "file", "hash", "name", "category"]
    rows[1][2] = "not-a-hash"
    rows.append(["evil", "../../../etc/passwd", "", "x", "1000"])
    rows.append(["broken", "a.jpg", "", "x", "1000", "one field too many"])
    with open(tmp_path / "other.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    spec = f"csv:{tmp_path / 'other.csv'}"
    with pytest.raises(CatalensError, match="lacks column.*image.*it has: id, file"):
        load_catalog(spec, split=False)
    mapping = "posting_id=id,image=file,image_phash=hash,title=name,label_group=category"
    catalog = load_catalog(spec, DataOptions(columns=mapping, images=str(tmp_path / "train_images")), split=False)
    assert len(catalog) == 10 and "evil" not in set(catalog.table["item_id"])
    reasons = {p["reason"] for p in catalog.problems}
    assert any("leaves the image folder" in r for r in reasons) and any("malformed row" in r for r in reasons)
    deduped = load_catalog(spec, DataOptions(columns=mapping, images=str(tmp_path / "train_images"), dedupe=True),
                           split=False)
    assert deduped.report["removed_exact"] == 2 and deduped.report["removed_near"] == 2
    assert any("not-a-hash" in p["reason"] for p in deduped.problems)
    by_title = load_catalog(spec, DataOptions(columns=mapping, label_column="name",
                                              images=str(tmp_path / "train_images")), split=False)
    assert by_title.classes[0] == "title of p0_0"


# -- a local HTTP server for image URLs -----------------------------------------------------------------------
class ImageServer(http.server.ThreadingHTTPServer):
    daemon_threads = True


def serve(photo: Path):
    data = photo.read_bytes()
    calls = {"flaky": 0, "all": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, status, body, kind="image/jpeg", length=None):
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(length if length is not None else len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802 - the http.server API
            calls["all"] += 1
            if self.path.startswith("/ok/"):
                self.reply(200, data)
            elif self.path == "/html":
                self.reply(200, b"<!DOCTYPE html><html><body>login</body></html>", "text/html")
            elif self.path == "/big":
                self.reply(200, b"\xff\xd8" + b"\0" * 1024, length=50 * 1024 * 1024)
            elif self.path == "/slow":
                time.sleep(3)
                self.reply(200, data)
            elif self.path == "/flaky":  # busy, then rate-limited, then fine: both are retried
                calls["flaky"] += 1
                if calls["flaky"] <= 2:
                    self.reply(503 if calls["flaky"] == 1 else 429, b"busy", "text/plain")
                else:
                    self.reply(200, data)
            else:
                self.reply(404, b"not found", "text/plain")

    server = ImageServer(("127.0.0.1", 0), Handler)
    server.calls = calls
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


# -- SQL: SQLite and a real PostgreSQL (the `postgres` fixture is in conftest.py) ------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'products.db'}"
    return request.getfixturevalue("postgres")


def catalog_products(root: Path, base_url: str) -> list[dict]:
    photo = sorted(shared("clothing-small/train/shoes").glob("*.jpg"))[0]
    (root / "images").mkdir(exist_ok=True)
    (root / "images" / "shoe.jpg").write_bytes(photo.read_bytes())
    (root / "images" / "other.jpg").write_bytes(sorted(photo.parent.glob("*.jpg"))[1].read_bytes())
    us = [("us", "chaussure", "shoe"), ("fr", "chaussure fr", None)]
    return [  # image ids differ from product ids: joining the wrong keys would pick other images
        {"id": 1, "title": "Shoe", "label": "shoes", "images": [(101, "shoe.jpg", 0), (102, "other.jpg", 1)],
         "descriptions": us},
        {"id": 2, "title": "Boot", "label": "shoes", "images": [(103, "other.jpg", 0)],
         "descriptions": [("us", "botte", None)]},
        {"id": 3, "title": "No cover image", "label": "shoes", "images": [(104, "shoe.jpg", 1)]},
        {"id": 4, "title": "No description", "label": "bags", "images": [(105, f"{base_url}/ok/a.jpg", 0)]},
        {"id": 5, "title": "Traversal", "label": "bags", "images": [(106, "../../../../etc/passwd", 0)]},
        {"id": 6, "title": "Missing", "label": "bags", "images": [(107, f"{base_url}/missing.jpg", 0)]},
        {"id": 7, "title": "HTML", "label": "bags", "images": [(108, f"{base_url}/html", 0)]},
        {"id": 8, "title": "Huge", "label": "bags", "images": [(109, f"{base_url}/big", 0)]},
        {"id": 9, "title": "Slow", "label": "bags", "images": [(110, f"{base_url}/slow", 0)]},
        {"id": 10, "title": "Flaky", "label": "bags", "images": [(111, f"{base_url}/flaky", 0)]},
    ]


def test_sql_products_images_descriptions_and_bad_urls(database, tmp_path, monkeypatch):
    server, base_url = serve(sorted(shared("clothing-small/train/skirt").glob("*.jpg"))[0])
    monkeypatch.setenv("CATALENS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CATALENS_DOWNLOAD_TIMEOUT", "0.5")
    monkeypatch.setenv("CATALENS_DOWNLOAD_RETRIES", "2")
    try:
        write_product_db(sa.create_engine(database), catalog_products(tmp_path, base_url))
        refused = load_catalog(database, DataOptions(label_column="Category", images=str(tmp_path / "images")),
                               split=False)  # image URLs on 127.0.0.1 are inside the network: not fetched
        assert server.calls["all"] == 0
        catalog = load_catalog(database, DataOptions(label_column="Category", images=str(tmp_path / "images"),
                                                     allow_private_urls=True), split=False)  # the intranet opt-in
    finally:
        server.shutdown()
    assert "inside the network" in {p["ref"].split()[1]: p["reason"] for p in refused.problems}["4"]
    table = catalog.table.set_index("item_id")
    assert sorted(table.index, key=int) == ["1", "2", "4", "10"]
    assert table.loc["1", "ref"].endswith("shoe.jpg") and table.loc["2", "ref"].endswith("other.jpg")
    assert table.loc["1", "description"] == "shoe" and table.loc["2", "description"] == "botte"
    assert table.loc["4", "description"] == "" and table.loc["4", "title"] == "No description"
    assert Path(table.loc["4", "ref"]).is_relative_to(tmp_path / "cache")  # downloaded, content-addressed
    assert table.loc["1", "label"] == "shoes" and catalog.classes == ["bags", "shoes"]
    assert catalog.report["products_without_image"] == 1
    reasons = {p["ref"].split()[1]: p["reason"] for p in catalog.problems}
    assert "leaves the image root" in reasons["5"] and "pass --images" in reasons["5"]
    assert reasons["6"].startswith("HTTP 404")
    assert "HTML" in reasons["7"] and "limit" in reasons["8"] and "timed out" in reasons["9"]
    assert all(catalog.read(row).size for row in range(len(catalog)))
    unlabelled = load_catalog(database, DataOptions(images=str(tmp_path / "images")), split=False)  # for predict
    assert unlabelled.classes == [] and set(unlabelled.table["label"]) == {""} and len(unlabelled) == 4
    if database.startswith("sqlite"):
        out = tmp_path / "export.csv"
        result = subprocess.run([sys.executable, "-m", "catalens.cli", "catalog", "export", database, "--label-column",
                                 "Category", "--images", str(tmp_path / "images"), "--out", str(out)],
                                capture_output=True, text=True, env={**os.environ, "CATALENS_DOWNLOAD_RETRIES": "0"})
        assert result.returncode == 0, result.stderr
        header = out.read_text().splitlines()[0]
        assert header == "image,label,product_id,title,description"


def test_sql_errors_are_one_line(database, tmp_path):
    write_product_db(sa.create_engine(database), [])
    with pytest.raises(CatalensError, match="lacks column.*Brand.*choose the label"):
        load_catalog(database, DataOptions(label_column="Brand"), split=False)
    with pytest.raises(CatalensError, match="no table 'Items'"):
        load_catalog(database, DataOptions(label_column="Category", columns="Product=Items"), split=False)
    with pytest.raises(CatalensError, match="no usable products"):
        load_catalog(database, DataOptions(label_column="Category"), split=False)


def test_sql_targets_are_product_columns(database, tmp_path):
    """Issue 30: --targets reads Product columns (the first is the label); a NULL or empty value is kept as
    missing for that target only; an unknown column or a clashing --label-column is one line."""
    from catalens.data.targets import column

    photos = sorted(shared("clothing-small/train/shoes").glob("*.jpg"))[:3]
    (tmp_path / "images").mkdir()
    for i, photo in enumerate(photos):
        (tmp_path / "images" / f"{i}.jpg").write_bytes(photo.read_bytes())
    colours, genders = ["Black", "White", "Black"], ["Men", None, " "]
    write_product_db(sa.create_engine(database), [
        {"id": i + 1, "title": f"Shoe {i}", "label": "shoes", "images": [(100 + i, f"{i}.jpg", 0)],
         "Colour": colours[i], "Gender": genders[i]} for i in range(3)], extra=("Colour", "Gender"))
    catalog = load_catalog(database, DataOptions(targets="Category,Colour,Gender", images=str(tmp_path / "images")),
                           split=False)
    table = catalog.table.set_index("item_id").loc[["1", "2", "3"]]
    assert list(table[column("Category")]) == list(table["label"]) == ["shoes"] * 3
    assert list(table[column("Colour")]) == colours and list(table[column("Gender")]) == ["Men", "", ""]
    with pytest.raises(CatalensError, match="--targets: table Product has no column 'Size'; its columns are: "
                                            "Category, Colour, Gender, Id, Title"):
        load_catalog(database, DataOptions(targets="Category,Size"), split=False)
    with pytest.raises(CatalensError, match="the first target is the label"):
        load_catalog(database, DataOptions(targets="Colour,Category", label_column="Category"), split=False)


def test_unreachable_database_and_missing_file(tmp_path):
    with pytest.raises(CatalensError, match="database file .* does not exist"):
        load_catalog(f"sqlite:///{tmp_path / 'nope.db'}", DataOptions(label_column="x"), split=False)
    with socket_closed_port() as port:
        with pytest.raises(CatalensError, match="cannot connect to") as failure:
            load_catalog(f"postgresql+psycopg://shop:s3cret@127.0.0.1:{port}/shop", DataOptions(label_column="x"),
                         split=False)
    assert "s3cret" not in str(failure.value) and "***" in str(failure.value)


class socket_closed_port:  # noqa: N801 - used as a context manager
    def __enter__(self):
        from postgres_server import free_port

        return free_port()

    def __exit__(self, *exc):
        return False
