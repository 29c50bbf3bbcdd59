"""picollm's batched Muon against torch.optim.Muon: the same steps, the same state, every matrix stepped."""

import copy
import importlib.util
from pathlib import Path

import pytest
import torch

import picollm.train.optimizers as optimizers
from picollm.config import RunConfig
from picollm.models import build_model
from picollm.train.muon import (
    JORDAN5,
    NS_SCHEDULES,
    POLAR3,
    Muon,
    zeropower_via_gram_newtonschulz,
    zeropower_via_newtonschulz,
)

ROOT = Path(__file__).resolve().parents[2]
#: two of a square shape, a tall and a wide one of the same sizes (two of the tall), one 3:1 and one 2:1
SHAPES = [(16, 16), (16, 16), (48, 16), (16, 48), (48, 16), (8, 24), (12, 6)]
NS = dict(schedule=JORDAN5, eps=1e-7)
#: torch.optim.Muon iterates in bfloat16, whose rounding reaches ~1e-3 of a step here: a batched bf16
#: iteration gives its numbers bit for bit on this machine; 1e-5 leaves room for another GEMM kernel's
#: order of summation while a wrong rule (weight decay, step size, momentum) is off by 1e-4 or more
BF16_ATOL = 1e-5


def matrices(seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(*shape, generator=g)) for shape in SHAPES]


def run(opt: torch.optim.Optimizer, params: list[torch.Tensor], steps: range, lr: float = 0.02) -> None:
    """Steps with seeded gradients and a falling lr, as picollm's schedule sets group["lr"]."""
    for step in steps:
        g = torch.Generator().manual_seed(100 + step)
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        for group in opt.param_groups:
            group["lr"] = lr * (1 - 0.1 * step) * group.get("lr_scale", 1.0)
        opt.step()


def reference_update(G: torch.Tensor) -> torch.Tensor:
    """Keller Jordan's iteration on one matrix in float64, written out: what the float32 forms approximate."""
    X = G.double().T if G.size(0) > G.size(1) else G.double()
    X = X / X.norm().clamp(min=NS["eps"])
    for a, b, c in NS["schedule"]:
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return (X.T if G.size(0) > G.size(1) else X).float()


@pytest.mark.parametrize("options", [{}, {"nesterov": False}, {"adjust_lr_fn": "match_rms_adamw"}])
def test_bfloat16_steps_are_torch_muons(options):
    ours, theirs = matrices(), matrices()
    run(Muon(ours, weight_decay=0.1, **options), ours, range(5))
    run(torch.optim.Muon(theirs, weight_decay=0.1, **options), theirs, range(5))
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p, q, rtol=0, atol=BF16_ATOL)


def test_float32_steps_are_the_exact_iterations_and_near_torch_muons():
    ours, theirs, exact = matrices(), matrices(), matrices()
    run(Muon(ours, weight_decay=0.1, ns_dtype=torch.float32), ours, range(5))
    run(torch.optim.Muon(theirs, weight_decay=0.1), theirs, range(5))
    momentum = [torch.zeros_like(p) for p in exact]
    for step in range(5):  # torch's _single_tensor_muon with the float64 iteration
        g = torch.Generator().manual_seed(100 + step)
        lr = 0.02 * (1 - 0.1 * step)
        for p, buf in zip(exact, momentum):
            grad = torch.randn(p.shape, generator=g)
            buf.lerp_(grad, 0.05)
            with torch.no_grad():
                p.mul_(1 - lr * 0.1).add_(reference_update(grad.lerp(buf, 0.95)),
                                          alpha=-lr * max(1, p.size(0) / p.size(1)) ** 0.5)
    for p, q, r in zip(ours, theirs, exact):
        torch.testing.assert_close(p, r, rtol=0, atol=1e-5)
        torch.testing.assert_close(p, q, rtol=0, atol=3e-3)  # torch's bfloat16 rounding


