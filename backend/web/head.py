"""HEAD for every GET route: answered as GET, with the same status and headers and no body.

FastAPI's `@router.get` registers GET alone, so `curl -I` met a 405. Rather than a second method
on each route (which would put a HEAD operation for each in the OpenAPI schema), this layer hands
the app a GET and drops what it sends as the body. A route without GET answers HEAD as it
answers GET: 405 (or 404).

It sits inside the request-context middleware, so the access log and the request metrics say
HEAD; the router's match (`route`, for the metrics' route template) is copied back to the request
the outer layers see. The server is still told HEAD (its own copy of the scope), so it frames the
response as one without a body, keeping the GET's Content-Length.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGet:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        ended = False

        async def headers_only(message: Message) -> None:
            nonlocal ended
            if message["type"] == "http.response.start":
                await send(message)
            elif not ended:  # the first piece of body ends the response; the rest is dropped
                ended = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        as_get = {**scope, "method": "GET"}
        try:
            await self.app(as_get, receive, headers_only)
        finally:
            scope.update((key, value) for key, value in as_get.items() if key != "method")
