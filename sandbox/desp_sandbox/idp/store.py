"""What changes while the IdP runs, kept in `{data-dir}/state.json` so a restart keeps it.

- user changes made through the admin API (`enabled`, profile fields, group membership);
- SSO sessions (the browser holds a random secret in a cookie; only its SHA-256 is stored);
- live refresh tokens (by `jti`), so rotation and logout can revoke them.

The file is small and rewritten atomically after each change. Delete the data directory to reset.
"""

import hashlib
import json
import logging
import os
import secrets
import time
import uuid

log = logging.getLogger(__name__)

VERSION = 1


def secret_hash(secret):
    """SHA-256 hex of a bearer secret (cookie value), so the state file never holds the secret itself."""
    return hashlib.sha256(secret.encode()).hexdigest()


class StateFileError(Exception):
    """The state file exists but cannot be read."""


class Store:
    """Persistent mutable realm state. Single-threaded use (the tornado IO loop)."""

    def __init__(self, path, idle_timeout, max_lifespan, clock=time.time):
        self.path = path
        self.idle_timeout = idle_timeout
        self.max_lifespan = max_lifespan
        self.clock = clock
        self.data = {"version": VERSION, "users": {}, "sessions": {}, "refresh_tokens": {}}
        self._load()

    def _load(self):
        try:
            with open(self.path, encoding="utf-8") as file:
                data = json.load(file)
        except FileNotFoundError:
            return
        except (OSError, json.JSONDecodeError) as error:
            raise StateFileError(f"cannot read {self.path} ({error}); delete it to start afresh") from error
        if data.get("version") != VERSION:
            raise StateFileError(f"{self.path} has an unknown version; delete it to start afresh")
        for key in self.data:
            self.data[key] = data.get(key, self.data[key])

    def save(self):
        """Drop what has expired, then write the file atomically (mode 0600)."""
        now = self.clock()
        sessions = self.data["sessions"]
        for sid in [sid for sid, session in sessions.items() if not self._alive(session, now)]:
            del sessions[sid]
        tokens = self.data["refresh_tokens"]
        for jti in [jti for jti, token in tokens.items() if token["exp"] <= now or token["sid"] not in sessions]:
            del tokens[jti]
        temporary = f"{self.path}.tmp"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            json.dump(self.data, file, indent=1, sort_keys=True)
        os.replace(temporary, self.path)

    # users

    def user_changes(self, user_id):
        """Fields of a user changed through the admin API (a dict, possibly empty)."""
        return dict(self.data["users"].get(user_id, {}))

    def update_user(self, user_id, **fields):
        """Record changed fields of a user (e.g. `enabled=False`, `groups=[...]`)."""
        self.data["users"].setdefault(user_id, {}).update(fields)
        self.save()

    # SSO sessions

    def _alive(self, session, now):
        return now < session["last_refresh"] + self.idle_timeout and now < session["started"] + self.max_lifespan

    def create_session(self, user_id):
        """Start an SSO session; returns (session, cookie secret)."""
        now = int(self.clock())
        cookie_secret = secrets.token_urlsafe(32)
        session = {
            "id": str(uuid.uuid4()),
            "user_id": user_id,
            "started": now,
            "auth_time": now,
            "last_refresh": now,
            "cookie_hash": secret_hash(cookie_secret),
        }
        self.data["sessions"][session["id"]] = session
        self.save()
        return dict(session), cookie_secret

    def session(self, sid):
        """A live session by id, or None if unknown, ended or expired."""
        session = self.data["sessions"].get(sid) if sid else None
        if session is None or not self._alive(session, self.clock()):
            return None
        return dict(session)

    def session_by_cookie(self, cookie_secret):
        """The live session whose browser cookie holds `cookie_secret`, or None."""
        if not cookie_secret:
            return None
        wanted = secret_hash(cookie_secret)
        for session in self.data["sessions"].values():
            if secrets.compare_digest(session["cookie_hash"], wanted):
                return self.session(session["id"])
        return None

    def session_expiry(self, sid):
        """When a session ends if nothing refreshes it (the refresh token's `exp`)."""
        session = self.data["sessions"][sid]
        return min(session["last_refresh"] + self.idle_timeout, session["started"] + self.max_lifespan)

    def touch_session(self, sid):
        """Note activity (a refresh, an SSO re-login): pushes the idle timeout back."""
        self.data["sessions"][sid]["last_refresh"] = int(self.clock())
        self.save()

    def end_session(self, sid):
        """End a session and revoke its refresh tokens. Returns whether it existed."""
        existed = self.data["sessions"].pop(sid, None) is not None
        tokens = self.data["refresh_tokens"]
        for jti in [jti for jti, token in tokens.items() if token["sid"] == sid]:
            del tokens[jti]
        self.save()
        return existed

    # refresh tokens

    def add_refresh_token(self, jti, sid, client_id, exp, **extra):
        """Remember a refresh token as live (`extra`: small facts to carry over to the next refresh)."""
        self.data["refresh_tokens"][jti] = {**extra, "sid": sid, "client_id": client_id, "exp": exp, "uses": 0}
        self.save()

    def refresh_token(self, jti):
        """The record of a live refresh token, or None if revoked or unknown."""
        token = self.data["refresh_tokens"].get(jti)
        return dict(token) if token else None

    def use_refresh_token(self, jti, max_uses):
        """Count one use; revoke the token once it has been used `max_uses` times."""
        token = self.data["refresh_tokens"][jti]
        token["uses"] += 1
        if token["uses"] >= max_uses:
            del self.data["refresh_tokens"][jti]
        self.save()
