"""The playground: its stream gives exactly the CLI's text (every strategy, char and word runs), it refuses
what it should with a message (names outside the checkpoints folder, over-long prompts, bad settings),
concurrent requests stay independent, a reader that leaves stops the decoding and frees its slot at once,
past --max_streams a 503, the command line. The page in headless Chromium: test_playground_page.py."""

from __future__ import annotations

import http.client
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stdout
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import toy_sentences

import picollm.serve.playground as playground
from picollm.analyze.generate import DecodeConfig, Generation, continuation_text, generate
from picollm.cli.generate import main as generate_main
from picollm.cli.playground import EXTRA_HINT
from picollm.config import RunConfig
from picollm.data.tokenizers import BPETokenizer
from picollm.study.pages import playground_href
from picollm.train.loop import train_run

NO_EXTRA = "the playground extra is not installed: pip install -e '.[playground]'"
pytest.importorskip("starlette", reason=NO_EXTRA)
uvicorn = pytest.importorskip("uvicorn", reason=NO_EXTRA)

from picollm.serve.app import create_app  # noqa: E402  (needs the extra)

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------------------
# fixtures: two tiny runs (a char transformer whose context is shorter than the generations, a word LSTM),
# a symlink leading out of the checkpoints folder, and the server in a background thread
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("playground")
    corpus = root / "toy.txt"
    corpus.write_text("\n".join(toy_sentences(800)) + "\n")
    out = {}
    for family, tokenizer in [("transformer", "char"), ("lstm", "word")]:
        cfg = RunConfig(corpus=str(corpus), model=family, tokenizer=tokenizer, embed=16, hidden=32, layers=1,
                        heads=2, block_size=16, batch_size=8, max_steps=20, eval_interval=10, eval_tokens=512,
                        warmup_steps=5, lr=1e-2, threads=1, out_dir=str(root / "checkpoints"), progress=False)
        out[family] = train_run(cfg, quiet=True)
    (root / "checkpoints" / "notes").mkdir()  # not a run: no config.json
    shutil.copytree(out["lstm"], root / "outside")
    (root / "checkpoints" / "escape").symlink_to(root / "outside")  # a run in every way, but outside
    return out


class Server:
    def __init__(self, root: Path, **app_settings) -> None:
        self.app = create_app(root, allowed_hosts=playground.allowed_hosts("127.0.0.1"), **app_settings)
        sock = playground.listen("127.0.0.1", 0)
        self.port = sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline and self.thread.is_alive(), "the playground did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(runs):
    s = Server(next(iter(runs.values())).parent)
    yield s
    s.stop()


# --------------------------------------------------------------------------------------------------
# helpers: raw HTTP, the stream's events, the CLI's output
# --------------------------------------------------------------------------------------------------
def request(server: Server, method: str, path: str, body=None, headers=None) -> tuple[int, str, str]:
    """(status, content type, text); the path goes out exactly as given (no normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    res = conn.getresponse()
    text = res.read().decode()
    conn.close()
    return res.status, res.getheader("content-type") or "", text


def parse_events(text: str) -> list[tuple[str, dict]]:
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def stream(server: Server, run: str, prompt: str, checkpoint: str = "best",
           **settings) -> list[tuple[str, dict]]:
    status, kind, text = request(server, "POST", f"/api/runs/{quote(run, safe='')}/generate",
                                 {"prompt": prompt, "checkpoint": checkpoint, "settings": settings})
    assert status == 200 and kind.startswith("text/event-stream"), text
    events = parse_events(text)
    assert [e for e, _ in events] == ["start"] + ["token"] * (len(events) - 2) + ["done"], events[-1]
    return events


def shown_text(events: list[tuple[str, dict]]) -> str:
    """What the page shows: the prompt as the run reads it, each token's piece, then the tail."""
    done = events[-1][1]
    assert done["tail"] is not None
    return events[0][1]["prompt_text"] + "".join(d["piece"] for e, d in events if e == "token") + done["tail"]


