"""The xLSTM study (issue 6): language modelling at matched size, and nearest-neighbour search.

    picollm xlstm-study lm --max_steps 300 [--embed 64 --layers 2 --test_tokens 20000 --out_dir DIR]
    picollm xlstm-study nn --lengths 4,8,16,32 --steps 400 [--families lstm,xlstm,xlstm_lib,transformer]

Results (CSV, Markdown, PNG) go to --out_dir (default analysis_runs/xlstm_study/). The xlstm_lib family
needs the optional extra: pip install -e .[xlstm] (or leave it out with --families).
(`python xlstm_study.py ...` is the same command.)
"""

from __future__ import annotations

import argparse
from dataclasses import asdict

from picollm.core.commands import ArgumentParser
from picollm.core.errors import ConfigError
from picollm.core.log import setup_logging
from picollm.core.settings import add_settings_args, settings_from_args
from picollm.experiments.settings import LMExperiment, NNExperiment


def _families(text: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    allowed = ("lstm", "xlstm", "xlstm_lib", "transformer")
    if not names or any(n not in allowed for n in names):
        raise ConfigError(f"--families must be a comma list of {', '.join(allowed)}; got {text!r}")
    return names


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    p = ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out_dir", default="analysis_runs/xlstm_study")
    p.add_argument("--families", default="lstm,xlstm,xlstm_lib,transformer")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    sub = p.add_subparsers(dest="study", required=True)
    lm = sub.add_parser("lm", help="language modelling at matched parameter counts")
    add_settings_args(lm, LMExperiment)
    nn = sub.add_parser("nn", help="nearest-neighbour search: accuracy against the number of references")
    nn.add_argument("--lengths", default="4,8,16,32", help="numbers of references")
    add_settings_args(nn, NNExperiment)
    return p.parse_args(argv)


def _lengths(text: str) -> tuple[int, ...]:
    try:
        lengths = tuple(int(n) for n in text.split(","))
    except ValueError:
        raise ConfigError(f"--lengths must be a comma list of integers; got {text!r}") from None
    if any(n < 1 for n in lengths):
        raise ConfigError(f"--lengths must be positive numbers of references; got {text!r}")
    return lengths


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    families = _families(args.families)
    if args.threads < 0:
        raise ConfigError(f"--threads must be >= 0 (0 = torch default); got {args.threads}")
    # the experiments import torch: not needed for --help or a usage error
    from picollm.experiments.nearest_neighbour import run_nn_experiment
    from picollm.experiments.xlstm_vs_baselines import run_lm_experiment

    if args.study == "lm":
        settings = LMExperiment(**settings_from_args(args, LMExperiment))  # validated before the log file is opened
        setup_logging(f"xlstm_study-{args.study}")
        df = run_lm_experiment(args.out_dir, families, args.threads, **asdict(settings))
    else:
        settings = NNExperiment(**settings_from_args(args, NNExperiment))
        lengths = _lengths(args.lengths)
        setup_logging(f"xlstm_study-{args.study}")
        df = run_nn_experiment(args.out_dir, lengths, families, args.threads, **asdict(settings))
    print(df.drop(columns=[c for c in ("run", "family") if c in df]).to_string(index=False))
    print(f"wrote results to {args.out_dir}/")
    return 0
