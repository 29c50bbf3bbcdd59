"""Time xLSTM forward + backward on CPU for the three block mixes.

    python bench/xlstm.py [--threads 2] [--batch 8] [--T 64] [--hidden 128] [--layers 4] [--backends chunkwise]

The median is what a training loop sees; the minimum is the better estimate on a shared, busy machine.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from picollm.models.xlstm import XLSTM, XLSTMConfig


def bench(ratio: str, args, backend: str = "chunkwise") -> tuple[float, float]:
    torch.manual_seed(0)
    cfg = XLSTMConfig(vocab_size=args.vocab, embed=args.embed, hidden=args.hidden, layers=args.layers,
                      heads=args.heads, xlstm_ratio=ratio)
    model = XLSTM(cfg)
    model.set_mlstm_backend(backend)
    idx = torch.randint(0, args.vocab, (args.batch, args.T + 1))

    def step() -> None:
        logits, _ = model(idx[:, :-1])
        F.cross_entropy(logits.reshape(-1, args.vocab), idx[:, 1:].reshape(-1)).backward()

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2] * 1e3, times[0] * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--T", type=int, default=64)
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--embed", type=int, default=64)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--backends", default="chunkwise,parallel,recurrent", help="mLSTM forms to time")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"B={args.batch} T={args.T} hidden={args.hidden} layers={args.layers} heads={args.heads} "
          f"threads={args.threads} torch={torch.__version__}")
    print(f"{'ratio':>6} {'backend':>10} {'params':>9} {'median ms':>10} {'min ms':>8}")
    for ratio in ["1:0", "1:1", "0:1"]:
        for backend in (args.backends.split(",") if ratio != "0:1" else ["-"]):
            med, best = bench(ratio, args, backend if backend != "-" else "chunkwise")
            n = XLSTM(XLSTMConfig(vocab_size=args.vocab, embed=args.embed, hidden=args.hidden,
                                  layers=args.layers, heads=args.heads, xlstm_ratio=ratio)).num_params()
            print(f"{ratio:>6} {backend:>10} {n:>9,} {med:>10.1f} {best:>8.1f}")


if __name__ == "__main__":
    main()
