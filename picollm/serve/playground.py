"""The playground without its web stack: the runs it serves, the check of a request, the model cache, the
generation behind one stream, and the socket it listens on.

    serve/playground.py (this)  <-  serve/app.py (the Starlette app)  <-  cli/playground.py (`picollm playground`)

Same run, prompt, settings and seed give exactly the text of `picollm generate`: both go through
generate.encode_prompt, generate.generate and generate.continuation_text.

Safe by default: only run directories directly under the checkpoints folder are served (any other name is a
404); the prompt and the tokens generated per request are capped; checkpoints are loaded weights-only; at
most MODEL_CACHE_SIZE models stay in memory; at most max_streams streams run at once (past it a 503); on a
loopback address only local Host headers are accepted.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

from picollm.analyze.generate import (
    DecodeConfig,
    Generation,
    annotate,
    continuation_text,
    encode_prompt,
    generate,
)
from picollm.core.errors import ConfigError, PicoError
from picollm.core.log import get_logger
from picollm.core.resources import cpu_cores
from picollm.runs.checkpoint import load_run
from picollm.runs.layout import list_runs, run_summary

log = get_logger()

MAX_PROMPT_CHARS = 4000  # a prompt is read in one forward: its length bounds the memory a request takes
MAX_NEW_TOKENS = 1000  # per request: bounds the time one request holds a model
MAX_BEAM = 16  # beam search runs MAX_BEAM rows at once
MODEL_CACHE_SIZE = 4  # models kept in memory, least recently used dropped first
MAX_BODY_BYTES = 64 * 1024  # a request's JSON: the prompt and the settings
STREAMS_PER_CORE = 4  # the default --max_streams, per core (see default_max_streams)
CHECKPOINTS = ("best", "last")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class RequestError(PicoError):
    """A request the playground refuses: its message goes back as JSON {"error": ...} with this status."""

    def __init__(self, message: str, status: int = 400, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers


# --------------------------------------------------------------------------------------------------
# streams: at most max_streams at once
# --------------------------------------------------------------------------------------------------
def default_max_streams() -> int:
    """STREAMS_PER_CORE x the cores this process may use. Decoding is CPU-bound (one core per stream at a time,
    and one model decodes one stream at a time), so streams beyond a few per core only make every stream
    slower and hold more memory; a few per core still keep every core busy while some streams wait for their
    model."""
    return STREAMS_PER_CORE * cpu_cores()


class StreamSlots:
    """At most `limit` streams at once: take() gives a slot (its release function) or refuses with a 503."""

    def __init__(self, limit: int) -> None:
        self.limit, self.active = limit, 0
        self._lock = threading.Lock()

    def take(self) -> Callable[[], None]:
        with self._lock:
            if self.active >= self.limit:
                running = f"{self.active} stream{'s' if self.active != 1 else ''} running"
                raise RequestError(f"the playground is busy: {running}, its limit (--max_streams {self.limit}); "
                                   "try again when one ends", 503, {"Retry-After": "1"})
            self.active += 1
        released = threading.Event()

        def release() -> None:  # once, however many ways the stream ends
            with self._lock:
                if not released.is_set():
                    released.set()
                    self.active -= 1

        return release


# --------------------------------------------------------------------------------------------------
# runs: only the directories directly under the checkpoints folder
# --------------------------------------------------------------------------------------------------
def resolve_run(root: Path, name: str) -> Path:
    """The run directory `name` under root, or a 404 RequestError.

    A name is one path component: no separators, no `..`, not absolute, and its real path (symlinks followed)
    must be a child of root's. So no request reaches a file outside the folder the playground was given.
    """
    missing = RequestError(f"no run {name!r} under the checkpoints folder", 404)
    if (not name or ".." in name or "/" in name or "\\" in name or "\x00" in name or name.startswith(".")
            or Path(name).is_absolute()):
        raise missing
    real_root = root.resolve()
    path = (real_root / name).resolve()
    if path.parent != real_root or not (path / "config.json").is_file():
        raise missing
    return path


def _finite(value: Any) -> Any:
    """JSON has no NaN: a missing metric is null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


@lru_cache(maxsize=4096)
def _summary(run_dir: str, stamp: tuple[int, ...]) -> dict[str, Any]:
    """run_summary, read again only when one of the files it reads changed (stamp: their mtimes)."""
    try:
        return run_summary(run_dir)
    except PicoError as e:
        return {"run": Path(run_dir).name, "status": "corrupt", "reason": str(e)}


def run_row(run_dir: Path) -> dict[str, Any]:
    """What the run list shows of a run: family, corpus, parameters, val loss, status (and why: a damaged file
    makes it 'corrupt', with the file and the fix), checkpoints."""
    stamp = tuple((run_dir / f).stat().st_mtime_ns if (run_dir / f).exists() else 0
                  for f in ("config.json", "status.json", "metrics.csv"))
    s = _summary(str(run_dir), stamp)
    row = {k: _finite(s.get(k)) for k in ("model", "corpus", "params", "val_loss", "status", "step", "reason")}
    row["checkpoints"] = [c for c in CHECKPOINTS if (run_dir / f"{c}.pt").is_file()]
    return {"run": run_dir.name, **row}


