"""The size limit of /predict bodies, applied to the bytes as they arrive."""

from __future__ import annotations

from collections.abc import Callable

from fti_assets.serving.api import json_response


class BodyLimitMiddleware:
    """Pure ASGI middleware: a /predict body larger than ``max_body_bytes`` is answered 413 before anything
    parses it, whether it declares its length or streams in chunks (counted as they arrive, so a client
    sending megabytes is cut off at the limit). The body read is handed to the app as one message."""

    def __init__(self, app, max_body_bytes: int, on_refused: Callable[[], None]):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.on_refused = on_refused

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/predict":
            await self.app(scope, receive, send)
            return
        if self._declared_length(scope) > self.max_body_bytes:
            await self._refuse(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: nothing to answer
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay():
            nonlocal delivered
            if delivered:
                return await receive()  # after the body: a disconnect, when it comes
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send) -> None:
        self.on_refused()
        response = json_response(
            {"detail": f"request body larger than {self.max_body_bytes} bytes", "reason": "too_many_ids"},
            status_code=413,
            # The rest of the body is not read: the connection cannot carry another request.
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)

    @staticmethod
    def _declared_length(scope) -> int:
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return 0
        return 0
