#!/usr/bin/env python
"""The playground under load: many clients streaming at once from two runs, on 127.0.0.1 only.

    python bench/playground_load.py [--clients 16] [--seconds 60] [--checkpoints DIR] [--max_streams N]
                                    [--max_new_tokens 100]

Starts `picollm playground --port 0` in its own process over two tiny runs it trains into a temporary folder
(or the first two runs under --checkpoints with a best.pt and a last.pt), loads their best and last
checkpoints (one request each, before the clock starts: 4 models, the model cache's size), then --clients
threads each stream one generation after another for --seconds (client i: run i % 2, checkpoint (i // 2) % 2;
each request at most --max_new_tokens tokens and 120 s; no new request after the deadline). Prints one line
per figure: requests done, failed requests (and 503s, the playground busy: none while --max_streams >=
--clients), time to first token p50 / p95 (from sending the request: includes waiting for the model, which
decodes one stream at a time), tokens per second per stream p50 / p95 (after its first token), and the
server's peak RSS beside its RSS once the models were loaded (the model cache bounds it). Exits 1 when a
request failed for another reason than a 503, or got a 503 while --max_streams >= --clients.

The clients share the machine's cores with the server; they read the events without decoding the tokens'
JSON to stay light.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from picollm.config import RunConfig
from picollm.core.resources import cpu_cores
from picollm.runs.layout import list_runs
from picollm.serve.playground import MODEL_CACHE_SIZE
from picollm.train.loop import train_run

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ("best", "last")
PROMPTS = ["the ", "KING", "What is ", "O, ", "my lord", "And then "]
REQUEST_TIMEOUT = 120.0  # seconds a request may take, reading included: no client waits forever


def train_runs(out_dir: Path) -> list[Path]:
    """Two tiny char-level runs (a transformer, an LSTM) on Tiny Shakespeare."""
    runs = []
    for family in ("transformer", "lstm"):
        cfg = RunConfig(corpus="tinyshakespeare", model=family, embed=32, hidden=64, layers=1, heads=2,
                        block_size=32, batch_size=16, max_steps=30, eval_interval=15, eval_tokens=2048,
                        out_dir=str(out_dir), progress=False)
        runs.append(train_run(cfg, quiet=True))
    return runs


def pick_runs(root: Path) -> list[Path]:
    runs = [r for r in list_runs(root) if all((r / f"{c}.pt").is_file() for c in CHECKPOINTS)][:2]
    if not runs:
        sys.exit(f"error: no run with a best.pt and a last.pt under --checkpoints {root}")
    return runs


# --------------------------------------------------------------------------------------------------
# the server: `picollm playground` in its own process
# --------------------------------------------------------------------------------------------------
class Server:
    def __init__(self, checkpoints: Path, max_streams: int, workdir: Path) -> None:
        self.stderr = open(workdir / "playground.stderr", "w+")  # closed in stop()
        cmd = [sys.executable, "-m", "picollm", "playground", "--checkpoints", str(checkpoints), "--port", "0",
               "--max_streams", str(max_streams)]
        self.proc = subprocess.Popen(cmd, cwd=workdir, text=True, stdout=subprocess.PIPE, stderr=self.stderr,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})
        watchdog = threading.Timer(120, self.proc.kill)  # a server that never prints its URL
        watchdog.start()
        first = self.proc.stdout.readline()
        watchdog.cancel()
        if not first.startswith("playground: http://"):
            self.stop()
            sys.exit(f"error: the playground did not start: {first}{self._stderr_tail()}")
        self.port = int(first.split()[1].rstrip("/").rsplit(":", 1)[1])
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # never let its pipe fill

    def rss_mb(self, field_name: str) -> float | None:
        """VmRSS (now) or VmHWM (peak) of the server process, in MB (Linux); None elsewhere."""
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return None

    def stop(self) -> float | None:
        """Stop the server (Ctrl-C, as a user does); the peak RSS of the server's process in MB."""
        peak = self.rss_mb("VmHWM")
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if peak is None:  # no /proc: the largest child waited for (ru_maxrss: bytes on macOS, KB elsewhere)
            unit = 1024**2 if sys.platform == "darwin" else 1024
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / unit
        self.stderr.close()
        return peak

    def _stderr_tail(self) -> str:
        self.stderr.seek(0)
        return "".join(self.stderr.readlines()[-10:])


# --------------------------------------------------------------------------------------------------
# the clients
# --------------------------------------------------------------------------------------------------
@dataclass
class Results:
    ttft: list[float] = field(default_factory=list)
    """seconds from sending a request to its first token"""
    rates: list[float] = field(default_factory=list)
    """tokens per second of a stream after its first token"""
    busy: int = 0
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def one_request(port: int, run: str, checkpoint: str, seed: int, max_new_tokens: int) -> tuple:
    """("done", ttft, tokens/s) | ("busy", reason) | ("failed", reason) of one streamed generation."""
    body = {"prompt": PROMPTS[seed % len(PROMPTS)], "checkpoint": checkpoint,
            "settings": {"temperature": 1.0, "seed": seed, "max_new_tokens": max_new_tokens, "stop_at_eos": False}}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    sent = time.perf_counter()
    try:
        conn.request("POST", f"/api/runs/{run}/generate", json.dumps(body), {"Content-Type": "application/json"})
        res = conn.getresponse()
        if res.status != 200:
            reason = f"{res.status}: {res.read().decode(errors='replace')}"
            return ("busy" if res.status == 503 else "failed", reason)
        first = last = None
        tokens, event = 0, ""
        while time.perf_counter() - sent < REQUEST_TIMEOUT:
            line = res.readline()
            if not line:
                return ("failed", f"the stream ended without a done event after {tokens} tokens")
            if line.startswith(b"event: "):
                event = line[7:].strip().decode()
                if event == "token":
                    last = time.perf_counter()
                    first = first or last
                    tokens += 1
            elif line.startswith(b"data: ") and event in ("done", "error"):
                if event == "error":
                    return ("failed", json.loads(line[6:])["error"])
                rate = (tokens - 1) / (last - first) if tokens > 1 and last > first else float("nan")
                return ("done", first - sent, rate)
        return ("failed", f"over {REQUEST_TIMEOUT:.0f} s")
    except (OSError, http.client.HTTPException) as e:
        return ("failed", f"{e.__class__.__name__}: {e}")
    finally:
        conn.close()


