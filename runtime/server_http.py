"""What every route module shares: the app's state, reading a body, errors, SSE and job streams.

A route module (routes_openai, routes_native, ...) is a plain list of starlette `Route`s whose handlers
find everything they need through `state(request)`: the engine, the server options and the request
limits. create_app (runtime.server) puts that state on the app and assembles the lists.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from . import api_schema
from .api_schema import APIError
from .options import ServerOptions
from .server_engine import Engine, Job


@dataclass(frozen=True)
class AppState:
    engine: Engine
    options: ServerOptions
    limits: api_schema.Limits          # what requests are checked against and filled in from


def state(request: Request) -> AppState:
    return request.app.state.chatfile


def client_id(request: Request):
    """Who sent the request, as the guard identified them (an API key's index; None without keys).
    The engine never shares a cached prompt between two identities."""
    return request.scope.get("chatfile.client")


def error_response(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


async def read_body(request: Request, timeout: float) -> bytes:
    """The request body, refused when over MAX_BODY_BYTES (413) or not all sent within `timeout` (408)."""
    limit = api_schema.MAX_BODY_BYTES
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise APIError(413, f"request body is {length} bytes; the limit is {limit}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    chunks, size = [], 0
    stream = request.stream()
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), max(0.0, deadline - loop.time()))
        except StopAsyncIteration:
            return b"".join(chunks)
        except asyncio.TimeoutError:
            raise APIError(408, f"request body not received within {timeout:g} s", type="timeout") from None
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)


async def json_body(request: Request) -> dict:
    """The body as a JSON object, read under the size limit and the body deadline."""
    return api_schema.parse_body(await read_body(request, state(request).options.request_timeout))


def sse(obj) -> str:
    """One Server-Sent Events `data:` line."""
    return "data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n\n"


async def _wait_for_disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def collect_unless_disconnected(request: Request, job: Job) -> list | None:
    """All of a job's events (Pieces, then Done or Failed); None when the client left first (the job is
    then cancelled)."""
    async def collect():
        return [item async for item in job.stream()]
    collecting = asyncio.ensure_future(collect())
    watching = asyncio.ensure_future(_wait_for_disconnect(request.receive))
    await asyncio.wait({collecting, watching}, return_when=asyncio.FIRST_COMPLETED)
    if collecting.done():
        watching.cancel()
        return collecting.result()
    collecting.cancel()                      # its job.stream() sets job.cancelled on the way out
    job.cancelled.set()
    return None


class JobStream(StreamingResponse):
    """A StreamingResponse that cancels its job however the response ends.

    job.stream() also sets `cancelled` when it is left, but when a disconnect cancels the response while
    it waits in `send`, starlette leaves the body generator suspended at a `yield`: its `finally` runs
    only when the garbage collector finalizes it, and the engine would go on generating until then."""

    def __init__(self, job: Job | list[Job], content, **kwargs):
        kwargs.setdefault("media_type", "text/event-stream")
        kwargs.setdefault("headers", {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        super().__init__(content, **kwargs)
        self.jobs = job if isinstance(job, list) else [job]   # a list the body may append later jobs to

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            for job in self.jobs:
                job.cancelled.set()    # after a Done this changes nothing


def client_gone() -> Response:
    return Response(status_code=499)