def cli_flags(settings: dict) -> list[str]:
    flags = []
    for k, v in settings.items():
        flags += [f"--{k}" if v else f"--no-{k}"] if isinstance(v, bool) else [f"--{k}", str(v)]
    return flags


def cli(run_dir: Path, prompt: str, checkpoint: str = "best", **settings) -> tuple[str, str]:
    """(header line, text) printed by `picollm generate` for one prompt."""
    out = io.StringIO()
    with redirect_stdout(out):
        assert generate_main(["--run", str(run_dir), "--prompt", prompt, "--checkpoint", checkpoint,
                              *cli_flags(settings)]) == 0
    header, text = out.getvalue().split("\n", 1)
    assert text.endswith("\n")
    return header, text[:-1]


# --------------------------------------------------------------------------------------------------
# the stream is the CLI's text
# --------------------------------------------------------------------------------------------------
CASES = [
    ("transformer", "the cat", "best", dict(temperature=0.8, top_k=5, top_p=0.9, repetition_penalty=1.3,
                                            seed=7, max_new_tokens=40)),  # past the 16-token context
    ("lstm", "the cat sat", "last", dict(temperature=1.0, seed=3, max_new_tokens=25, stop_at_eos=False)),
    ("lstm", "", "best", dict(temperature=0, max_new_tokens=20)),  # empty prompt: a new document at <eos>
    ("transformer", "a dog", "best", dict(beam=3, max_new_tokens=15, length_penalty=0.7)),
]


@pytest.mark.parametrize("family,prompt,checkpoint,settings", CASES,
                         ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(CASES)])
def test_stream_is_the_cli_text(server, runs, family, prompt, checkpoint, settings):
    run_dir = runs[family]
    events = stream(server, run_dir.name, prompt, checkpoint, **settings)
    header, text = cli(run_dir, prompt, checkpoint, **settings)
    start, done = events[0][1], events[-1][1]
    assert shown_text(events) == text
    assert text.endswith(done["text"]) and start["prompt_text"] + done["text"] == text
    assert start["checkpoint"] == checkpoint and start["strategy"] == DecodeConfig(**settings).strategy
    tokens = [d for e, d in events if e == "token"]
    assert len(tokens) == done["tokens"] > 0
    for t in tokens:  # generate.annotate's record, per token
        assert t["logprob"] <= 0 and len(t["alternatives"]) == 5 and len(t["neighbours"]) == 5
        assert t["alternatives"] == sorted(t["alternatives"], key=lambda a: -a[1])
    mean = sum(t["logprob"] for t in tokens) / len(tokens)
    assert abs(mean - done["mean_logprob"]) < 1e-3
    assert f"mean log-prob {done['mean_logprob']:.3f}" in header


def test_on_token_hears_every_token_as_generate_returns_them(runs):
    from picollm.runs.checkpoint import load_run

    _, tokenizer, model, _ = load_run(runs["lstm"])
    prompts = [tokenizer.encode("the cat"), tokenizer.encode("a dog sat on")]  # lockstep rows of two lengths
    for cfg in (DecodeConfig(temperature=1.0, max_new_tokens=12, seed=5),
                DecodeConfig(beam=2, max_new_tokens=8)):
        heard: dict[int, list[Generation]] = {}

        def hear(row: int, piece: Generation, heard=heard) -> None:
            heard.setdefault(row, []).append(piece)

        gens = generate(model, prompts, cfg, tokenizer.eos_id, 2, on_token=hear)
        assert gens == generate(model, prompts, cfg, tokenizer.eos_id, 2)  # the hook changes nothing
        for row, g in enumerate(gens):
            assert [p.ids[0] for p in heard[row]] == g.ids
            assert [p.logprobs[0] for p in heard[row]] == pytest.approx(g.logprobs)
            assert [p.top_ids[0] for p in heard[row]] == g.top_ids


