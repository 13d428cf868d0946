"""Errors the DESP SDK raises, each with an HTTP-like `status` and the offending `field` (or None).

The server extension turns them into `{"message": ..., "field": ...}` with `status` as the HTTP code, so the
message must be short and human: what went wrong and what to do, never a traceback, a token or a secret.
"""


class DespError(Exception):
    """Base of every SDK error: a human `message`, an HTTP-like `status` and the parameter `field` it concerns."""

    status = 500

    def __init__(self, message: str, *, field: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict:
        """The JSON body an HTTP handler returns for this error."""
        return {"message": self.message, "field": self.field}


class InvalidParameter(DespError):
    """A parameter is malformed (a bbox with three numbers, a datetime that is not RFC 3339, ...): 400."""

    status = 400

    def __init__(self, field: str, message: str):
        super().__init__(f"Invalid {field}: {message}", field=field)


class NotFound(DespError):
    """The collection, item, asset or cache path does not exist: 404."""

    status = 404


class PathOutsideCache(DespError):
    """A path escapes the user's cache area (`..`, an absolute path elsewhere, a symlink pointing out): 403."""

    status = 403

    def __init__(self, path: str, field: str | None = "path"):
        super().__init__(f"The path {path!r} is outside your cache area.", field=field)
        self.path = path


class QuotaExceeded(DespError):
    """Writing `requested` bytes on top of `used` would exceed the area's `quota`: 413. Nothing was written."""

    status = 413

    def __init__(self, used: int, requested: int, quota: int):
        super().__init__(
            f"Cache quota exceeded: {_size(used)} used + {_size(requested)} requested > quota {_size(quota)} "
            f"({used} + {requested} > {quota} bytes). Free space or ask for a larger quota."
        )
        self.used = used
        self.requested = requested
        self.quota = quota


class ServiceUnavailable(DespError):
    """A platform service (catalogue, cache) cannot be reached or answered with a server error: 502."""

    status = 502

    def __init__(self, service: str, url: str, reason: str):
        super().__init__(
            f"The {service} at {_without_query(url)} is not available right now ({reason}). Try again later."
        )
        self.service = service
        self.url = _without_query(url)
        self.reason = reason


def _size(n: int) -> str:
    """`n` bytes as a short human string (1.5 MiB)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _without_query(url: str) -> str:
    """A URL without its query string (which may carry signatures or tokens), safe to show and log."""
    return url.split("?", 1)[0].split("#", 1)[0]
