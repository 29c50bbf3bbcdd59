"""A local playground: generate from any trained run in the browser, token by token, two runs side by side.

    python -m picollm.serve.playground [--checkpoints checkpoints] [--port 8000] [--host 127.0.0.1] [--device cpu]
                                 [--threads 1]

Pick a run (searchable list of the runs under --checkpoints, with family, parameters and val loss) and its
best or last checkpoint, type a prompt, set the decoding (the fields of picollm.analyze.generate.DecodeConfig, with
their defaults, help and validation), and watch the tokens arrive (server-sent events). Hover a token for its
log-probability, the model's top-5 alternatives and its nearest embedding neighbours. Put a second run beside
the first to compare them on the same prompt and seed. Same run, prompt, settings and seed give exactly the
text of `python -m picollm.analyze.generate`: both go through generate.encode_prompt, generate.generate and
generate.continuation_text. Every asset is served by the playground itself: it works offline.

Safe by default: it listens on 127.0.0.1 only (--host opens it to others: anyone who can reach the port can
run the models); it serves only run directories directly under --checkpoints (any other name is a 404); the
prompt and the tokens generated per request are capped; checkpoints are loaded weights-only; at most
4 models (MODEL_CACHE_SIZE) stay in memory. Needs the `playground` extra (Starlette + uvicorn).

This module holds what does not need the web stack (checking a request, finding runs, caching models, the
generation that feeds a stream) and the command line; playground_app.py is the web application.
"""

from __future__ import annotations

import argparse
import math
import socket
import sys
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
from picollm.runs.layout import list_runs, run_summary

log = get_logger()

MAX_PROMPT_CHARS = 4000  # a prompt is read in one forward: its length bounds the memory a request takes
MAX_NEW_TOKENS = 1000  # per request: bounds the time one request holds a model
MAX_BEAM = 16  # beam search runs MAX_BEAM rows at once
MODEL_CACHE_SIZE = 4  # models kept in memory, least recently used dropped first
MAX_BODY_BYTES = 64 * 1024  # a request's JSON: the prompt and the settings
CHECKPOINTS = ("best", "last")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
EXTRA_HINT = "error: the playground needs its extra: pip install -e '.[playground]'"


class RequestError(PicoError):
    """A request the playground refuses: its message goes back as JSON {"error": ...} with this status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


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
    """What the run list shows of a run: family, corpus, parameters, val loss, status, checkpoints."""
    stamp = tuple((run_dir / f).stat().st_mtime_ns if (run_dir / f).exists() else 0
                  for f in ("config.json", "status.json", "metrics.csv"))
    s = _summary(str(run_dir), stamp)
    row = {k: _finite(s.get(k)) for k in ("model", "corpus", "params", "val_loss", "status", "step")}
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
        from picollm.runs.checkpoint import load_run

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
    try:
        with loaded.lock:
            gen = generate(model, [prompt_ids], cfg, tokenizer.eos_id, 1, on_token)[0]
    except Stopped:
        return
    except Exception as e:  # the page gets one line; the server's log keeps the traceback
        log.exception("playground: generation failed")
        emit("error", {"error": f"generation failed: {e}" if isinstance(e, PicoError) else
                       f"generation failed ({e.__class__.__name__}: {e}); see the playground's log"})
        return
    text = continuation_text(tokenizer, gen)
    seconds = time.perf_counter() - start
    emit("done", {"text": text, "tail": pieces.tail(text), "tokens": len(gen.ids), "strategy": cfg.strategy,
                  "mean_logprob": _finite(gen.mean_logprob), "seconds": round(seconds, 3)})
    log.info(f"playground: {cfg.strategy}, {len(gen.ids)} tokens in {seconds:.2f} s")


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from picollm.core.commands import ArgumentParser

    parser = ArgumentParser(prog="python -m picollm.serve.playground", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", default="checkpoints",
                        help="folder of run directories (default: checkpoints)")
    parser.add_argument("--port", type=int, default=8000,
                        help="port to listen on; 0 = any free one (default: 8000)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 lets "
                             "anyone who can reach the port run the models)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default: cpu)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default: 1: decoding feeds one token at a time, where more "
                             "threads gain little on small models and, while other jobs use the cores, spin: "
                             "~45x slower measured on 2 busy cores)")
    return parser.parse_args(argv)


def _listen(host: str, port: int) -> socket.socket:
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


def main(argv: list[str] | None = None) -> int:
    import torch

    from picollm.core.devices import resolve_device
    from picollm.core.log import setup_logging

    args = parse_args(argv)
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be in [0, 65535]; got {args.port}")
    root = Path(args.checkpoints)
    if not root.is_dir():
        raise ConfigError(f"--checkpoints {root} is not a folder; train runs first (main.py, batch_train.py) "
                          "or point --checkpoints at the folder that holds them")
    if args.threads < 1:
        raise ConfigError(f"--threads must be a positive integer; got {args.threads}")
    device = resolve_device(args.device)
    try:
        import uvicorn

        from picollm.serve.app import create_app
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in ("starlette", "uvicorn"):
            raise
        print(EXTRA_HINT, file=sys.stderr)
        return 2
    sock = _listen(args.host, args.port)
    port = sock.getsockname()[1]
    setup_logging("playground")
    torch.set_num_threads(args.threads)
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    base = f"http://{f'[{shown}]' if ':' in shown else shown}:{port}"
    print(f"playground: {base}/ (runs under {root}; Ctrl-C stops it)")
    print(f"for the report's links: PICOLLM_PLAYGROUND_URL={base}/?run={{run}}", flush=True)
    if args.host not in LOOPBACK:
        log.warning(f"warning: --host {args.host}: anyone who can reach port {port} can run these models")
    app = create_app(root, str(device), allowed_hosts=_allowed_hosts(args.host))
    try:
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn stops cleanly on Ctrl-C, then raises it again for the caller
        pass
    print("playground stopped")
    return 0


def _allowed_hosts(host: str) -> list[str]:
    """Host headers accepted: on a loopback address only local names, so a web page cannot reach the
    playground through DNS rebinding (a name of its own that resolves to 127.0.0.1)."""
    return ["127.0.0.1", "localhost", "::1"] if host in LOOPBACK else ["*"]


if __name__ == "__main__":
    from picollm.core.commands import run_cli

    run_cli(main)