def run_rows(root: Path) -> list[dict[str, Any]]:
    """Every run under root that resolve_run serves (a symlink leading out of root is left out)."""
    rows = []
    for run_dir in list_runs(root):
        try:
            rows.append(run_row(resolve_run(root, run_dir.name)))
        except RequestError:
            continue
    return rows


# --------------------------------------------------------------------------------------------------
# a generation request: {"prompt": str, "checkpoint": "best" | "last", "settings": {field: value}}
# --------------------------------------------------------------------------------------------------
def setting_fields() -> list[dict[str, Any]]:
    """DecodeConfig's fields as the page shows them: name, default, help, kind (int, float, bool)."""
    caps = {"max_new_tokens": MAX_NEW_TOKENS, "beam": MAX_BEAM}
    return [{"name": f.name, "default": f.default, "kind": f.metadata["kind"].__name__,
             "help": f.metadata["help"] + (f" (at most {caps[f.name]:,} here)" if f.name in caps else "")}
            for f in fields(DecodeConfig)]


def _coerce(kind: type, value: Any) -> Any:
    """A setting typed as text becomes the field's type, as argparse does for the CLI (the page sends what was
    typed, so a 20-digit seed stays exact); what does not convert is left for DecodeConfig to refuse by
    name."""
    if isinstance(value, str) and kind in (int, float):
        try:
            return kind(value.strip())
        except ValueError:
            return value
    return value


def decode_config(settings: Any) -> DecodeConfig:
    """DecodeConfig from a request's settings (missing ones take their defaults), within the playground's
    caps."""
    if not isinstance(settings, dict):
        raise RequestError("settings must be a JSON object of decoding settings")
    kinds = {f.name: f.metadata["kind"] for f in fields(DecodeConfig)}
    unknown = sorted(set(settings) - set(kinds))
    if unknown:
        raise RequestError(f"unknown setting(s) {', '.join(map(repr, unknown))}; known: {', '.join(kinds)}")
    try:
        cfg = DecodeConfig(**{k: _coerce(kinds[k], v) for k, v in settings.items()})
    except ConfigError as e:
        raise RequestError(str(e)) from None
    if cfg.max_new_tokens > MAX_NEW_TOKENS:
        raise RequestError(f"--max_new_tokens must be at most {MAX_NEW_TOKENS:,} in the playground; "
                           f"got {cfg.max_new_tokens:,}")
    if cfg.beam > MAX_BEAM:
        raise RequestError(f"--beam must be at most {MAX_BEAM} in the playground; got {cfg.beam}")
    return cfg


def parse_request(body: Any) -> tuple[str, str, DecodeConfig]:
    """(prompt, checkpoint, decoding) of a generation request, or a 400 RequestError saying what is wrong."""
    if not isinstance(body, dict):
        raise RequestError("the request must be a JSON object with a prompt")
    unknown = sorted(set(body) - {"prompt", "checkpoint", "settings"})
    if unknown:
        raise RequestError(f"unknown field(s) {', '.join(map(repr, unknown))}; "
                           "send prompt, checkpoint, settings")
    prompt = body.get("prompt")
    if prompt is None:
        raise RequestError("the prompt is missing")
    if not isinstance(prompt, str):
        raise RequestError("the prompt must be text")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise RequestError(f"the prompt is {len(prompt):,} characters long; the playground takes at most "
                           f"{MAX_PROMPT_CHARS:,}")
    checkpoint = body.get("checkpoint", "best")
    if checkpoint not in CHECKPOINTS:
        raise RequestError(f"checkpoint must be best or last; got {checkpoint!r}")
    return prompt, checkpoint, decode_config(body.get("settings", {}))


# --------------------------------------------------------------------------------------------------
# models: a small LRU cache, one lock per model
# --------------------------------------------------------------------------------------------------
@dataclass
class LoadedRun:
    tokenizer: Any
    model: Any
    step: int | None
    strings: list[str]
    """the tokenizer's token strings, for annotate"""
    lock: threading.Lock
    """held while the model decodes: a family may keep a cache inside the module (xlstm_lib), so two requests
    never run one model object at once; different models run in parallel"""


