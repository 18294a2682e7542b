"""The prediction history and its corrections, through SQLAlchemy: a SQLite file by default, PostgreSQL by URL.

One row per prediction: when, the file name, the model, the top class and its probability, the top-k (JSON), a
small JPEG thumbnail, optionally the original bytes, and the label a person set when the model was wrong.
Corrections export as a labelled image folder (one subfolder per class) that `catalens train` reads directly.

Writes are off the request path: `add` takes an id from a block reserved in the database (one round trip per
`ID_BLOCK` predictions, safe with several servers on one database), answers at once, and puts the row on a bounded
queue (`QUEUE_SIZE`). One writer thread makes the thumbnails and inserts the queue in batches, one transaction each.
A full queue makes `add` wait (back-pressure, no unbounded memory). Every read (a page, a thumbnail, a correction,
the export) first waits for the rows queued before it, so a client always sees its own predictions. A clean
shutdown writes everything; a crash of the process loses at most the rows still queued: `QUEUE_SIZE` plus the one
batch being written. Ids are unique and increasing within one server, not gapless: a restart skips the rest of the
reserved block.
"""

from __future__ import annotations

import io
import json
import logging
import queue
import threading
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
from PIL import Image

from catalens.data.sources.folder import folder_name
from catalens.data.sources.sql import connect

THUMBNAIL_SIDE = 160
QUEUE_SIZE = 64  # rows waiting to be written; at most this many (plus one batch) are lost if the process dies
ID_BLOCK = 64  # ids reserved per database round trip
log = logging.getLogger("catalens.serve")
metadata = sa.MetaData()
predictions = sa.Table(
    "catalens_predictions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("filename", sa.String(255), nullable=False),
    sa.Column("model", sa.String(255), nullable=False),
    sa.Column("label", sa.String(255), nullable=False),
    sa.Column("probability", sa.Float, nullable=False),
    sa.Column("top_k", sa.Text, nullable=False),
    sa.Column("images", sa.Integer, nullable=False, default=1),
    sa.Column("thumbnail", sa.LargeBinary, nullable=False),
    sa.Column("original", sa.LargeBinary, nullable=True),
    sa.Column("corrected_label", sa.String(255), nullable=True),
    sa.Column("corrected_at", sa.DateTime(timezone=True), nullable=True),
)
id_counter = sa.Table(  # the next id to hand out, so that an id is known before its row is written
    "catalens_prediction_ids", metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("next_id", sa.BigInteger, nullable=False),
)


