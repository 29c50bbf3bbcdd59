"""Time xLSTM forward + backward on CPU: ours against the official library, for the three block mixes.

    python bench/xlstm.py [--threads 2] [--batch 8] [--T 64] [--embed 128] [--layers 4] [--repeat 15] [--compile]
                          [--baseline REV] [--scan] [--clock wall|cpu]

Ours and the library (if installed: pip install -e .[xlstm]) are timed interleaved, one step of each in
turn, so that load from other processes on a shared machine affects both alike. --compile adds our model
under torch.compile (inductor; `cpp_wrapper` on, which removes most of the Python launch overhead on CPU);
its one-off compile time is printed and not counted. --baseline REV adds our model with the cell kernels
(picollm/models/xlstm/kernels.py) of git revision REV, e.g. the TorchScript sLSTM loops of 96adb92, and
prints base/ours; --scan times the sLSTM scan alone as well (--ratios '' for the scan only). --clock cpu times the thread's CPU time instead of the wall clock (one thread only): it
leaves out the time the process waits for a core, so it is steadier on a shared machine. The median is
what a training loop sees; the minimum is the better estimate on a busy machine. Prints `uptime` first.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

# this file is named xlstm.py: drop its folder from the path so `import xlstm` finds the library, not us
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import picollm.models.xlstm.model as xlstm_model  # noqa: E402
from picollm.models.base import LanguageModel  # noqa: E402
from picollm.models.xlstm.config import XLSTMConfig  # noqa: E402
from picollm.models.xlstm.model import XLSTM  # noqa: E402

KERNELS = "picollm/models/xlstm/kernels.py"
SWAPPED = ("slstm_scan", "mlstm_chunkwise", "mlstm_parallel", "mlstm_recurrent")  # what model.py calls of them
BASELINES: dict[str, dict[str, Callable]] = {}  # model name -> the kernels it runs with


def load_kernels(rev: str) -> dict[str, Callable]:
    """The cell functions of KERNELS as of git revision `rev`, imported from a file of their own (TorchScript
    reads the source of what it compiles)."""
    root = Path(__file__).resolve().parent.parent
    source = subprocess.run(["git", "-C", str(root), "show", f"{rev}:{KERNELS}"], capture_output=True, text=True,
                            check=True).stdout
    path = Path(tempfile.mkdtemp()) / f"kernels_{rev.replace('/', '_')}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {name: getattr(module, name) for name in SWAPPED}


def make_models(ratio: str, args) -> dict[str, LanguageModel]:
    torch.manual_seed(0)
    models: dict[str, LanguageModel] = {}
    for backend in args.backends.split(","):
        cfg = XLSTMConfig(vocab_size=args.vocab, embed=args.embed, hidden=args.embed, layers=args.layers,
                          heads=args.heads, xlstm_ratio=ratio)
        model = XLSTM(cfg)
        model.set_mlstm_backend(backend)
        models[f"ours/{backend}"] = model
        if args.baseline:
            base = XLSTM(cfg)
            base.load_state_dict(model.state_dict())
            base.set_mlstm_backend(backend)
            models[f"ours/{backend}@{args.baseline}"] = base
            BASELINES[f"ours/{backend}@{args.baseline}"] = load_kernels(args.baseline)
        if args.compile:
            import torch._inductor.config as inductor_config

            inductor_config.cpp_wrapper = True
            models[f"ours/{backend}+compile"] = torch.compile(model)
        if ratio == "0:1":
            break  # no mLSTM block: the backends are the same model
    if not args.no_lib:
        try:
            from picollm.models.xlstm_lib.config import XLSTMLibConfig
            from picollm.models.xlstm_lib.model import XLSTMLib

            models["library"] = XLSTMLib(XLSTMLibConfig(vocab_size=args.vocab, block_size=args.T, embed=args.embed,
                                                        layers=args.layers, heads=args.heads, xlstm_ratio=ratio))
        except ImportError:
            print("library not installed: pip install -e .[xlstm]")
    return models


def step_fn(model: LanguageModel, idx: torch.Tensor, vocab: int, kernels: dict[str, Callable] | None = None
            ) -> Callable[[], None]:
    def step() -> None:
        model.zero_grad(set_to_none=True)
        logits, _ = model(idx[:, :-1])
        F.cross_entropy(logits.reshape(-1, vocab), idx[:, 1:].reshape(-1)).backward()

    if kernels is None:
        return step

    def step_with_kernels() -> None:  # model.py looks its cells up at call time: swap them in for this step
        ours = {name: getattr(xlstm_model, name) for name in kernels}
        vars(xlstm_model).update(kernels)
        try:
            step()
        finally:
            vars(xlstm_model).update(ours)

    return step_with_kernels


def time_interleaved(steps: dict[str, Callable[[], None]], args) -> dict[str, tuple[float, float]]:
    """name -> (median ms, min ms): after args.warmup rounds, args.repeat rounds of one call of each in turn."""
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    for _ in range(args.warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.repeat):
        for name, step in steps.items():
            t0 = clock()
            step()
            times[name].append(clock() - t0)
    return {name: (statistics.median(t) * 1e3, min(t) * 1e3) for name, t in times.items()}


def bench(ratio: str, args) -> dict[str, tuple[float, float, int]]:
    """name -> (median ms, min ms, params), measured interleaved."""
    models = make_models(ratio, args)
    idx = torch.randint(0, args.vocab, (args.batch, args.T + 1), generator=torch.Generator().manual_seed(0))
    steps = {name: step_fn(m, idx, args.vocab, BASELINES.get(name)) for name, m in models.items()}
    for name, step in steps.items():
        if name.endswith("+compile"):
            t0 = time.perf_counter()
            step()
            print(f"{ratio:>6} {name}: compiled in {time.perf_counter() - t0:.0f} s", flush=True)
    return {name: (*times, sum(p.numel() for p in models[name].parameters()))
            for name, times in time_interleaved(steps, args).items()}


def bench_scan(args) -> None:
    """Prints the time of slstm_scan alone, forward + backward, at the shape of the model's sLSTM blocks:
    ours and, with --baseline, the baseline's, interleaved."""
    NH, DH, gen = args.heads, args.embed // args.heads, torch.Generator().manual_seed(0)
    wx = torch.randn(args.T, NH, args.batch, 4 * DH, generator=gen).requires_grad_()
    R = (0.3 * torch.randn(NH, DH, 4 * DH, generator=gen)).requires_grad_()
    g_hs = torch.randn(args.T, NH, args.batch, DH, generator=gen)
    scans = {"ours": xlstm_model.slstm_scan}
    if args.baseline:
        scans[f"@{args.baseline}"] = load_kernels(args.baseline)["slstm_scan"]

    def step_fn(scan: Callable) -> Callable[[], None]:
        def step() -> None:
            wx.grad = R.grad = None
            scan(wx, R)[0].backward(g_hs)

        return step

    res = time_interleaved({name: step_fn(scan) for name, scan in scans.items()}, args)
    line = "  ".join(f"{name} {med:.2f} ms (min {best:.2f})" for name, (med, best) in res.items())
    if args.baseline:
        (med, best), (base_med, base_best) = res.values()
        line += f"  base/ours {base_med / med:.3f}x (min {base_best / best:.3f}x)"
    print(f"sLSTM scan alone, T={args.T} NH={NH} B={args.batch} DH={DH}: {line}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--T", type=int, default=64)
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--embed", type=int, default=128, help="block width (embed == hidden, as the library)")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--ratios", default="1:0,1:1,0:1")
    p.add_argument("--backends", default="chunkwise", help="our mLSTM forms to time (chunkwise,parallel,recurrent)")
    p.add_argument("--no_lib", action="store_true", help="time ours only")
    p.add_argument("--compile", action="store_true", help="also time ours under torch.compile")
    p.add_argument("--baseline", metavar="REV", help=f"also time ours with the {KERNELS} of git revision REV")
    p.add_argument("--scan", action="store_true", help="also time the sLSTM scan alone (forward + backward)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall clock, or the thread's CPU time (steadier on a shared machine; needs --threads 1)")
    args = p.parse_args()
    if args.clock == "cpu" and args.threads != 1:
        p.error("--clock cpu counts the main thread only: use it with --threads 1")
    torch.set_num_threads(args.threads)
    print(f"uptime: {os.popen('uptime').read().strip()}")
    print(f"B={args.batch} T={args.T} embed=hidden={args.embed} layers={args.layers} heads={args.heads} "
          f"threads={args.threads} repeat={args.repeat} clock={args.clock} torch={torch.__version__}")
    if args.scan:
        bench_scan(args)
    base_col = f"{'base/ours (med, min)':>21}" if args.baseline else ""
    if args.ratios:
        print(f"{'ratio':>6} {'model':>28} {'params':>9} {'median ms':>10} {'min ms':>8} {'lib/ours (median)':>18} "
              + base_col)
    for ratio in filter(None, args.ratios.split(",")):
        res = bench(ratio, args)
        lib = res.get("library")
        for name, (med, best, n) in res.items():
            speedup = f"{lib[0] / med:.2f}x" if lib and name != "library" else ""
            base = res.get(f"{name}@{args.baseline}")
            vs_base = f"{base[0] / med:.3f}x, {base[1] / best:.3f}x" if base else ""
            print(f"{ratio:>6} {name:>28} {n:>9,} {med:>10.1f} {best:>8.1f} {speedup:>18} {vs_base:>21}", flush=True)
    print(f"uptime: {os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()
