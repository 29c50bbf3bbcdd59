"""Analyse every run under --checkpoints in parallel and keep one row per run in <out>/runs.csv.

    picollm analyze-all --checkpoints checkpoints --out analysis_runs --workers 2
    picollm analyze-all --no-skip_existing      # re-analyse everything
    picollm analyze-all --backend ray --address HEAD:6379 --checkpoints /shared/checkpoints --out /shared/analysis_runs

Exit code 0 when every run was analysed, up to date or skipped as unfinished; 1 when any run failed.
(`python analyze_all_checkpoints.py ...` is the same command.)
"""

from __future__ import annotations

import argparse

from picollm.analyze.settings import add_max_new_tokens_arg
from picollm.core.commands import ArgumentParser
from picollm.core.log import setup_logging
from picollm.core.ray_tasks import BACKENDS, check_backend


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    parser = ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", default="checkpoints", help="root of the run directories")
    parser.add_argument("--out", default="analysis_runs", help="root of the analysis directories")
    parser.add_argument("--workers", type=int, default=None, help="parallel worker processes (default 1; on the "
                        "CPU at most one per core; torch threads are split among them); Ray: runs at once at most "
                        "(default: as many as the cluster has CPUs for)")
    parser.add_argument("--skip_existing", action=argparse.BooleanOptionalAction, default=True,
                        help="skip runs whose analysis is newer than their checkpoints")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    add_max_new_tokens_arg(parser)
    parser.add_argument("--threads", type=int, default=0, help="torch threads per worker (0 = the cores split "
                        "over the workers and those of the other picollm jobs running, as each run starts); Ray: "
                        "the CPUs each run's task reserves (0 = 1)")
    parser.add_argument("--backend", default="local", choices=BACKENDS, help="local worker processes, or Ray "
                        "tasks on the cluster that trained the runs (pip install -e .[ray]; see the README's \"Ray "
                        "cluster\")")
    parser.add_argument("--address", default=None, help="Ray cluster HOST:PORT to join (--backend ray; default: "
                        "a local Ray); --checkpoints and --out must then be on a filesystem every node shares")
    args = parser.parse_args(argv)
    check_backend(args.backend, args.address)
    return args


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    from picollm.analyze.analysis import analyze_all  # imports torch: not needed for --help or a usage error

    setup_logging("analyze")
    table = analyze_all(args.checkpoints, args.out, workers=args.workers, skip_existing=args.skip_existing,
                        device=args.device, max_new_tokens=args.max_new_tokens, threads=args.threads,
                        backend=args.backend, address=args.address)
    return 1 if table.attrs["tally"]["failed"] else 0
