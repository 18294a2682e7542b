"""SQL product databases through SQLAlchemy: `sqlite:///FILE` (embedded) or `postgresql+psycopg://user@host/db`.

Default schema (names configurable with --columns, e.g. `Product=items,Product.Title=name`):

    Product(Id, Title, <label column>, ...)        Image(Id, Url)
    ProductImages(ProductId, ImageId, ImageIndex)  ProductDescription(ProductId, CountryCode, OriginalText,
                                                                      TranslatedText)

`--targets Category,Colour,Gender` reads one Product column per target (the first is the label, as
--label-column: a product without it is left out, listed); an empty or NULL value of another target trains the
other targets only.

Per product: its title, the image with ImageIndex = 0 (the most relevant), and its 'us' description
(TranslatedText when present, else OriginalText). Products without an index-0 image are left out and counted;
products without a description keep an empty one. Rows are streamed (server-side cursor), never loaded whole;
every value reaches the database as a bound parameter and every name is quoted by SQLAlchemy.
Image URLs are paths under the image root (`--images`, default the SQLite file's folder or the working folder;
nothing outside it is read) or http(s) URLs, downloaded into a content-addressed cache.
"""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from catalens.data.catalog import Catalog
from catalens.data.download import Downloader
from catalens.data.options import DataOptions
from catalens.data.sources.folder import FileReader, ImageRoot
from catalens.data.sources.marketplace_csv import parse_columns
from catalens.data.targets import column, label_column_of, parse_names
from catalens.errors import CatalensError
from catalens.progress import make_progress

TABLES = {"Product": ["Id", "Title"], "Image": ["Id", "Url"], "ProductImages": ["ProductId", "ImageId", "ImageIndex"],
          "ProductDescription": ["ProductId", "CountryCode", "OriginalText", "TranslatedText"]}
DEFAULT_NAMES = {**{name: name for name in TABLES},
                 **{f"{table}.{column}": column for table, columns in TABLES.items() for column in columns}}
COUNTRY = "us"
STREAM_ROWS = 5000


def public_url(url) -> str:
    return url.render_as_string(hide_password=True)


def connect(spec: str, create: bool = False) -> sa.Engine:
    """An engine for the URL, with one-line errors for a bad URL, a missing SQLite file (unless `create`) or an
    unreachable server."""
    try:
        url = make_url(spec)
    except (sa.exc.ArgumentError, ValueError) as error:
        raise CatalensError(f"cannot parse database URL {spec.split('@')[-1]!r}: {error}") from error
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            raise CatalensError("give the SQLite file: sqlite:///path/to/products.db")
        if create:
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        elif not Path(url.database).is_file():
            raise CatalensError(f"database file {url.database} does not exist")
    try:
        engine = sa.create_engine(url)
        with engine.connect():
            pass
    except sa.exc.NoSuchModuleError as error:
        raise CatalensError(f"no driver for {url.drivername}; use sqlite:///FILE or postgresql+psycopg://...") \
            from error
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as error:
        reason = str(getattr(error, "orig", error)).strip().splitlines()[0]
        raise CatalensError(f"cannot connect to {public_url(url)}: {reason}") from error
    return engine


def check_schema(engine: sa.Engine, names: dict[str, str], label_column: str | None,
                 targets: list[str] = ()) -> None:
    inspector = sa.inspect(engine)
    tables = set(inspector.get_table_names())
    for table, columns in TABLES.items():
        actual = names[table]
        if actual not in tables:
            raise CatalensError(f"the database has no table {actual!r} (tables: {', '.join(sorted(tables)) or 'none'})"
                                f"; map yours with --columns {table}=NAME")
        present = {column["name"] for column in inspector.get_columns(actual)}
        wanted = [names[f"{table}.{column}"] for column in columns]
        wanted += [label_column] if table == "Product" and label_column else []
        missing = [column for column in wanted if column not in present]
        unknown = [name for name in targets if name not in present] if table == "Product" else []
        if unknown:
            raise CatalensError(f"--targets: table {actual} has no column {', '.join(map(repr, unknown))}; its "
                                f"columns are: {', '.join(sorted(present))}")
        if missing:
            hint = ("choose the label with --label-column" if label_column in missing
                    else f"map yours with --columns {table}.COLUMN=NAME")
            raise CatalensError(f"table {actual} lacks column(s) {', '.join(missing)} "
                                f"(it has {', '.join(sorted(present))}); {hint}")


