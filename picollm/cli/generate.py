"""Generate from a trained run: greedy, temperature / top-k / top-p sampling with a repetition penalty, or
beam search; --annotate prints each token's log-probability, top-5 alternatives and embedding neighbours.

    picollm generate --run checkpoints/<run> --prompt "To be" --max_new_tokens 200 \\
        --temperature 0.8 --top_k 50 --top_p 0.95 --repetition_penalty 1.2 [--beam 4] [--annotate]

How decoding works (one forward per new token, batched prompts in lockstep): picollm/analyze/generate.py.
"""

from __future__ import annotations

import argparse

from picollm.analyze.settings import DecodeConfig
from picollm.core.commands import ArgumentParser
from picollm.core.errors import ConfigError
from picollm.core.settings import add_settings_args, settings_from_args
from picollm.runs.checkpoint import load_run


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    parser = ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="run directory, e.g. checkpoints/<run>")
    parser.add_argument("--prompt", action="append", default=None,
                        help="prompt text (repeat the flag for several prompts; default: a newline)")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best", help="weights to load")
    add_settings_args(parser, DecodeConfig, group_title="decoding")
    parser.add_argument("--num_samples", type=int, default=1, help="continuations per prompt")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    parser.add_argument("--annotate", action="store_true",
                        help="print each token's log-prob, top-5 alternatives and embedding neighbours")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    cfg = DecodeConfig(**settings_from_args(args, DecodeConfig))
    if args.num_samples < 1:
        raise ConfigError(f"--num_samples must be >= 1; got {args.num_samples}")
    # decoding imports torch: not needed for --help or a usage error
    from picollm.analyze.generate import annotate, continuation_text, encode_prompt, generate
    from picollm.core.devices import resolve_device

    device = resolve_device(args.device)
    _, tokenizer, model, ckpt = load_run(args.run, args.checkpoint, device=str(device))
    texts = args.prompt or ["\n"]
    gens = generate(model, [encode_prompt(tokenizer, t) for t in texts], cfg, tokenizer.eos_id, args.num_samples)
    strings = tokenizer.token_strings() if args.annotate else []
    for n, g in enumerate(gens):
        prompt = texts[n // args.num_samples]
        print(f"--- {cfg.strategy} #{n % args.num_samples + 1} for prompt {prompt!r} "
              f"({args.checkpoint}.pt, step {ckpt.get('step')}, mean log-prob {g.mean_logprob:.3f}) ---")
        print(tokenizer.decode(g.prompt_ids) + continuation_text(tokenizer, g))
        if args.annotate:
            for a in annotate(g, model, strings):
                print(f"  {a['token']!r:>12} {a['logprob']:7.3f}  alt: "
                      + ", ".join(f"{t!r} {p:.2f}" for t, p in a["alternatives"])
                      + "  near: " + ", ".join(repr(s) for s in a["neighbours"]))
    return 0
