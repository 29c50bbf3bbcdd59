"""Every family: one interface, stepping with state == one full forward, learns, rejects bad settings.

"Every family" is every family in the registry (a new one is tested as soon as it is registered); one whose
optional extra is not installed is skipped with the install hint."""

import dataclasses

import pytest
import torch
from conftest import family_params

from picollm.config import RunConfig
from picollm.core.errors import ConfigError
from picollm.models import FAMILIES, build_model

TINY = dict(embed=16, hidden=32, layers=2, heads=2, k=3, inner_layers=2, block_size=16, dropout=0.0)
VOCAB = 23


def tiny_model(family: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = RunConfig(model=family, **{**TINY, **overrides})
    return build_model(cfg, VOCAB).eval()


#: besides every registered family at its defaults: variants whose state or layout differs
VARIANTS = [("kgram_mlp", {"k": 1}), ("lstm", {"norm": False, "tie_weights": False}),
            ("xlstm", {"xlstm_ratio": "1:0"}), ("xlstm", {"xlstm_ratio": "0:1"}),
            ("transformer", {"positional": "learned", "qk_norm": False}),
            ("transformer", {"positional": "learned", "mlp_activation": "relu2"}),
            ("transformer", {"qk_norm": False, "tie_weights": False}), ("transformer", {"qk_scale": 2.0})]
FAMILY_CASES = [pytest.param(*family.values, {}, id=family.id, marks=family.marks) for family in family_params()] \
    + VARIANTS


def test_registry_lists_the_four_families():
    assert {"kgram_mlp", "lstm", "xlstm", "transformer"} <= set(FAMILIES)


@pytest.mark.parametrize("family,overrides", FAMILY_CASES)
def test_step_by_step_equals_full_forward(family, overrides):
    model = tiny_model(family, **overrides)
    idx = torch.randint(0, VOCAB, (3, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full, _ = model(idx)
        state, steps = None, []
        for t in range(idx.shape[1]):
            logits, state = model(idx[:, t : t + 1], state)
            steps.append(logits)
        stepped = torch.cat(steps, dim=1)
    assert full.shape == (3, 12, VOCAB)
    assert (full - stepped).abs().max().item() <= 1e-5


@pytest.mark.parametrize("family,overrides", FAMILY_CASES)
def test_forward_in_two_segments_with_state_equals_one_forward(family, overrides):
    model = tiny_model(family, **overrides)
    idx = torch.randint(0, VOCAB, (2, 14), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full, _ = model(idx)
        first, state = model(idx[:, :5])
        second, _ = model(idx[:, 5:], state)
    assert (torch.cat([first, second], 1) - full).abs().max().item() <= 1e-5


@pytest.mark.parametrize("family", family_params())
def test_state_survives_weights_only_checkpoint(family, tmp_path):
    model = tiny_model(family)
    idx = torch.randint(0, VOCAB, (2, 6))
    with torch.no_grad():
        _, state = model(idx)
    torch.save({"state": state}, tmp_path / "s.pt")
    loaded = torch.load(tmp_path / "s.pt", weights_only=True)["state"]
    nxt = torch.randint(0, VOCAB, (2, 3))
    with torch.no_grad():
        a, _ = model(nxt, state)
        b, _ = model(nxt, loaded)
    assert torch.equal(a, b)


@pytest.mark.parametrize("family", family_params())
def test_each_family_overfits_a_tiny_batch(family):
    model = tiny_model(family).train()
    gen = torch.Generator().manual_seed(3)
    idx = torch.randint(0, VOCAB, (4, 17), generator=gen)
    x, y = idx[:, :-1], idx[:, 1:]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    initial = None
    for _ in range(150):
        logits, _ = model(x)
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), y)
        initial = initial if initial is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    # random tokens: only memorisation gets the loss far below log(V) ~ 3.1
    assert initial > 2.5
    assert loss.item() < 0.5 * initial, (family, initial, loss.item())


def test_transformer_learned_positions_refuse_too_long_context():
    model = tiny_model("transformer", positional="learned")
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))


