"""Culled servers: which server the culler stopped, when, and why, so that its owner can be told.

The culler service (`desp_hub.services.culler`) calls `record_cull` after it stops a server; the spawner's profile
form calls `last_cull` and shows `cull_notice(...)`. The table (`server_culls`, Alembic revision 0003) lives in the
profile store's database, on the same URL; the first call for a URL brings the schema up to date.

The functions block on database I/O: from a coroutine, call them in a worker thread (`asyncio.to_thread`).
"""

from __future__ import annotations

import datetime
import html
from typing import Any

import sqlalchemy as sa

from .profile_store import metadata, migrated_store

__all__ = ["REASONS", "cull_notice", "format_duration", "last_cull", "record_cull"]

REASONS = ("idle", "max_runtime")

# Part of the store's head schema (profile_store.metadata), which the migrations must build exactly.
culls_table = sa.Table(
    "server_culls",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("username", sa.String(255), nullable=False),
    sa.Column("server", sa.String(255), nullable=False),
    sa.Column("profile", sa.String(63), nullable=True),
    sa.Column("profile_name", sa.String(255), nullable=True),
    sa.Column("reason", sa.String(16), nullable=False),
    sa.Column("limit_seconds", sa.Integer, nullable=False),
    sa.Index("ix_server_culls_username_at", "username", "at"),
)


def _utc(value: datetime.datetime) -> datetime.datetime:
    # SQLite keeps no time zone: everything is written in UTC, so a naive value is UTC.
    return value.replace(tzinfo=datetime.UTC) if value.tzinfo is None else value.astimezone(datetime.UTC)


def record_cull(
    url: str,
    *,
    username: str,
    server: str,
    profile: str | None,
    reason: str,
    limit: int,
    profile_name: str | None = None,
    at: datetime.datetime | None = None,
) -> dict[str, Any]:
    """Record that `username`'s server `server` ("" : the default one) was stopped; return the record.

    `profile` is the server's profile slug (None when it had none the store knows), `profile_name` its display
    name, `reason` one of REASONS and `limit` the limit it went past, in seconds. `at` defaults to now.
    """
    if reason not in REASONS:
        raise ValueError(f"reason must be one of {', '.join(REASONS)}, got {reason!r}")
    values = {
        "at": _utc(at) if at is not None else datetime.datetime.now(datetime.UTC),
        "username": username,
        "server": server,
        "profile": profile,
        "profile_name": profile_name,
        "reason": reason,
        "limit_seconds": int(limit),
    }
    with migrated_store(url).engine.begin() as connection:
        values["id"] = connection.execute(sa.insert(culls_table).values(values)).inserted_primary_key[0]
    return _as_dict(values)


def last_cull(
    url: str, username: str, since: datetime.datetime | None = None, server: str | None = None
) -> dict[str, Any] | None:
    """The latest cull of `username`'s servers (of server `server` only, when given) at or after `since`, or None.

    The dict has id, at (aware datetime, UTC), username, server, profile, profile_name, reason, limit.
    """
    query = sa.select(culls_table).where(culls_table.c.username == username)
    if since is not None:
        query = query.where(culls_table.c.at >= _utc(since))
    if server is not None:
        query = query.where(culls_table.c.server == server)
    query = query.order_by(culls_table.c.at.desc(), culls_table.c.id.desc()).limit(1)
    with migrated_store(url).engine.connect() as connection:
        row = connection.execute(query).mappings().first()
    return _as_dict(row) if row is not None else None


def _as_dict(row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "at": _utc(row["at"]),
        "username": row["username"],
        "server": row["server"],
        "profile": row["profile"],
        "profile_name": row["profile_name"],
        "reason": row["reason"],
        "limit": row["limit_seconds"],
    }


_UNITS = (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))


def format_duration(seconds: int) -> str:
    """`3600` → "1 hour", `5400` → "1 hour 30 minutes", `45` → "45 seconds" (the two largest units)."""
    seconds = max(int(seconds), 0)
    parts = []
    for name, size in _UNITS:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {name}" + ("s" if count != 1 else ""))
    return " ".join(parts[:2]) or "0 seconds"


def cull_notice(cull: dict[str, Any]) -> str:
    """One sentence telling the owner why their server stopped, HTML-escaped (safe to put inside an element)."""
    name = cull.get("profile_name") or cull.get("profile")
    server = f"server “{cull['server']}”" if cull.get("server") else "last server"
    subject = f"Your {server}" + (f" ({name})" if name else "")
    duration = format_duration(cull["limit"])
    whose = "the profile's" if cull.get("profile") else "the hub's"
    if cull["reason"] == "max_runtime":
        text = f"{subject} was stopped after running for {duration}, {whose} maximum runtime."
    else:
        text = f"{subject} was stopped after {duration} without activity, {whose} idle limit."
    return html.escape(text)