def test_pieces_add_up_across_characters_split_over_tokens():
    tokenizer = BPETokenizer.from_text("the cat sat on the mat. " * 50, vocab_size=300)
    prompt, ids = tokenizer.encode("the"), tokenizer.encode(" snowman \u2603 and caf\u00e9")
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids)  # some tokens are pieces of a character
    pieces = playground.Pieces(tokenizer, prompt)
    shown = [pieces.add(i) for i in ids]
    text = continuation_text(tokenizer, Generation(prompt, ids, []))
    assert not any("\ufffd" in s for s in shown)
    assert "".join(shown) + pieces.tail(text) == text == " snowman \u2603 and caf\u00e9"


# --------------------------------------------------------------------------------------------------
# what it refuses
# --------------------------------------------------------------------------------------------------
OUTSIDE = ["/api/runs/..%2F..%2Fetc%2Fpasswd", "/api/runs/..", "/api/runs/%2E%2E", "/api/runs/..%2Foutside",
           "/api/runs/%2Fetc", "/api/runs/..%5C..%5Cetc", "/api/runs/%2Ftmp", "/api/runs/escape",
           "/api/runs/notes", "/api/runs/nope", "/api/runs/.%2F", "/assets/..%2Fplayground.py",
           "/assets/playground.html",
           "/api/runs/../../etc/passwd", "/etc/passwd"]


@pytest.mark.parametrize("path", OUTSIDE)
def test_nothing_outside_the_checkpoints_folder(server, path):
    for method, tail in [("GET", ""), ("POST", "/generate")]:
        status, kind, text = request(server, method, path + tail, {"prompt": "the"})
        assert status == 404, (method, path, text)
        assert kind.startswith("application/json") and json.loads(text)["error"]


def test_the_run_list_holds_only_runs_inside(server, runs):
    status, _, text = request(server, "GET", "/api/runs")
    rows = {r["run"]: r for r in json.loads(text)["runs"]}
    assert status == 200 and sorted(rows) == sorted(p.name for p in runs.values())  # no escape, no notes
    row = rows[runs["lstm"].name]
    assert row["model"] == "lstm" and row["params"] > 0 and row["val_loss"] > 0
    assert row["checkpoints"] == ["best", "last"]
    status, _, text = request(server, "GET", f"/api/runs/{runs['lstm'].name}")
    assert status == 200 and json.loads(text) == row


BAD = [
    ({"prompt": "x" * (playground.MAX_PROMPT_CHARS + 1)}, 400, "the playground takes at most 4,000"),
    ({"prompt": "the", "settings": {"max_new_tokens": playground.MAX_NEW_TOKENS + 1}}, 400, "at most 1,000"),
    ({"prompt": "the", "settings": {"beam": 99}}, 400, "--beam must be at most 16"),
    ({"prompt": "the", "settings": {"temperature": -1}}, 400, "--temperature must be a finite number >= 0"),
    ({"prompt": "the", "settings": {"temperature": "hot"}}, 400,
     "--temperature must be a finite number >= 0; got 'hot'"),
    ({"prompt": "the", "settings": {"top_k": "2.5"}}, 400, "--top_k must be an integer >= 0; got '2.5'"),
    ({"prompt": "the", "settings": {"top_p": "nan"}}, 400, "--top_p must be in (0, 1]"),
    ({"prompt": "the", "settings": {"warmth": 1}}, 400, "unknown setting(s) 'warmth'"),
    ({"prompt": "the", "checkpoint": "middle"}, 400, "checkpoint must be best or last"),
    ({"settings": {}}, 400, "the prompt is missing"),
    ({"prompt": 5}, 400, "the prompt must be text"),
    ([1, 2], 400, "must be a JSON object"),
    (b"{not json", 400, "not valid JSON"),
    (b"x" * (playground.MAX_BODY_BYTES + 1), 413, "the request is over 64 KB"),
]