def thumbnail(image: Image.Image) -> bytes:
    small = image.copy()
    small.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0)
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def sqlite_pragmas(connection, _record) -> None:
    """Write-ahead log: readers never wait for the writer, and a commit does not wait for an fsync of the whole
    database (a crash of the process loses nothing; a power cut may lose the last commits)."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def utc(moment: datetime | None) -> datetime | None:
    """SQLite hands naive datetimes back: they were written in UTC."""
    return moment.replace(tzinfo=timezone.utc) if moment is not None and moment.tzinfo is None else moment


class History:
    def __init__(self, url: str):
        self.url = url
        self.engine = connect(url, create=True)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", sqlite_pragmas)
            self.engine.dispose()  # connections made from now on get the pragmas
        metadata.create_all(self.engine)
        self.id_lock, self.reserved, self.ids_left = threading.Lock(), 0, 0
        self.writer = BatchWriter(self.write, QUEUE_SIZE)

    def ready(self) -> bool:
        try:
            with self.engine.connect() as connection:
                connection.execute(sa.select(1))
            return True
        except sa.exc.SQLAlchemyError:
            return False

    def add(self, filename: str, model: str, top: list[dict], image: Image.Image, images: int = 1,
            original: bytes | None = None) -> dict:
        """Queue one prediction for writing and return its history item (with its id) at once."""
        row = {"id": self.next_id(), "created_at": datetime.now(timezone.utc), "filename": filename[:255],
               "model": model[:255], "label": top[0]["label"], "probability": float(top[0]["probability"]),
               "top_k": json.dumps(top), "images": images, "original": original}
        self.writer.put((row, image))
        return self.item(row)

    def next_id(self) -> int:
        with self.id_lock:
            if self.ids_left == 0:
                self.reserved, self.ids_left = self.reserve(ID_BLOCK), ID_BLOCK
            self.ids_left -= 1
            self.reserved += 1
            return self.reserved - 1

    def reserve(self, count: int) -> int:
        """The first of `count` ids no other server holds. The UPDATE comes first: it takes the write lock (the
        row lock in PostgreSQL), so two servers can never read the same value."""
        where = id_counter.c.name == "predictions"
        with self.engine.begin() as connection:
            if connection.execute(id_counter.update().where(where)
                                  .values(next_id=id_counter.c.next_id + count)).rowcount:
                return connection.execute(sa.select(id_counter.c.next_id).where(where)).scalar_one() - count
            # a new database, or one from before the counter: continue after its rows
            start = (connection.execute(sa.select(sa.func.max(predictions.c.id))).scalar_one() or 0) + 1
            connection.execute(id_counter.insert().values(name="predictions", next_id=start + count))
            return start

    def write(self, batch: list[tuple[dict, Image.Image]]) -> None:
        rows = [{**row, "thumbnail": thumbnail(image)} for row, image in batch]
        with self.engine.begin() as connection:
            connection.execute(predictions.insert(), rows)

    def flush(self) -> None:
        """Wait until every prediction queued so far is in the database."""
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
        self.engine.dispose()

    @staticmethod
    def item(row) -> dict:
        row = dict(row._mapping) if hasattr(row, "_mapping") else row
        created, corrected = utc(row["created_at"]), utc(row.get("corrected_at"))
        return {"id": row["id"], "created_at": created.isoformat(), "filename": row["filename"], "model": row["model"],
                "label": row["label"], "probability": row["probability"], "top_k": json.loads(row["top_k"]),
                "images": row["images"], "corrected_label": row.get("corrected_label"),
                "corrected_at": corrected.isoformat() if corrected else None,
                "thumbnail_url": f"/v1/history/{row['id']}/thumbnail"}

    def page(self, page: int = 1, per_page: int = 20) -> dict:
        self.flush()
        columns = [column for column in predictions.c if column.name not in ("thumbnail", "original")]
        with self.engine.connect() as connection:
            total = connection.execute(sa.select(sa.func.count()).select_from(predictions)).scalar_one()
            rows = connection.execute(sa.select(*columns).order_by(predictions.c.id.desc())
                                      .limit(per_page).offset((page - 1) * per_page)).all()
        return {"items": [self.item(row) for row in rows], "page": page, "per_page": per_page, "total": total}

    def thumbnail(self, prediction_id: int) -> bytes | None:
        self.flush()
        with self.engine.connect() as connection:
            return connection.execute(sa.select(predictions.c.thumbnail)
                                      .where(predictions.c.id == prediction_id)).scalar_one_or_none()

    def correct(self, prediction_id: int, label: str | None) -> dict | None:
        """Set (or, with None, clear) the right label of a prediction."""
        self.flush()
        with self.engine.begin() as connection:
            updated = connection.execute(predictions.update().where(predictions.c.id == prediction_id).values(
                corrected_label=label, corrected_at=datetime.now(timezone.utc) if label else None)).rowcount
            if not updated:
                return None
            row = connection.execute(sa.select(predictions).where(predictions.c.id == prediction_id)).one()
        return self.item(row)

    def export(self, out_dir: str | Path, include_uncorrected: bool = False) -> dict:
        """Write corrected predictions (and, if asked, the others under their predicted label) as
        out_dir/<label>/<id>.jpg: the original when it was kept, else the thumbnail."""
        self.flush()
        out_dir = Path(out_dir)
        query = sa.select(predictions.c.id, predictions.c.label, predictions.c.corrected_label,
                          predictions.c.thumbnail, predictions.c.original)
        if not include_uncorrected:
            query = query.where(predictions.c.corrected_label.is_not(None))
        counts: dict[str, int] = {}
        with self.engine.connect() as connection:
            for row in connection.execute(query.order_by(predictions.c.id)):
                label = row.corrected_label or row.label
                folder = out_dir / folder_name(label)
                folder.mkdir(parents=True, exist_ok=True)
                data = row.original or row.thumbnail
                kind = Image.open(io.BytesIO(data)).format or "JPEG"
                (folder / f"{row.id}.{'jpg' if kind in ('JPEG', 'MPO') else kind.lower()}").write_bytes(data)
                counts[label] = counts.get(label, 0) + 1
        return counts


class BatchWriter:
    """One thread that drains a bounded queue and hands `write` everything queued, at most `batch` items at a
    time. A failed write is logged with its row count and the thread goes on: the server keeps answering."""

    def __init__(self, write, size: int, batch: int = 64):
        self.write, self.batch = write, batch
        self.queue: queue.Queue = queue.Queue(maxsize=size)
        self.failed = 0
        self.thread = threading.Thread(target=self.run, name="catalens-history-writer", daemon=True)
        self.thread.start()

    def put(self, item) -> None:
        if not self.thread.is_alive():
            raise RuntimeError("the history writer has stopped")
        self.queue.put(item)

    def run(self) -> None:
        while True:
            items = [self.queue.get()]
            while len(items) < self.batch:
                try:
                    items.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            stop = items[-1] is None
            work = [item for item in items if item is not None]
            try:
                if work:
                    self.write(work)
            except Exception as error:  # noqa: BLE001 - a database outage must not stop the server
                self.failed += len(work)
                log.error("history: %d predictions could not be written (%s: %s)", len(work),
                          type(error).__name__, str(error).splitlines()[0][:200])
            finally:
                for _ in items:
                    self.queue.task_done()
            if stop:
                return

    def flush(self) -> None:
        self.queue.join()

    def close(self) -> None:
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join(timeout=30)