class ModelCache:
    """The last `size` (run, checkpoint) models used; a checkpoint rewritten since it was loaded (a run still
    training) is loaded again, since its file's mtime is part of the key."""

    def __init__(self, size: int = MODEL_CACHE_SIZE, device: str = "cpu") -> None:
        self.size, self.device = size, device
        self._items: OrderedDict[tuple[str, str, int], LoadedRun] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, run_dir: Path, checkpoint: str) -> LoadedRun:
        try:
            key = (str(run_dir), checkpoint, (run_dir / f"{checkpoint}.pt").stat().st_mtime_ns)
        except FileNotFoundError:
            raise RequestError(f"run {run_dir.name!r} has no {checkpoint}.pt", 404) from None
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        try:  # outside the lock: a slow load does not hold up requests for models already in memory
            _, tokenizer, model, ckpt = load_run(run_dir, checkpoint, device=self.device)
        except PicoError as e:
            raise RequestError(str(e), 422) from None
        loaded = LoadedRun(tokenizer, model, ckpt["step"], tokenizer.token_strings(), threading.Lock())
        with self._lock:
            for old in [k for k in self._items if k[:2] == key[:2]]:  # an older file of the same checkpoint
                del self._items[old]
            self._items[key] = loaded
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        log.info(f"playground: loaded {run_dir.name} {checkpoint}.pt (step {loaded.step})")
        return loaded


# --------------------------------------------------------------------------------------------------
# the generation behind one stream
# --------------------------------------------------------------------------------------------------
class Pieces:
    """The text each new token adds to the continuation, so that the streamed pieces add up to exactly what
    continuation_text gives for the whole generation. A token whose text is not final yet (a byte-level BPE
    token that ends inside a character) adds nothing: its text arrives with the token that completes it."""

    def __init__(self, tokenizer: Any, prompt_ids: list[int]) -> None:
        self.tokenizer, self.prompt_ids = tokenizer, prompt_ids
        self.ids: list[int] = []
        self.shown = ""

    def add(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = continuation_text(self.tokenizer, Generation(self.prompt_ids, self.ids, []))
        if not text.startswith(self.shown) or text.endswith("\ufffd"):
            return ""
        piece, self.shown = text[len(self.shown):], text
        return piece

    def tail(self, text: str) -> str | None:
        """What the final text adds to the pieces shown; None when it does not extend them (replace them)."""
        return text[len(self.shown):] if text.startswith(self.shown) else None


class Stopped(Exception):
    """The reader of the stream went away: stop decoding."""


Emit = Callable[[str, dict[str, Any]], None]


def prompt_ids_for(loaded: LoadedRun, prompt: str) -> list[int]:
    """The prompt's ids as generate reads them (an empty prompt starts a new document at <eos>)."""
    ids = encode_prompt(loaded.tokenizer, prompt)
    if not ids:
        if loaded.tokenizer.eos_id is None:
            raise RequestError("the prompt is empty and this run's tokenizer has no end-of-sequence token to "
                               "start a document from; type some text")
        ids = [loaded.tokenizer.eos_id]
    return ids


def run_generation(loaded: LoadedRun, prompt_ids: list[int], cfg: DecodeConfig, emit: Emit,
                   stopped: threading.Event) -> None:
    """Decode and emit ("token", annotation + piece) per token, then ("done", ...) or ("error", ...).

    Runs in its own thread; the sampling generator is generate()'s own, seeded per call, so concurrent
    requests never share random state.
    """
    tokenizer, model = loaded.tokenizer, loaded.model
    pieces = Pieces(tokenizer, prompt_ids)

    def on_token(row: int, piece: Generation) -> None:
        if stopped.is_set():
            raise Stopped
        emit("token", {**annotate(piece, model, loaded.strings)[0], "piece": pieces.add(piece.ids[0])})

    start = time.perf_counter()
    while not loaded.lock.acquire(timeout=0.1):  # another stream is decoding on this model
        if stopped.is_set():  # the reader left while waiting: no thread lingers behind a long generation
            return
    try:
        gen = generate(model, [prompt_ids], cfg, tokenizer.eos_id, 1, on_token)[0]
    except Stopped:
        return
    except Exception as e:  # the page gets one line; the server's log keeps the traceback
        log.exception("playground: generation failed")
        emit("error", {"error": f"generation failed: {e}" if isinstance(e, PicoError) else
                       f"generation failed ({e.__class__.__name__}: {e}); see the playground's log"})
        return
    finally:
        loaded.lock.release()
    text = continuation_text(tokenizer, gen)
    seconds = time.perf_counter() - start
    emit("done", {"text": text, "tail": pieces.tail(text), "tokens": len(gen.ids), "strategy": cfg.strategy,
                  "mean_logprob": _finite(gen.mean_logprob), "seconds": round(seconds, 3)})
    log.info(f"playground: {cfg.strategy}, {len(gen.ids)} tokens in {seconds:.2f} s")


# --------------------------------------------------------------------------------------------------
# serving: the socket and the hosts the app accepts
# --------------------------------------------------------------------------------------------------
def listen(host: str, port: int) -> socket.socket:
    """A listening socket (so a port in use is a one-line error, and port 0 tells which port it got)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen()  # connections wait in the backlog from now on: the URL printed next works at once
    except OSError as e:
        raise ConfigError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e}); "
                          "pick another --port") from None
    return sock


def allowed_hosts(host: str) -> list[str]:
    """Host headers accepted: on a loopback address only local names, so a web page cannot reach the
    playground through DNS rebinding (a name of its own that resolves to 127.0.0.1)."""
    return ["127.0.0.1", "localhost", "::1"] if host in LOOPBACK else ["*"]