def product_query(names: dict[str, str], label_column: str | None, targets: list[str] = ()) -> sa.Select:
    def table(key: str):
        columns = [names[f"{key}.{column}"] for column in TABLES[key]]
        if key == "Product":
            columns += ([label_column] if label_column else []) + list(targets)
        return sa.table(names[key], *[sa.column(name) for name in dict.fromkeys(columns)]).alias(key.lower())

    product, image, links, description = (table(key) for key in TABLES)
    return (
        sa.select(product.c[names["Product.Id"]].label("id"), product.c[names["Product.Title"]].label("title"),
                  (product.c[label_column] if label_column else sa.null()).label("label"),
                  image.c[names["Image.Url"]].label("url"),
                  description.c[names["ProductDescription.TranslatedText"]].label("translated"),
                  description.c[names["ProductDescription.OriginalText"]].label("original"),
                  *[product.c[name].label(f"target{i}") for i, name in enumerate(targets)])
        .select_from(
            product.join(links, sa.and_(links.c[names["ProductImages.ProductId"]] == product.c[names["Product.Id"]],
                                        links.c[names["ProductImages.ImageIndex"]] == 0))
            .join(image, image.c[names["Image.Id"]] == links.c[names["ProductImages.ImageId"]])
            .outerjoin(description, sa.and_(
                description.c[names["ProductDescription.ProductId"]] == product.c[names["Product.Id"]],
                description.c[names["ProductDescription.CountryCode"]] == sa.bindparam("country"))))
        .order_by(product.c[names["Product.Id"]], image.c[names["Image.Id"]])
    )


def read_products(engine: sa.Engine, names: dict[str, str], label_column: str | None,
                  targets: list[str] = ()) -> tuple[dict, int, int]:
    """Streamed rows -> per-product columns (each target's as `target0`, ...); also the number of products and of
    extra rows dropped."""
    columns = {"id": [], "title": [], "label": [], "url": [], "description": [],
               **{f"target{i}": [] for i in range(len(targets))}}
    last = object()
    extra = 0
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":  # plan for all rows: a cursor's default plans for the first 10 %
            connection.exec_driver_sql("SET cursor_tuple_fraction = 1.0")
        total = connection.execute(sa.select(sa.func.count()).select_from(sa.table(names["Product"]))).scalar_one()
        result = connection.execution_options(stream_results=True, yield_per=STREAM_ROWS).execute(
            product_query(names, label_column, targets), {"country": COUNTRY})
        with make_progress() as bar:
            task = bar.add_task("reading products", total=total)
            for rows in result.partitions():
                for row in rows:
                    if row.id == last:  # a second index-0 image or a second 'us' description: first one wins
                        extra += 1
                        continue
                    last = row.id
                    columns["id"].append(str(row.id))
                    columns["title"].append(row.title or "")
                    columns["label"].append("" if row.label is None else str(row.label))
                    columns["url"].append(row.url or "")
                    columns["description"].append(row.translated or row.original or "")
                    for i in range(len(targets)):
                        value = getattr(row, f"target{i}")
                        columns[f"target{i}"].append("" if value is None else str(value).strip())
                bar.update(task, completed=len(columns["id"]))
    return columns, int(total), extra