def client(i: int, port: int, runs: list[Path], deadline: float, max_new_tokens: int, results: Results) -> None:
    run, checkpoint = runs[i % len(runs)].name, CHECKPOINTS[(i // len(runs)) % 2]
    seed = i * 100_000
    while time.monotonic() < deadline:
        outcome = one_request(port, run, checkpoint, seed, max_new_tokens)
        seed += 1
        with results.lock:
            if outcome[0] == "done":
                results.ttft.append(outcome[1])
                if not math.isnan(outcome[2]):  # a stream of one token has no rate
                    results.rates.append(outcome[2])
            elif outcome[0] == "busy":
                results.busy += 1
            else:
                results.failures.append(outcome[1])
        if outcome[0] == "busy":
            time.sleep(0.05)  # as the page's user would: try again shortly


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (NaN when empty)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


# --------------------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------------------
def load(server: Server, runs: list[Path], args: argparse.Namespace) -> tuple[Results, float, float | None]:
    """Warm the model cache (each run's best and last), then the clients for args.seconds: (results, wall
    seconds, the server's RSS in MB once the models were loaded)."""
    for run in runs:
        for checkpoint in CHECKPOINTS:
            outcome = one_request(server.port, run.name, checkpoint, 0, 5)
            if outcome[0] != "done":
                sys.exit(f"error: {run.name} {checkpoint}.pt: {outcome[1]}")
    warm_mb = server.rss_mb("VmRSS")
    results = Results()
    start = time.monotonic()
    deadline = start + args.seconds
    threads = [threading.Thread(target=client, args=(i, server.port, runs, deadline, args.max_new_tokens,
                                                     results), daemon=True) for i in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:  # each ends by deadline + one request (at most REQUEST_TIMEOUT)
        t.join(timeout=args.seconds + REQUEST_TIMEOUT + 30)
    return results, time.monotonic() - start, warm_mb


def report(results: Results, wall: float, warm_mb: float | None, peak_mb: float | None, models: int,
           args: argparse.Namespace, runs: list[Path]) -> bool:
    """Print one line per figure; False when a request failed."""
    done, failed = len(results.ttft), len(results.failures)
    print(f"playground under load: {args.clients} clients for {args.seconds:g} s on {cpu_cores()} cores, "
          f"runs {', '.join(r.name for r in runs)} (best and last), {args.max_new_tokens} new tokens a "
          f"request, --max_streams {args.max_streams}")
    print(f"requests done: {done} ({done / wall:.1f} a second over {wall:.1f} s)")
    print(f"failed requests: {failed} (503 busy: {results.busy})")
    for reason in sorted(set(results.failures))[:5]:
        print(f"  failed: {reason}")
    print(f"time to first token: p50 {percentile(results.ttft, 50):.3f} s, "
          f"p95 {percentile(results.ttft, 95):.3f} s")
    print(f"tokens per second per stream: p50 {percentile(results.rates, 50):.0f}, "
          f"p95 {percentile(results.rates, 95):.0f}")
    mb = lambda v: "n/a" if v is None else f"{v:.0f} MB"
    print(f"server peak RSS: {mb(peak_mb)} (with the models loaded, before the clients: {mb(warm_mb)}); "
          f"model cache: {MODEL_CACHE_SIZE} models, {models} in use")
    busy_allowed = args.max_streams < args.clients
    return failed == 0 and (busy_allowed or results.busy == 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--checkpoints", help="use the first two runs here instead of training two")
    parser.add_argument("--max_streams", type=int, help="the playground's limit (default: --clients)")
    parser.add_argument("--max_new_tokens", type=int, default=100)
    args = parser.parse_args()
    if args.clients < 1 or args.seconds <= 0 or args.max_new_tokens < 1:
        parser.error("--clients, --seconds and --max_new_tokens must be positive")
    args.max_streams = args.max_streams or args.clients
    with tempfile.TemporaryDirectory(prefix="playground-load-") as tmp:
        work = Path(tmp)
        if args.checkpoints:
            checkpoints = Path(args.checkpoints)
            runs = pick_runs(checkpoints)
        else:
            checkpoints = work / "checkpoints"
            runs = train_runs(checkpoints)
        server = Server(checkpoints, args.max_streams, work)
        try:
            results, wall, warm_mb = load(server, runs, args)
        finally:
            peak_mb = server.stop()
        ok = report(results, wall, warm_mb, peak_mb, len(runs) * len(CHECKPOINTS), args, runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