@pytest.mark.parametrize("body,status,fragment", BAD, ids=[f[2] for f in BAD])
def test_bad_requests_are_a_message(server, runs, body, status, fragment):
    got, kind, text = request(server, "POST", f"/api/runs/{runs['transformer'].name}/generate", body)
    assert (got, kind) == (status, "application/json"), text
    assert fragment in json.loads(text)["error"]


def test_an_empty_prompt_needs_an_eos_token_and_json_only(server, runs):
    path = f"/api/runs/{runs['transformer'].name}/generate"
    got, _, text = request(server, "POST", path, {"prompt": ""})
    assert got == 400 and "no end-of-sequence token" in json.loads(text)["error"]  # char tokenizer: none
    got, _, text = request(server, "POST", path, b'{"prompt": "a"}',
                           headers={"Content-Type": "text/plain"})  # what a cross-site form could send
    assert got == 415 and "JSON" in json.loads(text)["error"]
    got, _, text = request(server, "GET", "/api/runs", headers={"Host": "evil.example:80"})  # DNS rebinding
    assert got == 400


# --------------------------------------------------------------------------------------------------
# concurrency and leaving readers
# --------------------------------------------------------------------------------------------------
def test_concurrent_streams_are_the_sequential_ones(server, runs):
    pairs = [("transformer", 1), ("transformer", 2), ("lstm", 1), ("lstm", 4)]
    jobs = [(runs[family].name, seed) for family, seed in pairs]
    settings = dict(temperature=1.0, max_new_tokens=30, stop_at_eos=False)
    one_by_one = [shown_text(stream(server, run, "the cat", seed=seed, **settings)) for run, seed in jobs]
    barrier = threading.Barrier(len(jobs))

    def at_once(job):
        barrier.wait()
        return shown_text(stream(server, job[0], "the cat", seed=job[1], **settings))

    with ThreadPoolExecutor(len(jobs)) as pool:
        assert list(pool.map(at_once, jobs)) == one_by_one
    assert one_by_one[0] != one_by_one[1] and one_by_one[2] != one_by_one[3]  # the seed matters


def test_a_reader_that_leaves_stops_the_decoding(server, runs, monkeypatch):
    calls = []

    def slow_annotate(*args):
        calls.append(1)
        time.sleep(0.01)  # 1,000 tokens: 10 s
        return annotate(*args)

    annotate = playground.annotate
    monkeypatch.setattr(playground, "annotate", slow_annotate)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    body = {"prompt": "the", "settings": {"max_new_tokens": 1000, "stop_at_eos": False}}
    conn.request("POST", f"/api/runs/{runs['lstm'].name}/generate", json.dumps(body),
                 {"Content-Type": "application/json"})
    res = conn.getresponse()
    while b"event: token" not in res.readline():
        pass
    conn.sock.shutdown(2)
    conn.close()
    loaded = server.app.state.playground.cache.get(runs["lstm"], "best")
    deadline = time.time() + 5
    while loaded.lock.locked() and time.time() < deadline:
        time.sleep(0.05)
    assert not loaded.lock.locked() and len(calls) < 500, len(calls)