@pytest.mark.parametrize("settings,match", [
    (dict(model="gru"), "unknown model family 'gru'"),
    (dict(model="kgram_mlp", k=0), "--k must be"),
    (dict(model="transformer", embed=30, heads=4), "divisible by --heads"),
    (dict(model="transformer", positional="alibi"), "--positional must be one of"),
    (dict(model="kgram_mlp", activation="tanh"), "--activation must be one of"),
    (dict(model="lstm", dropout=1.5), "--dropout must be in"),
    (dict(model="lstm", hidden=0), "--hidden must be a positive integer"),
    (dict(model="transformer", mlp_activation="swiglu"), "--mlp_activation must be one of"),
    (dict(model="lstm", init_range=-0.1), "--init_range must be"),
    (dict(model="lstm", weight_drop=1.0), "--weight_drop must be in"),
    (dict(model="xlstm", io_dropout=-0.1), "--io_dropout must be in"),
    (dict(optimizer="lion"), "--optimizer must be one of"),
    (dict(optimizer="muon", muon_lr=0.0), "--muon_lr must be"),
    (dict(optimizer="sgd", momentum=1.0), "--momentum must be in"),
])
def test_bad_settings_are_one_line_errors(settings, match):
    with pytest.raises(ConfigError, match=match) as err:
        RunConfig(**settings)
    assert "\n" not in str(err.value)


def test_settings_a_family_ignores_do_not_fail_it():
    # embed 30 is not divisible by 4 heads, but the LSTM has no heads
    RunConfig(model="lstm", embed=30, heads=4)


