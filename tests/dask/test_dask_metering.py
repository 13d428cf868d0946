"""Worker-hours as DCU debits: interval by interval while a worker runs, its partial last interval at its stop, each
debit once whatever how often a worker is seen."""

import datetime

from desp_hub.dask_gateway.metering import SERVICE, UsageOutbox, from_millis, usage_key

START = datetime.datetime(2026, 11, 26, 5, 0, tzinfo=datetime.UTC)
INTERVAL = 600


def outbox(tmp_path):
    return UsageOutbox(f"sqlite:///{tmp_path / 'dask-usage.sqlite'}")


def at(seconds):
    return START + datetime.timedelta(seconds=seconds)


def record(box, worker="w1", running=None, stopped=None, cores=2, price=1):
    return box.record_worker(username="researcher", cluster="c1", worker=worker, worker_cores=cores,
                             dcu_per_core_hour=price, interval_seconds=INTERVAL, started=START,
                             stopped=None if stopped is None else at(stopped),
                             now=at(running if running is not None else stopped))  # fmt: skip


def test_a_running_worker_is_debited_for_each_complete_interval_then_its_partial_last_one(tmp_path):
    box = outbox(tmp_path)
    assert record(box, running=599) == 0  # nothing complete yet
    assert record(box, running=1300) == 2  # intervals 0 and 1 (10 minutes each)
    assert record(box, running=1500) == 0  # seen again: nothing new
    assert record(box, stopped=1500, price="1.5") == 1  # the final 300 s; the price is the cluster's
    rows = box.pending()
    assert [row.interval_index for row in rows] == [0, 1, None]
    # 2 cores * 1 DCU/core-hour * 10 min = 0.333 DCU; the final 5 min at 1.5 = 0.25 DCU
    assert [row.amount_milli for row in rows] == [333, 333, 250]
    assert [row.idempotency_key for row in rows] == [usage_key("researcher", "c1", "w1", i) for i in (0, 1, None)]
    assert rows[-1].idempotency_key == "dask-gateway:researcher:c1:w1:final"
    # the periods tile the worker's life
    periods = [(r.period_start, r.period_end) for r in rows]
    assert periods == [(at(0), at(600)), (at(600), at(1200)), (at(1200), at(1500))]
    transaction = rows[-1].transaction()
    assert transaction["service"] == SERVICE and transaction["session"] == "dask-gateway/c1"
    assert (transaction["period_start"], transaction["period_end"]) == ("2026-11-26T05:20:00Z", "2026-11-26T05:25:00Z")
    assert transaction["metadata"] == {
        "cluster": "c1", "worker": "w1", "worker_cores": 2, "interval": "final", "seconds": "300",
        "worker_hours": "0.083333", "dcu_per_core_hour": "1.5",
    }  # fmt: skip


def test_a_worker_seen_stopping_again_is_not_debited_twice(tmp_path):
    box = outbox(tmp_path)
    assert record(box, stopped=900) == 2  # interval 0 and the final 300 s
    assert record(box, stopped=950) == 0  # e.g. its cluster's stop after its own
    assert outbox(tmp_path).rows() == box.rows() and len(box.rows()) == 2  # durable, reopened
    assert record(box, worker="w2", stopped=100) == 1
    assert [row.worker for row in box.pending()] == ["w1", "w1", "w2"]


def test_free_or_instant_workers_are_not_debited(tmp_path):
    box = outbox(tmp_path)
    assert record(box, stopped=900, price=0) == 0
    assert record(box, worker="w2", stopped=0.001) == 0
    assert box.rows() == []


def test_delivery_marks_rows(tmp_path):
    box = outbox(tmp_path)
    record(box, stopped=60)
    (row,) = box.pending()
    box.mark_failed(row.id, "down")
    assert box.pending()[0].attempts == 1
    box.mark_delivered(row.id, "tx-1")
    assert box.pending() == [] and box.rows(status="delivered")[0].transaction_id == "tx-1"


def test_gateway_timestamps_are_milliseconds():
    assert from_millis(1764133200000) == datetime.datetime(2025, 11, 26, 5, 0, tzinfo=datetime.UTC)