def open_stream(server: Server, run: str, **settings) -> tuple[http.client.HTTPConnection, int, str]:
    """(connection, status, its first line: the start event's, or the refusal's JSON), the stream left open."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    body = {"prompt": "the", "settings": {"max_new_tokens": 1000, "stop_at_eos": False, **settings}}
    conn.request("POST", f"/api/runs/{run}/generate", json.dumps(body), {"Content-Type": "application/json"})
    res = conn.getresponse()
    return conn, res.status, (res.readline() if res.status == 200 else res.read()).decode()


def leave(conn: http.client.HTTPConnection) -> None:
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()


BUSY = "the playground is busy: 1 stream running, its limit (--max_streams 1); try again when one ends"


@pytest.fixture
def one_slot(runs, monkeypatch):
    """(server, gate, calls): a playground with one stream slot, whose decodings stall after their first token
    (no token flowing) until the gate opens; calls counts the tokens decoded."""
    gate, calls = threading.Event(), []
    annotate = playground.annotate

    def stalled_annotate(*args):
        if calls:
            gate.wait(30)
        calls.append(1)
        return annotate(*args)

    monkeypatch.setattr(playground, "annotate", stalled_annotate)
    server = Server(runs["lstm"].parent, max_streams=1)
    yield server, gate, calls
    gate.set()
    server.stop()


def test_past_max_streams_a_503_and_a_reader_that_leaves_frees_its_slot_at_once(one_slot, runs):
    """The first stream stalls: a second one is refused with the reason; the first reader leaves and a new
    stream is accepted at once, though no token flows (the server hears the leaving itself)."""
    server, gate, calls = one_slot
    slots = server.app.state.playground.streams
    lstm, transformer = runs["lstm"].name, runs["transformer"].name
    first, status, line = open_stream(server, lstm)
    assert status == 200 and line == "event: start\n"
    while not calls:
        time.sleep(0.01)
    conn, status, text = open_stream(server, transformer)
    conn.close()
    assert status == 503 and json.loads(text) == {"error": BUSY}
    leave(first)
    left = time.perf_counter()
    while True:  # measured: accepted at the first try, 2 ms after the leaving
        again, status, line = open_stream(server, lstm)  # same model: waits for the stalled decoding
        if status == 200 or time.perf_counter() - left > 2:
            break
        again.close()
    assert status == 200 and line == "event: start\n", line
    leave(again)
    gate.set()
    deadline = time.time() + 10
    while slots.active and time.time() < deadline:
        time.sleep(0.01)
    assert slots.active == 0
    for _ in range(3):  # a reader that got its last event may start its next stream at once
        stream(server, transformer, "the cat", max_new_tokens=5)
    loaded = server.app.state.playground.cache.get(runs["lstm"], "best")
    while loaded.lock.locked() and time.time() < deadline:  # both lstm decodings stopped
        time.sleep(0.01)
    assert not loaded.lock.locked() and len(calls) < 20, len(calls)


def test_the_model_cache_is_bounded_and_reloads_a_rewritten_checkpoint(runs):
    cache = playground.ModelCache(size=2)
    first = cache.get(runs["lstm"], "best")
    assert cache.get(runs["lstm"], "best") is first
    cache.get(runs["lstm"], "last")
    cache.get(runs["transformer"], "best")
    assert len(cache._items) == 2 and cache.get(runs["lstm"], "best") is not first  # least recently used
    again = cache.get(runs["lstm"], "best")
    os.utime(runs["lstm"] / "best.pt", ns=(time.time_ns(), time.time_ns() + 10**9))  # a newer file
    assert cache.get(runs["lstm"], "best") is not again and len(cache._items) == 2


# --------------------------------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------------------------------
def test_help_and_the_printed_urls(runs):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "picollm", "playground"]
    done = subprocess.run([*cmd, "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0 and "--checkpoints" in done.stdout and "127.0.0.1" in done.stdout
    folder = runs["lstm"].parent
    proc = subprocess.Popen([*cmd, "--checkpoints", str(folder), "--port", "0"], text=True, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=folder.parent)
    try:
        url, link = proc.stdout.readline(), proc.stdout.readline()
        assert url.startswith("playground: http://127.0.0.1:"), url + proc.stderr.read()
        template = link.strip().split("PICOLLM_PLAYGROUND_URL=", 1)[1]
        assert template.startswith("http://127.0.0.1:") and template.endswith("/?run={run}")
        port = int(template.split(":")[2].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", playground_href(template, runs["lstm"].name).split(str(port), 1)[1])
        res = conn.getresponse()
        assert res.status == 200 and b"picollm playground" in res.read()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0


def test_without_the_extra_one_error_line(tmp_path):
    code = ("import sys; sys.modules['uvicorn'] = None; from picollm.core.commands import run_cli; "
            "from picollm.cli.playground import main; run_cli(main, ['--checkpoints', sys.argv[1]])")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2 and done.stderr == EXTRA_HINT + "\n" and not done.stdout