def test_transformer_qk_norm_bounds_the_attention_logits(monkeypatch):
    # with queries and keys of unit RMS, no logit exceeds sqrt(head_size), however large the weights grow
    model = tiny_model("transformer", qk_norm=True, split_qkv=False)
    with torch.no_grad():
        model.blocks[0].attn.qkv.weight.mul_(1000.0)
    logits = []
    real_sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, **kwargs):
        logits.append((q @ k.transpose(-1, -2)) * (kwargs.get("scale") or q.shape[-1] ** -0.5))
        return real_sdpa(q, k, v, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    with torch.no_grad():
        model(torch.randint(0, VOCAB, (2, 8)))
    head_size = TINY["embed"] // TINY["heads"]
    assert len(logits) == TINY["layers"]
    assert logits[0].abs().max().item() <= head_size ** 0.5 * 1.5 + 1e-3  # the recipe's qk_scale
    assert logits[0].abs().max().item() > head_size ** 0.5  # grown weights align q and k: past the scale-1 cap
    unnormed = tiny_model("transformer", qk_norm=False, split_qkv=False)
    with torch.no_grad():
        unnormed.blocks[0].attn.qkv.weight.mul_(1000.0)
        unnormed(torch.randint(0, VOCAB, (2, 8)))
    first_block = logits[TINY["layers"]]  # the unnormed model's first attention, whose weights grew
    assert first_block.abs().max().item() > 100 * head_size ** 0.5  # the bound comes from the norm


def test_transformer_zero_init_starts_every_block_as_the_identity():
    model = tiny_model("transformer", zero_init_proj=True, tie_weights=False)
    # norm biases start at 0, and the attention gates' weights (the gates open at 1)
    zeroed = [n for n, p in model.named_parameters() if p.dim() == 2 and not p.any() and ".gate." not in n]
    assert sorted(zeroed) == sorted([f"blocks.{i}.{m}.proj.weight" for i in range(2) for m in ("attn", "mlp")]
                                    + ["head.weight"])
    logits, _ = model(torch.randint(0, VOCAB, (2, 8)))
    assert not logits.any()  # a uniform first prediction: loss log(V)
    tied = tiny_model("transformer", zero_init_proj=True)
    assert tied.wte.weight.any()  # the shared embedding is never zeroed


def test_transformer_split_qkv_is_the_fused_model_held_as_three_matrices():
    fused, split = tiny_model("transformer", split_qkv=False), tiny_model("transformer", split_qkv=True)
    assert not hasattr(fused.blocks[0].attn, "q") and not hasattr(split.blocks[0].attn, "qkv")
    for fused_block, split_block in zip(fused.blocks, split.blocks, strict=True):
        a = split_block.attn
        assert torch.equal(torch.cat([a.q.weight, a.k.weight, a.v.weight]), fused_block.attn.qkv.weight)
    assert split.num_params() == fused.num_params()
    idx = torch.randint(0, VOCAB, (2, 8))
    assert torch.equal(split(idx)[0], fused(idx)[0])


def steps_and_segments_equal_one_forward(model: torch.nn.Module, idx: torch.Tensor) -> torch.Tensor:
    """One forward over idx, after asserting that token-by-token steps and two segments give the same logits."""
    full, _ = model(idx)
    state, steps = None, []
    for t in range(idx.shape[1]):
        logits, state = model(idx[:, t : t + 1], state)
        steps.append(logits)
    first, state = model(idx[:, :4])
    second, _ = model(idx[:, 4:], state)
    assert (torch.cat(steps, dim=1) - full).abs().max().item() <= 1e-5
    assert (torch.cat([first, second], dim=1) - full).abs().max().item() <= 1e-5
    return full


@pytest.mark.parametrize("canon_at", {f.name: f for f in dataclasses.fields(RunConfig)}["canon_at"].metadata["choices"])
def test_transformer_canon_layers_start_as_none_and_carry_their_inputs_in_the_state(canon_at):
    plain, canon = tiny_model("transformer", canon=0), tiny_model("transformer", canon=3, canon_at=canon_at)
    idx = torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(plain(idx)[0], canon(idx)[0])  # zero-initialised, and the other weights drawn the same
        for block in canon.blocks:
            assert (block.canon_attn is not None) == (canon_at == "attention+mlp")
            for layer in (block.canon_attn, block.canon_mlp):
                if layer is not None:
                    layer.weight.normal_()
        full = steps_and_segments_equal_one_forward(canon, idx)
        changed = (full - plain(idx)[0]).abs().max().item()
    assert changed > 1e-2  # the mixing acts, so the state had something to carry
    assert all(p.dim() == 3 for n, p in canon.named_parameters() if "canon" in n)  # AdamW's, not Muon's


def test_transformer_attention_gates_and_value_embeddings_start_as_none_and_act_per_token():
    from picollm.train.optimizers import hidden_matrices

    plain = tiny_model("transformer", attn_gate=False, value_embed=False, canon=0)
    model = tiny_model("transformer", attn_gate=True, value_embed=True, canon=3)
    idx = torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(model(idx)[0], plain(idx)[0])  # zero-initialised: gates open at 1, no value embeddings
        for block in model.blocks:
            block.attn.gate.weight.normal_()
            block.attn.value_gain.normal_()
            block.canon_mlp.weight.normal_()
        full = steps_and_segments_equal_one_forward(model, idx)
        for block in model.blocks:
            block.attn.value_gain.zero_()
        without_value_embeddings = steps_and_segments_equal_one_forward(model, idx)
        for block in model.blocks:
            block.attn.gate.weight.zero_()
        open_gates = model(idx)[0]
    assert (full - without_value_embeddings).abs().max().item() > 1e-3
    assert (without_value_embeddings - open_gates).abs().max().item() > 1e-3
    # per layer: a gate row per head, a value gain, a Canon layer of width 3; nothing the size of the vocabulary
    assert model.num_params() - plain.num_params() == TINY["layers"] * (TINY["heads"] + 1 + 3) * TINY["embed"]
    in_muon = {id(p) for p in hidden_matrices(model)}
    assert not any(id(b.attn.gate.weight) in in_muon for b in model.blocks)  # a gate's rows: AdamW's
    assert id(model.blocks[0].attn.q.weight) in in_muon


def test_transformer_embed_norm_makes_the_embeddings_scale_free():
    model = tiny_model("transformer", embed_norm=True, tie_weights=False)
    idx = torch.randint(0, VOCAB, (2, 8))
    with torch.no_grad():
        before = model(idx)[0]
        model.wte.weight.mul_(10.0)
        torch.testing.assert_close(model(idx)[0], before)
        plain = tiny_model("transformer", embed_norm=False, tie_weights=False)
        plain_before = plain(idx)[0]
        plain.wte.weight.mul_(10.0)
        assert (plain(idx)[0] - plain_before).abs().max().item() > 1e-3
        assert plain.embed_gain is None
        # the scale is the gain's, a parameter of its own, one per channel, started at 0.1
        torch.testing.assert_close(model.embed_gain, torch.full((TINY["embed"],), 0.1))
        model.embed_gain.mul_(10.0)
        assert (model(idx)[0] - before).abs().max().item() > 1e-3
    assert model.num_params() - plain.num_params() == TINY["embed"]


def test_transformer_canon_layer_is_a_causal_depthwise_conv1d():
    from picollm.models.transformer.model import Canon

    layer = Canon(3, 4)
    torch.nn.init.normal_(layer.weight)
    h = torch.randn(2, 6, 3)
    mixed, last = layer(h, None)
    conv = h + torch.nn.functional.conv1d(torch.nn.functional.pad(h.transpose(1, 2), (3, 0)), layer.weight,
                                          groups=3).transpose(1, 2)
    torch.testing.assert_close(mixed, conv)
    assert torch.equal(last, h[:, -3:])


def test_lstm_init_range_draws_every_parameter_uniformly():
    model = tiny_model("lstm", init_range=0.05, tie_weights=False)
    for name, p in model.named_parameters():
        assert p.abs().max().item() <= 0.05, name
        assert p.abs().max().item() > 0.04, name  # uniform over the whole range, biases and gains included
    default = tiny_model("lstm", tie_weights=False)
    assert default.rnn.weight_hh_l0.abs().max().item() > 0.1  # the default init is not the same


def test_lstm_weight_drop_masks_the_recurrent_weights_in_training_only():
    model = tiny_model("lstm", weight_drop=0.5, layers=2)
    x = torch.randint(0, VOCAB, (3, 8))
    model.eval()
    plain = tiny_model("lstm", layers=2)  # the same seed and init: weight_drop changes nothing outside training
    torch.testing.assert_close(model(x)[0], plain.eval()(x)[0])
    model.train()
    torch.manual_seed(1)
    a = model(x)[0]
    assert not torch.allclose(a, model(x)[0])  # a new mask every step
    a.square().mean().backward()
    for name in ("weight_hh_l0", "weight_hh_l1"):
        zero = (getattr(model.rnn, name).grad == 0).float().mean().item()
        assert 0.4 < zero < 0.6, name  # the masked half gets no gradient, the rest does
    assert (model.rnn.weight_ih_l0.grad == 0).float().mean().item() < 0.01


def test_lstm_locked_dropout_runs_the_same_stack_layer_by_layer():
    # at a dropout too small to drop anything, the layer-by-layer path is the stacked nn.LSTM, state in and out
    x, state = torch.randint(0, VOCAB, (3, 8)), (torch.randn(2, 3, 32), torch.randn(2, 3, 32))
    locked, plain = tiny_model("lstm", locked_dropout=True, dropout=1e-9), tiny_model("lstm", dropout=1e-9)
    assert list(locked.state_dict()) == list(plain.state_dict())  # the same checkpoint layout
    (a, (ha, ca)), (b, (hb, cb)) = locked.train()(x, state), plain.train()(x, state)
    for mine, theirs in ((a, b), (ha, hb), (ca, cb)):
        torch.testing.assert_close(mine, theirs)
    a.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in locked.rnn.parameters())


