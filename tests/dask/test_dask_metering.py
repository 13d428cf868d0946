"""Worker-hours as DCU debits: one per worker, whatever how often its stop is seen."""

import datetime
from desp_hub.dask_gateway.metering import SERVICE, UsageOutbox, from_millis, usage_key

START = datetime.datetime(2026, 11, 26, 5, 0, tzinfo=datetime.UTC)


def outbox(tmp_path):
    return UsageOutbox(f"sqlite:///{tmp_path / 'dask-usage.sqlite'}")


def record(box, worker="w1", seconds=1800, cores=2, price=1):
    return box.record_worker(username="researcher", cluster="c1", worker=worker, worker_cores=cores,
                             dcu_per_core_hour=price, started=START,
                             stopped=START + datetime.timedelta(seconds=seconds))  # fmt: skip


def test_a_stopped_worker_is_one_debit_of_its_core_hours(tmp_path):
    box = outbox(tmp_path)
    assert record(box, seconds=1800, cores=2, price="1.5") is True  # 2 cores * 0.5 h * 1.5 DCU = 1.5 DCU
    (row,) = box.pending()
    assert row.amount_milli == 1500
    assert row.idempotency_key == usage_key("researcher", "c1", "w1") == "dask-gateway:researcher:c1:w1"
    transaction = row.transaction()
    assert transaction["service"] == SERVICE and transaction["session"] == "dask-gateway/c1"
    assert (transaction["period_start"], transaction["period_end"]) == ("2026-11-26T05:00:00Z", "2026-11-26T05:30:00Z")
    assert transaction["metadata"] == {"cluster": "c1", "worker": "w1", "worker_cores": 2, "seconds": "1800",
                                       "worker_hours": "0.5", "dcu_per_core_hour": "1.5"}  # fmt: skip


def test_the_same_worker_seen_stopping_again_is_not_debited_twice(tmp_path):
    box = outbox(tmp_path)
    assert record(box) is True
    assert record(box, seconds=2000) is False  # e.g. its cluster's stop after its own
    assert outbox(tmp_path).rows() == box.rows() and len(box.rows()) == 1  # durable, reopened
    assert record(box, worker="w2") is True
    assert [row.worker for row in box.pending()] == ["w1", "w2"]


def test_free_or_instant_workers_are_not_debited(tmp_path):
    box = outbox(tmp_path)
    assert record(box, price=0) is False
    assert record(box, seconds=0.001) is False
    assert box.rows() == []


def test_delivery_marks_rows(tmp_path):
    box = outbox(tmp_path)
    record(box)
    (row,) = box.pending()
    box.mark_failed(row.id, "down")
    assert box.pending()[0].attempts == 1
    box.mark_delivered(row.id, "tx-1")
    assert box.pending() == [] and box.rows(status="delivered")[0].transaction_id == "tx-1"


def test_gateway_timestamps_are_milliseconds():
    assert from_millis(1764133200000) == datetime.datetime(2025, 11, 26, 5, 0, tzinfo=datetime.UTC)