def open_sql(spec: str, verify: bool = False, options=None) -> Catalog:

    options = options or DataOptions()
    names = parse_columns(options.columns, DEFAULT_NAMES)
    targets = parse_names(options.targets) if options.targets else []
    label_column = label_column_of(options.label_column, targets)
    engine = connect(spec)
    url = engine.url
    try:
        check_schema(engine, names, label_column, targets)
        columns, total, extra = read_products(engine, names, label_column, targets)
    except sa.exc.SQLAlchemyError as error:
        reason = str(getattr(error, "orig", error)).strip().splitlines()[0]
        raise CatalensError(f"query on {public_url(url)} failed: {reason}") from error
    finally:
        engine.dispose()
    if options.images:
        root = Path(options.images).expanduser()
    else:
        root = Path(url.database).resolve().parent if url.get_backend_name() == "sqlite" else Path.cwd()
    refs, problems = resolve_images(columns["id"], columns["url"], root, options.allow_private_urls)
    labelled = bool(label_column)
    keep = [i for i, ref in enumerate(refs) if ref and (columns["label"][i] or not labelled)]
    problems += [{"ref": f"product {columns['id'][i]}", "reason": "no label"} for i, ref in enumerate(refs)
                 if ref and labelled and not columns["label"][i]]
    missing_image = total - len(columns["id"])
    notes = [f"{total:,} products in {names['Product']}; {missing_image:,} without an image of index 0 left out"]
    if not labelled:
        notes.append("no --label-column given: the products are unlabelled (fine for predict; give "
                     "--label-column NAME to train or evaluate)")
    if extra:
        notes.append(f"{extra} extra rows (a second index-0 image or 'us' description) ignored")
    if not keep:
        raise CatalensError(f"no usable products in {public_url(url)}"
                            + (f"; e.g. {problems[0]['ref']}: {problems[0]['reason']}" if problems else ""))
    labels = [columns["label"][i] for i in keep]
    catalog = Catalog.from_records(
        {"item_id": [columns["id"][i] for i in keep], "ref": [refs[i] for i in keep], "label": labels,
         "title": [columns["title"][i] for i in keep], "description": [columns["description"][i] for i in keep],
         **{column(name): [columns[f"target{t}"][i] for i in keep] for t, name in enumerate(targets)}},
        classes=sorted(set(labels) - {""}), reader=FileReader("/"), source=public_url(url), problems=problems,
        notes=notes,
    )
    catalog.report = {"products_without_image": missing_image}
    if verify:
        from catalens.data.sources.folder import drop_unreadable

        catalog = drop_unreadable(catalog)
    return catalog


def resolve_images(ids: list[str], urls: list[str], root: Path,
                   allow_private: bool = False) -> tuple[list[str | None], list[dict]]:
    """Absolute local paths for every product's image (downloaded when a URL), or None with a problem."""
    refs: list[str | None] = [None] * len(urls)
    problems = []
    remote = [i for i, url in enumerate(urls) if url.lower().startswith(("http://", "https://"))]
    if remote:
        with make_progress() as bar:
            task = bar.add_task("downloading images", total=len(remote))
            fetched = Downloader(allow_private=allow_private).fetch_all([urls[i] for i in remote],
                                                                        lambda: bar.advance(task))
        for i in remote:
            result = fetched[urls[i]]
            if result.path:
                refs[i] = str(result.path)
            else:
                problems.append({"ref": f"product {ids[i]} ({urls[i]})", "reason": result.error})
    remote_rows = set(remote)
    guard = ImageRoot(root)
    for i, url in enumerate(urls):
        if i in remote_rows:
            continue
        path = guard.resolve(url.removeprefix("file://")) if url else None
        if not url:
            reason = "empty image URL"
        elif path is None:
            reason = outside_root_reason(url.removeprefix("file://"), root)
        elif not os.path.isfile(path):
            reason = "image file not found"
        else:
            refs[i] = path
            continue
        problems.append({"ref": f"product {ids[i]} ({url})", "reason": reason})
    return refs, problems


def outside_root_reason(path: str, root: Path) -> str:
    """Why an image path outside the image root is not read, and what to pass instead."""
    folder = os.path.dirname(path) if os.path.isabs(path) else "FOLDER"
    return (f"image path leaves the image root {root}; not read: pass --images {folder or '/'} (the folder that "
            "holds the catalog's images) to read it")