@pytest.mark.parametrize("shape", [(4, 16, 64), (3, 96, 24), (2, 32, 32)])
def test_the_iterations_orthogonalise_in_each_dtype(shape):
    G = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    exact = torch.stack([reference_update(m) for m in G])
    newton_schulz = zeropower_via_newtonschulz(G, dtype=torch.float32, **NS)
    gram = zeropower_via_gram_newtonschulz(G, dtype=torch.float32, **NS)
    bf16 = zeropower_via_newtonschulz(G, dtype=torch.bfloat16, **NS)
    assert bf16.dtype == torch.bfloat16 and bf16.shape == G.shape
    torch.testing.assert_close(newton_schulz, exact, rtol=0, atol=1e-5)
    torch.testing.assert_close(gram, exact, rtol=0, atol=5e-5)  # its rounding errors grow a little more
    assert (torch.linalg.matrix_norm(bf16.float() - exact) <= 0.05 * torch.linalg.matrix_norm(exact)).all()
    # Keller Jordan's coefficients leave the singular values between ~0.7 and ~1.2, not at 1
    if shape[1] != shape[2]:  # a random square matrix has singular values too small for 5 steps
        singular = torch.linalg.svdvals(bf16.float())
        assert singular.min() > 0.6 and singular.max() < 1.25


def test_a_torch_muon_checkpoint_resumes_in_ours_and_back():
    theirs = matrices()
    torch_muon = torch.optim.Muon([{"params": theirs, "lr_scale": 2.0}], lr=0.02, weight_decay=0.1)
    run(torch_muon, theirs, range(2))
    state = copy.deepcopy(torch_muon.state_dict())
    ours = [torch.nn.Parameter(p.detach().clone()) for p in theirs]
    muon = Muon([{"params": ours, "lr_scale": 2.0}], lr=0.02, weight_decay=0.1)
    muon.load_state_dict(state)
    assert muon.param_groups[0].keys() == torch_muon.param_groups[0].keys()
    run(torch_muon, theirs, range(2, 5))
    run(muon, ours, range(2, 5))
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p, q, rtol=0, atol=BF16_ATOL)
        torch.testing.assert_close(muon.state[p]["momentum_buffer"], torch_muon.state[q]["momentum_buffer"])
    back = torch.optim.Muon([{"params": theirs, "lr_scale": 2.0}], lr=0.02, weight_decay=0.1)
    back.load_state_dict(muon.state_dict())
    assert back.state_dict()["state"].keys() == state["state"].keys() == {0, 1, 2, 3, 4, 5, 6}


def test_a_run_resumed_from_our_state_dict_steps_as_one_that_was_not():
    """The momentum lives in one stack per shape; a loaded state holds tensors of its own, which the next step
    must copy into a new stack (a stale stack would step on with the momentum from before the load)."""
    straight, resumed = matrices(), matrices()
    run(Muon(straight, weight_decay=0.1), straight, range(5))
    muon = Muon(resumed, weight_decay=0.1)
    run(muon, resumed, range(2))
    state, weights = copy.deepcopy(muon.state_dict()), [p.detach().clone() for p in resumed]
    run(muon, resumed, range(2, 4))  # steps that the load undoes
    for p, w in zip(resumed, weights):
        p.data.copy_(w)
    muon.load_state_dict(state)
    run(muon, resumed, range(2, 5))
    for p, q in zip(straight, resumed):
        assert torch.equal(p, q)


def test_the_momentum_state_is_a_view_per_matrix_of_one_stack_per_shape():
    params = matrices()
    muon = Muon(params, weight_decay=0.1)
    run(muon, params, range(2))
    buffers = [muon.state[p]["momentum_buffer"] for p in params]
    assert [b.shape for b in buffers] == [p.shape for p in params]
    square = [b for b, shape in zip(buffers, SHAPES) if shape == (16, 16)]
    assert square[0].untyped_storage().data_ptr() == square[1].untyped_storage().data_ptr()
    stored = torch.stack([b.clone() for b in square])
    run(muon, params, range(2, 3))  # the stack is stepped in place: the state's views see it
    assert not torch.equal(torch.stack(square), stored)


