"""Reading a request body under a size limit, enforced while reading."""

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive


async def read_limited(request: Request, limit: int) -> bytes | None:
    """The whole body, or None as soon as it is known to exceed `limit` bytes.

    A declared Content-Length over the limit is refused before reading anything; a chunked or
    under-declared body is cut off at the first chunk that crosses the limit.
    """
    return await receive_limited(request.receive, request.headers.get("content-length"), limit)


async def receive_limited(receive: Receive, content_length: str | None, limit: int) -> bytes | None:
    """`read_limited` on a bare ASGI receive channel; ClientDisconnect if the client goes away."""
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
