"""A local playground: generate from any trained run in the browser, token by token, two runs side by side.

    picollm playground [--checkpoints checkpoints] [--port 8000] [--host 127.0.0.1] [--device cpu] [--threads 1]
                       [--max_streams 4x the cores]

Pick a run (searchable list of the runs under --checkpoints, with family, parameters and val loss) and its
best or last checkpoint, type a prompt, set the decoding (the fields of picollm.analyze.settings.DecodeConfig,
with their defaults, help and validation), and watch the tokens arrive (server-sent events). Hover a token for
its log-probability, the model's top-5 alternatives and its nearest embedding neighbours. Put a second run
beside the first to compare them on the same prompt and seed. Same run, prompt, settings and seed give exactly
the text of `picollm generate`. Every asset is served by the playground itself: it works offline.

Safe by default: it listens on 127.0.0.1 only (--host opens it to others: anyone who can reach the port can
run the models); it serves only run directories directly under --checkpoints (any other name is a 404); the
prompt and the tokens generated per request are capped; checkpoints are loaded weights-only; at most
4 models stay in memory; at most --max_streams streams run at once (past it, a 503 that the page shows;
a reader that leaves frees its slot at once). Needs the `playground` extra (Starlette + uvicorn).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from picollm.core.commands import ArgumentParser
from picollm.core.errors import ConfigError
from picollm.core.log import get_logger, setup_logging

log = get_logger()

EXTRA_HINT = "error: the playground needs its extra: pip install -e '.[playground]'"


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    parser = ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    parser.add_argument("--max_streams", type=int, default=None,
                        help="generations streaming at once; past it a request is refused (503, shown in the "
                             "page) until one ends (default: 4 x the cores here: decoding is CPU-bound, a stream "
                             "uses one core at a time and one model decodes one stream at a time, so more "
                             "streams only make each one slower and hold more memory)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be in [0, 65535]; got {args.port}")
    root = Path(args.checkpoints)
    if not root.is_dir():
        raise ConfigError(f"--checkpoints {root} is not a folder; train runs first (main.py, batch_train.py) "
                          "or point --checkpoints at the folder that holds them")
    if args.threads < 1:
        raise ConfigError(f"--threads must be a positive integer; got {args.threads}")
    if args.max_streams is not None and args.max_streams < 1:
        raise ConfigError(f"--max_streams must be a positive integer; got {args.max_streams}")
    # torch and the web stack: not needed for --help or a usage error
    import torch

    from picollm.core.devices import resolve_device
    from picollm.serve.playground import LOOPBACK, allowed_hosts, listen

    device = resolve_device(args.device)
    try:
        import uvicorn

        from picollm.serve.app import create_app
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in ("starlette", "uvicorn"):
            raise
        print(EXTRA_HINT, file=sys.stderr)
        return 2
    sock = listen(args.host, args.port)
    port = sock.getsockname()[1]
    setup_logging("playground")
    torch.set_num_threads(args.threads)
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    base = f"http://{f'[{shown}]' if ':' in shown else shown}:{port}"
    print(f"playground: {base}/ (runs under {root}; Ctrl-C stops it)")
    print(f"for the report's links: PICOLLM_PLAYGROUND_URL={base}/?run={{run}}", flush=True)
    if args.host not in LOOPBACK:
        log.warning(f"warning: --host {args.host}: anyone who can reach port {port} can run these models")
    app = create_app(root, str(device), allowed_hosts=allowed_hosts(args.host), max_streams=args.max_streams)
    try:
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn stops cleanly on Ctrl-C, then raises it again for the caller
        pass
    print("playground stopped")
    return 0
