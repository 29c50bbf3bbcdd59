"""Export trained runs to other tools' formats.

    picollm export tensorboard --checkpoints checkpoints   # event files for every run, then:
    tensorboard --logdir checkpoints

`tensorboard` writes (or refreshes) each run's TensorBoard event files, as training does with the tensorboard
extra installed: for runs trained before it was, and to add the test metrics of a later analysis.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm.auto import tqdm

from picollm.core.commands import ArgumentParser
from picollm.core.errors import CheckpointError, PicoError
from picollm.runs import events as tensorboard
from picollm.runs.layout import list_runs


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    parser = ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    formats = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    tb = formats.add_parser("tensorboard", help="TensorBoard event files in every run directory",
                            description="Write or refresh the TensorBoard event files of every run under "
                                        "--checkpoints, so `tensorboard --logdir DIR` shows them all.")
    tb.add_argument("--checkpoints", default="checkpoints", metavar="DIR", help="root of the run directories")
    tb.add_argument("--analysis", default="analysis_runs", metavar="DIR",
                    help="root of the analyses: a run's test metrics are added when its analysis "
                         "evaluated the run's current best.pt")
    return parser.parse_args(argv)


def export_tensorboard(checkpoints: Path | str,
                       analysis_root: Path | str) -> tuple[list[str], dict[str, str]]:
    """Event files for every run under checkpoints: (runs written, {run: why skipped})."""
    if not tensorboard.available():
        raise PicoError("tensorboard is not installed (or does not import); pip install "
                        "'picollm[tensorboard]' (or pip install tensorboard) and run this again")
    root = Path(checkpoints)
    if not root.is_dir():
        raise CheckpointError(f"checkpoints directory {root} does not exist; train runs first or pass "
                              "--checkpoints DIR")
    written: list[str] = []
    skipped: dict[str, str] = {}
    for run_dir in tqdm(list_runs(root), desc="tensorboard", unit="run", dynamic_ncols=True, disable=None):
        try:
            tensorboard.write_run_events(run_dir, analysis_root=analysis_root)
            written.append(run_dir.name)
        except CheckpointError as e:  # a run killed before its first evaluation has no metrics yet
            skipped[run_dir.name] = str(e)
    return written, skipped


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    written, skipped = export_tensorboard(args.checkpoints, args.analysis)
    for run, reason in skipped.items():
        print(f"warning: {run} skipped: {reason}", file=sys.stderr)
    print(f"wrote TensorBoard events for {len(written)} run(s) under {args.checkpoints}"
          + (f" ({len(skipped)} skipped)" if skipped else "") + f"; view them with: tensorboard --logdir "
          f"{args.checkpoints}")
    return 0
