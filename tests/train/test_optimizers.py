"""make_optimizer's AdamW: torch's numbers in fewer ops."""

import copy

import torch

from picollm.config import RunConfig
from picollm.models import build_model
from picollm.train.optimizers import make_optimizer


def test_adamw_steps_as_torchs_per_parameter_loop():
    """make_optimizer asks for the foreach AdamW on a CPU, where torch's default is a loop over the parameters:
    the same numbers, bit for bit."""
    cfg = RunConfig(model="transformer", embed=16, layers=2, heads=2, optimizer="adamw", lr=0.01, weight_decay=0.1)
    net = build_model(cfg, 23)
    loop_net = copy.deepcopy(net)
    ours = make_optimizer(net, cfg, torch.device("cpu"))
    assert ours.param_groups[0]["foreach"]
    loop = torch.optim.AdamW([{**{k: v for k, v in g.items() if k != "params"}, "foreach": False,
                               "params": [dict(loop_net.named_parameters())[n] for n, p in net.named_parameters()
                                          if any(p is q for q in g["params"])]} for g in ours.param_groups])
    for step in range(4):
        batch = torch.randint(0, 23, (4, 9), generator=torch.Generator().manual_seed(step))
        for model, opt in ((net, ours), (loop_net, loop)):
            logits, _ = model(batch[:, :-1])
            opt.zero_grad()
            torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch[:, 1:]).backward()
            opt.step()
    for p, q in zip(net.parameters(), loop_net.parameters()):
        assert torch.equal(p, q)
