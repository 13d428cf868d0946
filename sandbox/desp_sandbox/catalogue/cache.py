"""The sandbox "Cache B": the cache directory served read-only over HTTP, with Range support, behind a token check.

Starlette's StaticFiles does the serving (GET/HEAD only, `Range` → 206 with the asked bytes, ETag/Last-Modified,
no paths outside the directory); this ASGI wrapper only answers 401 JSON to requests without a valid token.
"""

from __future__ import annotations

import logging
from pathlib import Path

from starlette.responses import JSONResponse
from starlette.staticfiles import StaticFiles

from .auth import TokenVerifier, Unauthorized

log = logging.getLogger("desp_sandbox.catalogue.cache")

CHALLENGE = 'Bearer realm="desp-cache", Basic realm="desp-cache"'


def unauthorized(message: str) -> JSONResponse:
    return JSONResponse({"code": "Unauthorized", "description": message}, status_code=401,
                        headers={"WWW-Authenticate": CHALLENGE})  # fmt: skip


class CacheFiles:
    """ASGI app: `directory` read-only, for requests whose Authorization the verifier accepts."""

    def __init__(self, directory: Path, verifier: TokenVerifier):
        self.files = StaticFiles(directory=directory, check_dir=False)
        self.verifier = verifier

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.files(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        authorization = headers.get(b"authorization", b"").decode("latin-1") or None
        try:
            await self.verifier.check(authorization)
        except Unauthorized as error:
            log.info("401 %s %s: %s", scope.get("method"), scope.get("path"), error)
            return await unauthorized(str(error))(scope, receive, send)
        return await self.files(scope, receive, send)