def test_lstm_locked_dropout_holds_one_mask_per_sequence():
    model = tiny_model("lstm", locked_dropout=True, dropout=0.5)
    seen = []
    for rnn in (model.rnn, model._layer_shells[0]):  # the stack in eval, its first layer alone in training
        rnn.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))  # the embeddings, dropped
    model.eval()(torch.randint(0, VOCAB, (4, 8)))
    assert (seen[-1] != 0).all()  # nothing dropped outside training
    model.train()(torch.randint(0, VOCAB, (4, 8)))
    zero = seen[-1] == 0  # (B, T, E)
    assert 0.3 < zero.float().mean().item() < 0.7
    assert (zero == zero[:, :1]).all()  # the same units at every time step of a sequence
    assert not (zero == zero[:1]).all()  # and other units in another sequence


def test_xlstm_io_dropout_drops_the_embeddings_and_the_last_output_in_training_only():
    x = torch.randint(0, VOCAB, (3, 8))
    model, plain = tiny_model("xlstm", io_dropout=0.5), tiny_model("xlstm")
    torch.testing.assert_close(model(x)[0], plain(x)[0])  # eval: the same model
    seen = []
    model.io_drop.register_forward_hook(lambda _m, inp, out: seen.append((inp[0] != 0) & (out == 0)))
    model.train()
    model(x)
    assert len(seen) == 2  # the embeddings, then the last block's (normalised) output
    assert all(0.3 < dropped.float().mean().item() < 0.7 for dropped in seen)
