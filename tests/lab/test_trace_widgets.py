"""`desp_lab.widgets.TraceWidget` and `BalanceWidget` driven in-process, without a browser, against the sandbox trace
service (`sandbox_traces`) and the sandbox accounting service (`sandbox_accounting`).

Widget values are set as a user would, the buttons are clicked with `.click()`, and the traces, verification results
and messages are read back.
"""

from __future__ import annotations

import hashlib
import uuid
from decimal import Decimal

import blake3
import pytest

from desp_lab.accounting import Accounting
from desp_lab.trace import TraceClient
from desp_lab.widgets import BalanceWidget, TraceWidget, balance_status, balance_text
from tests.support import free_port


@pytest.fixture
def client(sandbox_traces):
    return TraceClient(url=sandbox_traces.url, token=lambda: sandbox_traces.token_for("researcher"))


def test_trace_send_search_and_verify_a_one_byte_change(client, tmp_path):
    path = tmp_path / f"widget-{uuid.uuid4().hex[:8]}.bin"
    data = uuid.uuid4().bytes * 2048
    path.write_bytes(data)
    widget = TraceWidget(client=client, path=str(path))
    assert widget.send.value is True  # registering is the default
    widget.trace_button.click()
    assert widget.error is None, widget.message.value
    assert widget.trace["id"] and widget.trace["origin"] == "researcher"
    assert widget.trace["product"]["hash"] == blake3.blake3(data).hexdigest()
    assert "registered as" in widget.message.value and widget.trace["product"]["hash"] in widget.details.value

    widget.hash.value = widget.trace["product"]["hash"].upper()  # hashes are compared lower-cased
    widget.search_button.click()
    assert widget.error is None, widget.message.value
    assert widget.trace["id"] in [trace["id"] for trace in widget.found]
    assert "with this hash" in widget.message.value

    widget.verify_button.click()
    assert widget.error is None, widget.message.value
    assert widget.result.ok and "OK" in widget.message.value

    changed = bytearray(data)
    changed[-1] ^= 0xFF
    path.write_bytes(bytes(changed))
    widget.verify_button.click()
    assert widget.result.ok is False and "MISMATCH" in widget.message.value
    assert widget.result.expected == widget.trace["product"]["hash"] != widget.result.actual
    assert widget.result.actual in widget.details.value


def test_a_store_shows_which_members_differ(client, tmp_path):
    store = tmp_path / f"w-{uuid.uuid4().hex[:8]}.zarr"
    (store / "v").mkdir(parents=True)
    (store / ".zgroup").write_text("{}")
    (store / "v" / "0").write_bytes(b"0" * 10)
    widget = TraceWidget(client=client, path=str(store))
    widget.trace_button.click()
    assert widget.error is None and len(widget.trace["product"]["contents"]) == 2
    (store / "v" / "0").write_bytes(b"1" * 10)
    widget.verify_button.click()
    assert widget.result.changed == ["v/0"] and "v/0" in widget.details.value


def test_trace_without_sending_and_with_sha256(client, tmp_path):
    path = tmp_path / "local.txt"
    path.write_bytes(b"local only")
    widget = TraceWidget(client=client, path=str(path))
    widget.send.value = False
    widget.algorithm.value = "SHA256"
    widget.trace_button.click()
    assert widget.error is None and "id" not in widget.trace and "not registered" in widget.message.value
    assert widget.trace["product"]["hash"] == hashlib.sha256(b"local only").hexdigest()


def test_errors_are_messages_not_tracebacks(client, sandbox_traces, tmp_path):
    widget = TraceWidget(client=client)
    widget.trace_button.click()
    assert widget.error.field == "path" and "Give the path" in widget.message.value
    widget.path.value = str(tmp_path / "missing.bin")
    widget.trace_button.click()
    assert widget.error is not None and "missing.bin" in widget.message.value
    never = tmp_path / f"never-{uuid.uuid4().hex[:8]}.txt"
    never.write_text("never sent")
    widget.path.value = str(never)
    widget.verify_button.click()
    assert widget.error.status == 404 and never.name in widget.message.value
    widget.hash.value = "not-a-hash"
    widget.search_button.click()
    assert widget.error.status == 400 and widget.found == []
    down = TraceWidget(client=TraceClient(url=f"http://127.0.0.1:{free_port()}", token="t"), path=str(never))
    down.verify_button.click()
    assert "not available" in down.message.value
    assert all("Traceback" not in w.message.value for w in (widget, down))


def test_balance_widget_and_status(sandbox_accounting):
    session = f"researcher/widget-{uuid.uuid4().hex[:8]}/2026-11-26T00:00:00Z"
    accounting = Accounting(url=sandbox_accounting.url, token=lambda: sandbox_accounting.token_for("researcher"))
    widget = BalanceWidget(accounting=accounting, session=session)
    assert widget.error is None, widget.label.value
    assert widget.status["user"] == "researcher" and widget.status["session_cost"] == "0.000"
    assert balance_text(widget.status) in widget.label.value
    meter = Accounting(url=sandbox_accounting.url, token=sandbox_accounting.meter_token)
    meter.record("researcher", "debit", "0.500", f"widget:{uuid.uuid4().hex}", service="jupyterhub", session=session)
    before = Decimal(widget.status["available"])
    widget.refresh_button.click()
    assert widget.status["session_cost"] == "0.500"
    assert before - Decimal(widget.status["available"]) >= Decimal("0.5")
    assert "session 0.500" in widget.label.value
    # Without a session: the balance alone.
    status = balance_status(accounting, session="", profile="ai", dcu_per_hour="4")
    assert status["session_cost"] is None and status["profile"] == "ai" and status["dcu_per_hour"] == "4.000"
    assert balance_text(status) == f"DCU {status['available']}"


def test_balance_widget_shows_an_error(monkeypatch):
    monkeypatch.delenv("JUPYTERHUB_USER", raising=False)
    down = Accounting(url=f"http://127.0.0.1:{free_port()}", token="not-a-jwt", retries=0)
    widget = BalanceWidget(accounting=down)  # a token naming nobody and no JUPYTERHUB_USER: says so
    assert widget.status is None and "Cannot tell who you are" in widget.label.value
    widget = BalanceWidget(accounting=down, user="researcher")
    assert widget.status is None and widget.error is not None
    assert "not available" in widget.label.value and "Traceback" not in widget.label.value
