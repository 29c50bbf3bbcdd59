"""The xLSTM study (issue 6): language modelling at matched size, and nearest-neighbour search.

    python xlstm_study.py lm --max_steps 300 [--embed 64 --layers 2 --test_tokens 20000 --out_dir DIR]
    python xlstm_study.py nn --lengths 4,8,16,32 --steps 400 [--families lstm,xlstm,xlstm_lib,transformer]

Results (CSV, Markdown, PNG) go to --out_dir (default analysis_runs/xlstm_study/). The xlstm_lib family
needs the optional extra: pip install -e .[xlstm] (or leave it out with --families).
"""

from __future__ import annotations

import argparse

from picollm.cli import run_cli
from picollm.errors import ConfigError
from picollm.log import setup_logging


def _families(text: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    allowed = ("lstm", "xlstm", "xlstm_lib", "transformer")
    if not names or any(n not in allowed for n in names):
        raise ConfigError(f"--families must be a comma list of {', '.join(allowed)}; got {text!r}")
    return names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out_dir", default="analysis_runs/xlstm_study")
    p.add_argument("--families", default="lstm,xlstm,xlstm_lib,transformer")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    sub = p.add_subparsers(dest="study", required=True)
    lm = sub.add_parser("lm", help="language modelling at matched parameter counts")
    lm.add_argument("--corpus", default="wikitext2")
    lm.add_argument("--max_steps", type=int, default=300)
    lm.add_argument("--embed", type=int, default=64)
    lm.add_argument("--layers", type=int, default=2, help="xLSTM blocks (the others are matched to its size)")
    lm.add_argument("--heads", type=int, default=4)
    lm.add_argument("--block_size", type=int, default=32)
    lm.add_argument("--batch_size", type=int, default=16)
    lm.add_argument("--lr", type=float, default=3e-3)
    lm.add_argument("--test_tokens", type=int, default=20000, help="cap on scored test tokens (0 = all)")
    lm.add_argument("--eval_tokens", type=int, default=4096, help="validation tokens per evaluation")
    lm.add_argument("--batching", choices=("auto", "random"), default="auto",
                    help="auto: LSTM and xLSTM (ours) on carried-state streams, the others on random windows; "
                         "random: every family on random windows")
    nn = sub.add_parser("nn", help="nearest-neighbour search: accuracy against the number of references")
    nn.add_argument("--lengths", default="4,8,16,32", help="numbers of references")
    nn.add_argument("--steps", type=int, default=400)
    nn.add_argument("--batch", type=int, default=64)
    nn.add_argument("--dim", type=int, default=4)
    nn.add_argument("--classes", type=int, default=4)
    nn.add_argument("--embed", type=int, default=32)
    nn.add_argument("--layers", type=int, default=2)
    nn.add_argument("--heads", type=int, default=2)
    nn.add_argument("--lr", type=float, default=3e-3)
    nn.add_argument("--eval_size", type=int, default=1024)
    args = p.parse_args(argv)
    families = _families(args.families)
    setup_logging(f"xlstm_study-{args.study}")
    if args.study == "lm":
        from picollm.studies.xlstm_vs_baselines import run_lm_study

        df = run_lm_study(args.out_dir, args.corpus, args.max_steps, args.embed, args.layers, args.heads,
                          args.block_size, args.batch_size, args.lr, args.test_tokens, args.eval_tokens,
                          args.threads, families, batching=args.batching)
    else:
        from picollm.studies.nearest_neighbour import run_nn_study

        try:
            lengths = tuple(int(n) for n in args.lengths.split(","))
        except ValueError:
            raise ConfigError(f"--lengths must be a comma list of integers; got {args.lengths!r}") from None
        df = run_nn_study(args.out_dir, lengths, families, args.dim, args.classes, args.embed, args.layers,
                          args.heads, args.steps, args.batch, args.lr, args.eval_size, threads=args.threads)
    print(df.drop(columns=[c for c in ("run", "family") if c in df]).to_string(index=False))
    print(f"wrote results to {args.out_dir}/")
    return 0


if __name__ == "__main__":
    run_cli(main)
