"""Real-format marketplace data made from real photos: a Shopee-style CSV export and the SQL product schema."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import imagehash
import sqlalchemy as sa
from PIL import Image


def photos(root: Path, classes: int, per_class: int) -> dict[str, list[Path]]:
    folders = sorted(p for p in root.iterdir() if p.is_dir())[:classes]
    return {folder.name: sorted(folder.glob("*.jpg"))[:per_class] for folder in folders}


def make_shopee(out: Path, source: Path, classes: int = 4, per_class: int = 6, with_phash: bool = True) -> dict:
    """train.csv + train_images/ like Shopee's export. Per class: distinct real photos, plus one exact duplicate
    (identical bytes under another name) and one near duplicate (re-encoded at half size, lower quality).
    Returns what was planted."""
    images = out / "train_images"
    images.mkdir(parents=True)
    rows, planted = [], {"exact": [], "near": []}
    for c, (name, paths) in enumerate(photos(source, classes, per_class).items()):
        group = str(1000 + c)
        for i, path in enumerate(paths):
            target = images / f"{name}_{i}.jpg"
            shutil.copyfile(path, target)
            rows.append((f"p{c}_{i}", target.name, group))
        copy = images / f"{name}_copy.jpg"
        shutil.copyfile(paths[0], copy)
        rows.append((f"p{c}_copy", copy.name, group))
        planted["exact"].append((f"p{c}_0", f"p{c}_copy"))
        near = images / f"{name}_near.jpg"
        image = Image.open(paths[1]).convert("RGB")
        image.resize((image.width // 2, image.height // 2)).save(near, quality=60)
        rows.append((f"p{c}_near", near.name, group))
        planted["near"].append((f"p{c}_1", f"p{c}_near"))
    with open(out / "train.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["posting_id", "image", "image_phash", "title", "label_group"])
        for posting, image, group in rows:
            phash = str(imagehash.phash(Image.open(images / image))) if with_phash else ""
            writer.writerow([posting, image, phash, f"title of {posting}", group])
    return planted


def schema(metadata: sa.MetaData, label: str = "Category", extra: tuple[str, ...] = ()) -> dict[str, sa.Table]:
    return {
        "Product": sa.Table("Product", metadata, sa.Column("Id", sa.Integer, primary_key=True),
                            sa.Column("Title", sa.Text), sa.Column(label, sa.Text),
                            *[sa.Column(name, sa.Text) for name in extra]),
        "Image": sa.Table("Image", metadata, sa.Column("Id", sa.Integer, primary_key=True), sa.Column("Url", sa.Text)),
        "ProductImages": sa.Table("ProductImages", metadata, sa.Column("ProductId", sa.Integer),
                                  sa.Column("ImageId", sa.Integer), sa.Column("ImageIndex", sa.Integer)),
        "ProductDescription": sa.Table("ProductDescription", metadata, sa.Column("ProductId", sa.Integer),
                                       sa.Column("CountryCode", sa.Text), sa.Column("OriginalText", sa.Text),
                                       sa.Column("TranslatedText", sa.Text)),
    }


def write_product_db(engine: sa.Engine, products: list[dict], label: str = "Category",
                     extra: tuple[str, ...] = ()) -> None:
    """products: {id, title, label, images: [(image id, url, index)], descriptions: [(country, original,
    translated)], and a value (or None) for each `extra` Product column}; bulk inserts with bound parameters."""
    metadata = sa.MetaData()
    tables = schema(metadata, label, extra)
    metadata.drop_all(engine)
    metadata.create_all(engine)
    with engine.begin() as connection:
        if products:
            connection.execute(tables["Product"].insert(), [{"Id": p["id"], "Title": p["title"], label: p["label"],
                                                            **{name: p.get(name) for name in extra}}
                                                           for p in products])
        images = [(p["id"], *image) for p in products for image in p["images"]]
        if images:
            connection.execute(tables["Image"].insert(), [{"Id": i, "Url": url} for _, i, url, _ in images])
            connection.execute(tables["ProductImages"].insert(), [{"ProductId": p, "ImageId": i, "ImageIndex": k}
                                                                  for p, i, _, k in images])
        descriptions = [{"ProductId": p["id"], "CountryCode": c, "OriginalText": o, "TranslatedText": t}
                        for p in products for c, o, t in p.get("descriptions", [])]
        if descriptions:
            connection.execute(tables["ProductDescription"].insert(), descriptions)


def jpeg_bytes(path: Path) -> bytes:
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, "JPEG")
    return buffer.getvalue()
