"""The playground's web application (Starlette): the page, its assets, the runs, and generation as a stream.

    GET  /                             the page (picollm/templates/playground.html); ?run=NAME preselects a
                                       run, &b=NAME puts a second one beside it
    GET  /assets/playground.js|.css    the page's script and style, from the package: nothing else is fetched
    GET  /api/runs                     {"runs": [{run, model, corpus, params, val_loss, status, step,
                                                   reason, checkpoints}]}
    GET  /api/runs/NAME                one of them
    POST /api/runs/NAME/generate       {"prompt", "checkpoint", "settings"} -> text/event-stream of
                                       start, token (one per token: piece, token, id, logprob, alternatives,
                                       neighbours), then done (text, tail, mean_logprob, ...) or error

Every refusal is JSON {"error": "..."} with a 4xx status, or 503 past max_streams streams at once, which the
page shows as it is. The page reads the stream with fetch() rather than EventSource: EventSource can only GET,
and cannot read the error of a refused request. A reader that goes away (Stop, a closed tab) frees its stream's
slot at once and stops the decoding at its next token.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncGenerator, Callable
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from picollm.core.log import get_logger
from picollm.serve.playground import (
    MAX_BODY_BYTES,
    MAX_NEW_TOKENS,
    MAX_PROMPT_CHARS,
    MODEL_CACHE_SIZE,
    Emit,
    ModelCache,
    RequestError,
    StreamSlots,
    default_max_streams,
    parse_request,
    prompt_ids_for,
    resolve_run,
    run_generation,
    run_row,
    run_rows,
    setting_fields,
)

log = get_logger()

ASSETS = {"playground.js": "text/javascript; charset=utf-8", "playground.css": "text/css; charset=utf-8"}
#: the page may load only what the playground serves: no CDN, no inline script
SECURITY_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:",
                    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


class Playground:
    """What the handlers share: the checkpoints folder, the model cache and the stream slots."""

    def __init__(self, root: Path, device: str, cache_size: int, max_streams: int) -> None:
        self.root = Path(root)
        self.cache = ModelCache(cache_size, device)
        self.streams = StreamSlots(max_streams)
        env = jinja2.Environment(loader=jinja2.PackageLoader("picollm", "templates"), autoescape=True)
        self.page = env.get_template("playground.html").render(
            fields=setting_fields(), checkpoints=str(self.root), max_prompt_chars=MAX_PROMPT_CHARS,
            max_new_tokens=MAX_NEW_TOKENS)


def _pg(request: Request) -> Playground:
    return request.app.state.playground


# --------------------------------------------------------------------------------------------------
# handlers
# --------------------------------------------------------------------------------------------------
async def page(request: Request) -> Response:
    return HTMLResponse(_pg(request).page, headers=SECURITY_HEADERS)


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in ASSETS:  # a fixed list: no path from a request ever reaches the file system
        raise RequestError(f"no asset {name!r}", 404)
    text = resources.files("picollm").joinpath("templates", name).read_text(encoding="utf-8")
    return Response(text, media_type=ASSETS[name], headers={"Cache-Control": "no-cache", **SECURITY_HEADERS})


async def runs(request: Request) -> Response:
    return JSONResponse({"runs": await run_in_threadpool(run_rows, _pg(request).root)})


async def run_info(request: Request) -> Response:
    pg = _pg(request)
    return JSONResponse(await run_in_threadpool(run_row, resolve_run(pg.root, request.path_params["run"])))


async def _json_body(request: Request) -> Any:
    """The request's JSON, read up to MAX_BODY_BYTES. JSON only: a cross-site form cannot send it without the
    browser asking this server first (CORS), which it never allows."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise RequestError("send the request as JSON (Content-Type: application/json)", 415)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise RequestError(f"the request is over {MAX_BODY_BYTES // 1024} KB", 413)
    try:
        return json.loads(body)
    except ValueError:
        raise RequestError("the request is not valid JSON") from None


async def generate_stream(request: Request) -> Response:
    """Check everything (run, prompt, settings, checkpoint, a free slot) before the stream starts, so every
    refusal is a 4xx or a 503 with a message; then stream the generation."""
    pg = _pg(request)
    run_dir = resolve_run(pg.root, request.path_params["run"])
    prompt, checkpoint, cfg = parse_request(await _json_body(request))
    release = pg.streams.take()  # before the model loads: past the limit, a request costs nothing
    try:
        loaded = await run_in_threadpool(pg.cache.get, run_dir, checkpoint)
        prompt_ids = prompt_ids_for(loaded, prompt)
    except BaseException:
        release()
        raise
    start = {"run": run_dir.name, "checkpoint": checkpoint, "step": loaded.step, "strategy": cfg.strategy,
             "prompt_text": loaded.tokenizer.decode(prompt_ids), "prompt_tokens": len(prompt_ids),
             "unknown": loaded.tokenizer.unknown_pieces(prompt)[:8]}
    log.info(f"playground: {run_dir.name} {checkpoint}.pt, {len(prompt_ids)} prompt tokens, "
             f"{cfg.strategy} {cfg.params()}")

    def job(emit: Emit, stopped: threading.Event) -> None:
        run_generation(loaded, prompt_ids, cfg, emit, stopped)

    return SlotStream(_events(start, job, release), release, media_type="text/event-stream",
                      headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


class SlotStream(StreamingResponse):
    """A stream that holds a slot of the playground's StreamSlots until it ends, however it ends: done, an
    error, or its reader gone. The reader's leaving is heard at once, also while no token flows (a stream
    waiting for a model another stream decodes on), whichever ASGI version the server speaks (Starlette
    listens for it only below 2.4)."""

    def __init__(self, events: AsyncGenerator[str, None], release: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(events, **kwargs)
        self.events, self.release = events, release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as tasks:

                async def stream() -> None:
                    try:
                        await self.stream_response(send)
                    except OSError:  # the reader left (how an ASGI 2.4 server says so)
                        pass
                    tasks.cancel_scope.cancel()

                tasks.start_soon(stream)
                await self.listen_for_disconnect(receive)
                tasks.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):  # its `finally` stops the decoding, even if cut at a yield
                await self.events.aclose()
            self.release()


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, allow_nan=False)}\n\n"


