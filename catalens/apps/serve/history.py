"""The prediction history and its corrections, through SQLAlchemy: a SQLite file by default, PostgreSQL by URL.

One row per prediction: when, the file name, the model, the top class and its probability, the top-k (JSON), a
small JPEG thumbnail, optionally the original bytes, and the label a person set when the model was wrong.
Corrections export as a labelled image folder (one subfolder per class) that `catalens train` reads directly.
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
from PIL import Image

from catalens.data.sources.folder import folder_name
from catalens.data.sources.sql import connect

THUMBNAIL_SIDE = 160
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

    def ready(self) -> bool:
        try:
            with self.engine.connect() as connection:
                connection.execute(sa.select(1))
            return True
        except sa.exc.SQLAlchemyError:
            return False

    def add(self, filename: str, model: str, top: list[dict], image: Image.Image, images: int = 1,
            original: bytes | None = None) -> dict:
        row = {"created_at": datetime.now(timezone.utc), "filename": filename[:255], "model": model[:255],
               "label": top[0]["label"], "probability": float(top[0]["probability"]), "top_k": json.dumps(top),
               "images": images, "thumbnail": thumbnail(image), "original": original}
        with self.engine.begin() as connection:
            row["id"] = connection.execute(predictions.insert().values(**row)).inserted_primary_key[0]
        return self.item(row)

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
        columns = [column for column in predictions.c if column.name not in ("thumbnail", "original")]
        with self.engine.connect() as connection:
            total = connection.execute(sa.select(sa.func.count()).select_from(predictions)).scalar_one()
            rows = connection.execute(sa.select(*columns).order_by(predictions.c.id.desc())
                                      .limit(per_page).offset((page - 1) * per_page)).all()
        return {"items": [self.item(row) for row in rows], "page": page, "per_page": per_page, "total": total}

    def thumbnail(self, prediction_id: int) -> bytes | None:
        with self.engine.connect() as connection:
            return connection.execute(sa.select(predictions.c.thumbnail)
                                      .where(predictions.c.id == prediction_id)).scalar_one_or_none()

    def correct(self, prediction_id: int, label: str | None) -> dict | None:
        """Set (or, with None, clear) the right label of a prediction."""
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
