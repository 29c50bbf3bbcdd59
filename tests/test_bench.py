"""The benchmarks' prepared parts that can be checked without their hardware or their minutes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_script_parses():
    subprocess.run(["bash", "-n", str(ROOT / "bench" / "gpu.sh")], check=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the script runs its ten minutes of checks")
def test_gpu_script_without_cuda_says_so_in_one_line_and_fails(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path)}
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[-1] == "gpu env: no CUDA device; nothing to check"
    assert not list(tmp_path.iterdir())  # it stopped before training anything


def test_the_precision_bench_reads_within_and_outside_the_seed_range():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from precision import family_line
    finally:
        sys.path.pop(0)
    fp32 = [("a", 1.50, 10.0), ("b", 1.52, 10.0)]
    line, word = family_line("lstm", fp32, [("a", 1.51, 5.0), ("b", 1.51, 5.0)])
    assert word == "lstm=within" and "within the fp32 range" in line
    _, word = family_line("lstm", fp32, [("a", 1.56, 10.0), ("b", 1.58, 10.0)])
    assert word == "lstm=outside"


def test_the_muon_bench_times_the_optimizers_it_names():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import muon as bench_muon
    finally:
        sys.path.pop(0)
    from picollm.config import RunConfig
    from picollm.models import build_model
    from picollm.train.muon import JORDAN5, POLAR3, Muon

    cfg = RunConfig(model="transformer", layers=1, heads=2, embed=16, block_size=8, batch_size=2)
    expected = {"torch": None, "jordan5-bf16": (JORDAN5, torch.bfloat16), "polar3-fp32": (POLAR3, torch.float32),
                "polar3-bf16": (POLAR3, torch.bfloat16)}
    for name in bench_muon.VARIANTS:
        opt = bench_muon.variant_optimizer(name, build_model(cfg, 11), cfg)
        if name == "adamw":
            assert isinstance(opt, torch.optim.AdamW)
            continue
        muon = opt.optimizers[0]
        if expected[name] is None:
            assert type(muon) is torch.optim.Muon
        else:
            assert isinstance(muon, Muon) and (muon.ns_schedule, muon.ns_dtype) == expected[name]


def test_the_step_profile_bench_times_and_profiles_the_preset_rows_it_names():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "step_profile.py"), "--runs", "fast:1", "fast:9",
                           "--repeat", "1", "--warmup", "0", "--profile_steps", "1", "--top", "3"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    heads = [line for line in proc.stdout.splitlines() if line.startswith("step_profile run=")]
    assert [h.split()[1] for h in heads] == ["run=fast:1", "run=fast:9"]
    assert "model=kgram_mlp" in heads[0] and "model=lstm" in heads[1]
    ops = [line for line in proc.stdout.splitlines() if "ms/step" in line]
    assert len(ops) == 6  # --top 3 for each run
    assert proc.stdout.splitlines()[-1].startswith("step_profile_ratio fast:9/fast:1=")
