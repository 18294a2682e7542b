"""The prediction history's queued writer: ids known before the row is written, unique across servers sharing a
database, every queued row written by a clean close, reads that see their own writes, and a database failure
that costs rows (counted, logged) but never a request."""

import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa
from conftest import pattern
from PIL import Image

from catalens.apps.serve.history import ID_BLOCK, History

TOP = [{"label": "blob", "probability": 0.9}, {"label": "stripes_v", "probability": 0.1}]


def add(history: History, i: int) -> int:
    return history.add(f"{i}.jpg", "m", TOP, Image.fromarray(pattern("blob", 48, seed=i)))["id"]


def test_queued_writes_are_read_back_in_order_and_survive_a_clean_close(tmp_path):
    url = f"sqlite:///{tmp_path / 'h.db'}"
    history = History(url)
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda i: add(history, i), range(150)))
    assert sorted(ids) == list(range(1, 151))  # more than two reserved blocks, no id twice
    page = history.page(1, 200)  # waits for the queue: a client sees its own predictions
    assert page["total"] == 150 and [item["id"] for item in page["items"]] == list(range(150, 0, -1))
    assert history.thumbnail(150)[:2] == b"\xff\xd8"
    last = add(history, 999)
    assert history.correct(last, "stripes_v")["corrected_label"] == "stripes_v"  # right after its add
    for i in range(20):
        add(history, 1000 + i)
    history.close()  # writes what is still queued
    with sqlite3.connect(tmp_path / "h.db") as connection:
        assert connection.execute("select count(*) from catalens_predictions").fetchone()[0] == 171


def test_servers_on_one_database_never_share_an_id_and_old_databases_continue(tmp_path):
    url = f"sqlite:///{tmp_path / 'h.db'}"
    first = History(url)
    ids = [add(first, i) for i in range(3)]
    first.close()
    with sa.create_engine(url).begin() as connection:  # a database from before the id counter
        connection.execute(sa.text("drop table catalens_prediction_ids"))
    a, b = History(url), History(url)
    ids += [add(server, i) for i in range(2) for server in (a, b)]
    assert len(set(ids)) == len(ids) and min(ids[3:]) == 4  # continues after the old rows
    assert {add(a, 9), add(b, 9)}.isdisjoint(ids)
    a.close(), b.close()
    restarted = History(url)
    assert add(restarted, 0) > max(ids) and add(restarted, 1) - add(restarted, 2) == -1
    assert restarted.page(1, 100)["total"] == len(ids) + 5
    restarted.close()
    assert ID_BLOCK >= 16


def test_a_failing_database_costs_rows_not_requests(tmp_path, caplog):
    history = History(f"sqlite:///{tmp_path / 'h.db'}")
    add(history, 0)
    history.flush()
    with history.engine.begin() as connection:
        connection.execute(sa.text("drop table catalens_predictions"))
    with caplog.at_level(logging.ERROR, logger="catalens.serve"):
        ids = [add(history, i) for i in range(5)]  # answered at once; the writes fail behind them
        history.flush()
    assert len(ids) == 5 and history.writer.failed == 5
    assert "predictions could not be written" in caplog.text and "\n" not in caplog.messages[0]
    history.close()