@pytest.mark.parametrize("low_precision", [False, True])
@pytest.mark.parametrize("model", ["transformer", "lstm"])
def test_make_optimizer_steps_every_parameter(model, low_precision):
    cfg = RunConfig(model=model, embed=16, hidden=32, layers=2, heads=2, tie_weights=False, optimizer="muon")
    net = build_model(cfg, 23)
    before = copy.deepcopy(net.state_dict())
    opt = optimizers.make_optimizer(net, cfg, torch.device("cpu"), low_precision=low_precision)
    muon = opt.optimizers[0]
    assert isinstance(muon, Muon) and muon.ns_dtype == (torch.bfloat16 if low_precision else torch.float32)
    batch = torch.randint(0, 23, (4, 9), generator=torch.Generator().manual_seed(1))
    logits, _ = net(batch[:, :-1])
    torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch[:, 1:]).backward()
    opt.step()
    unchanged = [name for name, p in net.named_parameters() if torch.equal(p, before[name])]
    assert not unchanged
    assert all("momentum_buffer" in muon.state[p] for p in muon.param_groups[0]["params"])


def test_jordan5_is_torchs_own_iteration():
    ours, theirs = matrices(), matrices()
    run(Muon(ours, weight_decay=0.1, ns_schedule=JORDAN5), ours, range(3))
    run(torch.optim.Muon(theirs, weight_decay=0.1), theirs, range(3))
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p, q, rtol=0, atol=BF16_ATOL)


def test_polar3_is_the_derived_polar_express_schedule():
    pytest.importorskip("scipy")
    spec = importlib.util.spec_from_file_location("ns_schedule", ROOT / "bench" / "ns_schedule.py")
    ns_schedule = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ns_schedule)
    assert ns_schedule.polar_express(3, 1e-3, 1.01) == POLAR3


@pytest.mark.parametrize("name", sorted(NS_SCHEDULES))
@pytest.mark.parametrize("gram", [False, True])
def test_each_schedule_maps_every_singular_value_by_its_polynomials(name, gram):
    """G = U S V^T comes out as U p(S / |G|_F) V^T, p the schedule's quintics composed: the singular
    vectors are kept and each singular value is mapped on its own."""
    schedule = NS_SCHEDULES[name]
    g = torch.Generator().manual_seed(3)
    U, _ = torch.linalg.qr(torch.randn(24, 24, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(72, 24, generator=g, dtype=torch.float64))
    singular = torch.logspace(-3, 0, 24, dtype=torch.float64)
    G = (U * singular) @ V.T  # (24, 72): wide, so both forms apply
    zeropower = zeropower_via_gram_newtonschulz if gram else zeropower_via_newtonschulz
    out = zeropower(G[None], schedule, eps=1e-7, dtype=torch.float64)[0]
    s = singular / singular.norm()
    for a, b, c in schedule:
        s = a * s + b * s**3 + c * s**5
    torch.testing.assert_close(out, (U * s) @ V.T, rtol=0, atol=1e-9)


@pytest.mark.parametrize("muon_ns", sorted(NS_SCHEDULES))
def test_make_optimizer_iterates_with_muon_ns(muon_ns):
    cfg = RunConfig(model="transformer", embed=16, layers=1, heads=2, optimizer="muon", muon_ns=muon_ns)
    muon = optimizers.make_optimizer(build_model(cfg, 23), cfg, torch.device("cpu")).optimizers[0]
    assert muon.ns_schedule == NS_SCHEDULES[muon_ns]


def test_muon_ns_is_fingerprinted_except_at_torchs_iteration():
    """Runs trained before --muon_ns existed used torch's iteration: their config.json has no muon_ns and
    keeps its name; the polar3 default is a new run; an AdamW run has no Newton-Schulz to name."""
    old = RunConfig(model="transformer", optimizer="muon", muon_ns="jordan5")
    assert "muon_ns" not in old.fingerprint_dict()
    assert RunConfig.from_record({k: v for k, v in old.to_dict().items() if k != "muon_ns"}) == old
    new = old.replace(muon_ns="polar3")
    assert new.fingerprint_dict()["muon_ns"] == "polar3" and new.fingerprint() != old.fingerprint()
    adamw = RunConfig(model="transformer", optimizer="adamw")
    assert "muon_ns" not in adamw.fingerprint_dict()
    assert adamw.fingerprint() == adamw.replace(muon_ns="jordan5").fingerprint()