async def _events(start: dict[str, Any], job: Callable[[Emit, threading.Event], None],
                  release: Callable[[], None]) -> AsyncGenerator[str, None]:
    """Run job(emit, stopped) in a thread and pass what it emits on as server-sent events, until done or
    error; release the stream's slot before that last event goes out, so a reader that has it can start its
    next stream at once.

    A thread, not the event loop: decoding is synchronous torch code. When the reader disconnects, SlotStream
    cancels this generator; `stopped` then tells the decoding to stop at its next token.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
    stopped = threading.Event()

    def emit(event: str, data: dict[str, Any]) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (event, data))
        except RuntimeError:  # the event loop has closed: the server is shutting down
            stopped.set()

    yield _sse("start", start)
    threading.Thread(target=job, args=(emit, stopped), daemon=True, name="playground-generate").start()
    try:
        while True:
            event, data = await queue.get()
            if event != "token":
                release()
                yield _sse(event, data)
                return
            yield _sse(event, data)
    finally:
        stopped.set()


# --------------------------------------------------------------------------------------------------
# errors: always {"error": "..."}
# --------------------------------------------------------------------------------------------------
async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: "not found", 405: "method not allowed"}.get(exc.status_code, str(exc.detail))
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)


async def _crashed(request: Request, exc: Exception) -> Response:
    log.error(f"playground: {request.method} {request.url.path} failed: {exc.__class__.__name__}: {exc}")
    return JSONResponse({"error": f"internal error ({exc.__class__.__name__}); see the playground's log"},
                        status_code=500)


def create_app(root: Path | str, device: str = "cpu", cache_size: int = MODEL_CACHE_SIZE,
               allowed_hosts: list[str] | None = None, max_streams: int | None = None) -> Starlette:
    """The ASGI app serving the runs under root; allowed_hosts: Host headers accepted (default: any);
    max_streams: streams at once (default: default_max_streams(), a few per core)."""
    routes = [Route("/", page), Route("/assets/{name}", asset), Route("/api/runs", runs),
              Route("/api/runs/{run}", run_info),
              Route("/api/runs/{run}/generate", generate_stream, methods=["POST"])]
    hosts = Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or ["*"])
    errors = {RequestError: _refused, HTTPException: _http_error, Exception: _crashed}
    app = Starlette(routes=routes, middleware=[hosts], exception_handlers=errors)
    app.router.redirect_slashes = False  # every address is exact: /api/runs/NAME/ is a 404, not a redirect
    streams = default_max_streams() if max_streams is None else max_streams
    app.state.playground = Playground(Path(root), device, cache_size, streams)
    return app
