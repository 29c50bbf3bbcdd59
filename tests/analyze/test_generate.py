"""Decoding: logit filters on known distributions, repetition penalty, beam search on a model whose best
sequence is known, stateful decoding against full recomputation for every family, batching, seeding,
annotations and the CLI."""

import itertools
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import family_params, missing_extra, toy_sentences
from torch import nn

from picollm.analyze.generate import (
    DecodeConfig,
    annotate,
    apply_repetition_penalty,
    choose_tokens,
    compact_annotation,
    filter_logits,
    generate,
    nearest_neighbours,
    reorder_state,
    seen_mask,
    state_batch_dims,
)
from picollm.config import RunConfig
from picollm.core.errors import ConfigError
from picollm.models.base import LanguageModel
from picollm.runs.checkpoint import load_run
from picollm.train.loop import train_run

FAMILIES = family_params()  # every registered family
REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------------------
# fixtures: tiny trained runs, and a bigram model whose probabilities we choose
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One tiny trained run per family on a toy text (block_size 16, so the transformer's context is short)."""
    text = "\n".join(toy_sentences(1200)) + "\n"
    root = tmp_path_factory.mktemp("gen")
    corpus = root / "toy.txt"
    corpus.write_text(text)
    out = {}
    for family in (p.id for p in FAMILIES if missing_extra(p.id) is None):
        cfg = RunConfig(corpus=str(corpus), model=family, embed=16, hidden=32, layers=1, heads=2, block_size=16,
                        batch_size=8, max_steps=30, eval_interval=15, eval_tokens=1024, warmup_steps=5, lr=1e-2,
                        threads=1, out_dir=str(root / "checkpoints"), progress=False)
        out[family] = train_run(cfg, quiet=True)
    return out


class Bigram(LanguageModel):
    """Next-token probabilities depend only on the last token: table[last] (V, V). State: the last token."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.logp = nn.Parameter(table.clamp_min(1e-9).log(), requires_grad=False)

    def forward(self, idx, state=None):
        return self.logp[idx], idx[:, -1:]

    def embedding_matrix(self):
        return self.logp


def sequence_logprob(table: torch.Tensor, start: int, seq: list[int]) -> float:
    prev, total = start, 0.0
    for tok in seq:
        total += math.log(table[prev, tok])
        prev = tok
    return total


def full_recompute_greedy(model: LanguageModel, prompt: list[int], n: int) -> tuple[list[int], list[float]]:
    """Trusted reference: the whole (context-cropped) sequence through the model for every new token.
    Returns the tokens and their log-probabilities."""
    seq = torch.tensor([prompt])
    limit = model.max_context
    logprobs = []
    for _ in range(n):
        window = seq if limit is None else seq[:, -limit:]
        logp = model(window)[0][:, -1].log_softmax(-1)
        nxt = logp.argmax(-1, keepdim=True)
        logprobs.append(logp[0, nxt].item())
        seq = torch.cat([seq, nxt], dim=1)
    return seq[0, len(prompt):].tolist(), logprobs


# --------------------------------------------------------------------------------------------------
# logit processing
# --------------------------------------------------------------------------------------------------
def test_top_k_keeps_exactly_the_k_most_likely_tokens():
    probs = torch.tensor([[0.1, 0.4, 0.2, 0.3], [0.25, 0.05, 0.6, 0.1]])
    kept = filter_logits(probs.log(), top_k=2).softmax(-1)
    assert torch.equal(kept > 0, torch.tensor([[False, True, False, True], [True, False, True, False]]))
    assert torch.allclose(kept[0, [1, 3]], torch.tensor([0.4, 0.3]) / 0.7)  # renormalised, order kept
    assert torch.equal(filter_logits(probs.log(), top_k=0), probs.log())  # 0 = off


@pytest.mark.parametrize("top_p,expected", [(0.3, 1), (0.65, 2), (0.75, 3), (0.95, 4), (1.0, 4)])
def test_top_p_keeps_the_smallest_set_reaching_p(top_p, expected):
    probs = torch.tensor([0.4, 0.3, 0.2, 0.1])
    perm = torch.tensor([2, 0, 3, 1])  # shuffle the vocabulary: the filter must map back to token ids
    logits = probs[perm].log()[None]
    kept = filter_logits(logits, top_p=top_p)[0] > -math.inf
    assert sorted(perm[kept].tolist()) == list(range(expected))


def test_top_p_mass_on_random_distributions():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 50, generator=gen) * 2
    probs = logits.softmax(-1)
    for p in (0.1, 0.5, 0.9):
        kept = filter_logits(logits, top_p=p) > -math.inf
        mass = (probs * kept).sum(-1)
        smallest_kept = torch.where(kept, probs, torch.ones_like(probs)).min(-1).values
        assert (mass >= p - 1e-6).all()  # enough mass ...
        assert ((mass - smallest_kept) < p + 1e-6).all()  # ... and not one token more than needed
        # the kept tokens are the most likely ones
        assert (torch.where(kept, probs, 2.0).min(-1).values >= torch.where(kept, -1.0, probs).max(-1).values).all()


def test_repetition_penalty_lowers_seen_tokens_whatever_their_sign():
    logits = torch.tensor([[2.0, -1.0, 0.5, 0.0]])
    seen = seen_mask(torch.tensor([[0, 1, 0]]), 4)
    assert seen.tolist() == [[True, True, False, False]]
    out = apply_repetition_penalty(logits, seen, 2.0)
    assert out.tolist() == [[1.0, -2.0, 0.5, 0.0]]
    before, after = logits.softmax(-1), out.softmax(-1)
    assert (after[0, :2] < before[0, :2]).all() and (after[0, 2:] > before[0, 2:]).all()
    assert torch.equal(apply_repetition_penalty(logits, seen, 1.0), logits)
    greedy = DecodeConfig(temperature=0, repetition_penalty=5.0)
    assert choose_tokens(logits, greedy, None, seen).item() == 2  # token 0 would win without the penalty


def test_decode_config_rejects_bad_settings():
    for bad in (dict(temperature=-1), dict(top_p=0), dict(top_p=1.5), dict(top_k=-1), dict(beam=0),
                dict(repetition_penalty=0), dict(max_new_tokens=-1)):
        with pytest.raises(ConfigError):
            DecodeConfig(**bad)


# --------------------------------------------------------------------------------------------------
# beam search
# --------------------------------------------------------------------------------------------------
def test_beam_finds_the_best_sequence_where_greedy_does_not():
    # 0 = start; greedy takes A (0.6) but every continuation of A is 1/3; B (0.4) is followed by C (0.9)
    A, B, C = 1, 2, 3
    table = torch.tensor([[0.0, 0.6, 0.4, 0.0],
                          [0.0, 1 / 3, 1 / 3, 1 / 3],
                          [0.0, 0.05, 0.05, 0.9],
                          [0.0, 0.05, 0.05, 0.9]])
    model = Bigram(table)
    greedy = generate(model, [[0]], DecodeConfig(max_new_tokens=2, temperature=0))[0]
    beam = generate(model, [[0]], DecodeConfig(max_new_tokens=2, beam=2))[0]
    assert greedy.ids[0] == A
    assert beam.ids == [B, C]
    assert math.exp(sum(beam.logprobs)) == pytest.approx(0.36, rel=1e-4)
    assert sum(beam.logprobs) > sum(greedy.logprobs)


def test_wide_beam_equals_exhaustive_search():
    V, n = 5, 3
    table = torch.rand(V, V, generator=torch.Generator().manual_seed(3)) + 0.05
    table /= table.sum(-1, keepdim=True)
    best = max(itertools.product(range(V), repeat=n), key=lambda s: sequence_logprob(table, 0, list(s)))
    out = generate(Bigram(table), [[0]], DecodeConfig(max_new_tokens=n, beam=V * V, length_penalty=0.0),
                   num_samples=3)
    assert out[0].ids == list(best)
    assert out[0].score == pytest.approx(sequence_logprob(table, 0, list(best)), abs=1e-4)
    assert out[0].score >= out[1].score >= out[2].score


def test_beam_stops_at_eos_and_applies_the_length_penalty():
    # from 0: eos (id 3) at once has p 0.5; the best 2-token path is 0.45 * 0.95
    table = torch.tensor([[0.0, 0.45, 0.05, 0.5],
                          [0.0, 0.0, 0.95, 0.05],
                          [0.0, 0.0, 0.0, 1.0],
                          [1.0, 0.0, 0.0, 0.0]])
    model = Bigram(table)
    total = generate(model, [[0]], DecodeConfig(max_new_tokens=4, beam=3, length_penalty=0.0), eos_id=3)[0]
    assert total.ids == [3]  # by total log-prob the immediate end wins (0.5 > 0.43)
    mean = generate(model, [[0]], DecodeConfig(max_new_tokens=4, beam=3, length_penalty=1.0), eos_id=3)[0]
    assert mean.ids == [1, 2, 3]  # per-token log-prob favours the longer hypothesis
    assert mean.score == pytest.approx(math.log(0.45 * 0.95 * 1.0) / 3, abs=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_reorder_state_selects_beams_along_each_familys_batch_dim(family, runs):
    _, _, model, _ = load_run(runs[family])
    dims = state_batch_dims(model, torch.device("cpu"))
    x = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    _, state = model(x)
    index = torch.tensor([2, 0])
    logits_a, _ = model(torch.tensor([[5], [5]]), reorder_state(state, index, dims))
    logits_b, _ = model(torch.tensor([[5], [5]]), model(x[index])[1])
    assert torch.allclose(logits_a, logits_b, atol=1e-5), family


# --------------------------------------------------------------------------------------------------
# real models: the state, batching, seeding
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_stateful_greedy_equals_full_recomputation(family, runs):
    _, tok, model, _ = load_run(runs[family])
    prompt = tok.encode("the cat ")
    n = 40  # 8 + 40 > block_size 16: the transformer has to re-prime its cache
    if model.exact_context is not None:  # a windowed state (xlstm_lib) is exact over its window only
        n = model.exact_context - len(prompt)
    expected, logprobs = full_recompute_greedy(model, prompt, n)
    got = generate(model, [prompt], DecodeConfig(max_new_tokens=n, temperature=0))[0]
    assert got.ids == expected
    assert got.logprobs == pytest.approx(logprobs, abs=1e-4)  # the same distributions, not just argmaxes


@pytest.mark.parametrize("family", ["lstm", "transformer"])
def test_prompt_once_then_one_token_per_forward(family, runs):
    _, tok, model, _ = load_run(runs[family])
    widths = []
    forward = model.forward
    model.forward = lambda idx, state=None: (widths.append(idx.shape[1]), forward(idx, state))[1]
    prompt = tok.encode("the dog ")
    generate(model, [prompt], DecodeConfig(max_new_tokens=30, temperature=0))
    limit = model.max_context
    if limit is None:
        assert widths == [len(prompt)] + [1] * 29  # the last token needs no forward
    else:  # learned positions: one-token steps until the cache is full, then one window per token
        steps = limit - len(prompt)
        assert widths == [len(prompt)] + [1] * steps + [limit] * (29 - steps)


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_prompts_of_different_lengths_equal_one_at_a_time(family, runs):
    _, tok, model, _ = load_run(runs[family])
    prompts = [tok.encode(t) for t in ("a", "my bird ran", "the cat sat on ")]
    cfg = DecodeConfig(max_new_tokens=12, temperature=0)
    batched = generate(model, prompts, cfg)
    for p, g in zip(prompts, batched):
        alone = generate(model, [p], cfg)[0]
        assert g.prompt_ids == p and g.ids == alone.ids
        assert g.logprobs == pytest.approx(alone.logprobs, abs=1e-4)


def test_seeded_sampling_is_reproducible(runs):
    _, tok, model, _ = load_run(runs["lstm"])
    prompts = [tok.encode("the "), tok.encode("one fish ")]
    cfg = DecodeConfig(max_new_tokens=30, temperature=1.0, top_k=10, top_p=0.95, repetition_penalty=1.2, seed=7)
    a = generate(model, prompts, cfg, num_samples=3)
    b = generate(model, prompts, cfg, num_samples=3)
    assert len(a) == 6 and [g.ids for g in a] == [g.ids for g in b]
    assert len({tuple(g.ids) for g in a[:3]}) > 1  # the samples of one prompt differ
    c = generate(model, prompts, DecodeConfig(**{**cfg.__dict__, "seed": 8}), num_samples=3)
    assert [g.ids for g in c] != [g.ids for g in a]


def test_generation_stops_at_eos():
    table = torch.tensor([[0.0, 0.9, 0.1], [0.0, 0.1, 0.9], [1.0, 0.0, 0.0]])  # 0 -> 1 -> 2 (eos)
    out = generate(Bigram(table), [[0], [1]], DecodeConfig(max_new_tokens=10, temperature=0), eos_id=2)
    assert [g.ids for g in out] == [[1, 2], [2]]
    no_stop = generate(Bigram(table), [[0]], DecodeConfig(max_new_tokens=5, temperature=0, stop_at_eos=False),
                       eos_id=2)[0]
    assert len(no_stop.ids) == 5


# --------------------------------------------------------------------------------------------------
# annotations
# --------------------------------------------------------------------------------------------------
def test_nearest_neighbours_by_cosine_exclude_the_token_itself():
    emb = torch.tensor([[1.0, 0.0], [10.0, 1.0], [0.0, 1.0], [-1.0, -0.1], [1.0, 1.0], [0.5, -1.0]])
    nn_ids = nearest_neighbours(emb, torch.tensor([0, 2]), k=3)
    assert nn_ids[0].tolist() == [1, 4, 5]  # cosine ignores the length of [10, 1]
    assert nn_ids[1].tolist() == [4, 1, 0]


def test_annotation_shapes_and_values(runs):
    _, tok, model, _ = load_run(runs["transformer"])
    gen = generate(model, [tok.encode("the cat ")], DecodeConfig(max_new_tokens=15, temperature=0.9, seed=1))[0]
    notes = annotate(gen, model, tok.token_strings())
    assert len(notes) == len(gen.ids) == 15
    for note, i in zip(notes, gen.ids):
        assert note["id"] == i and note["token"] == tok.token_strings()[i]
        assert len(note["alternatives"]) == 5 and len(note["neighbours"]) == 5
        assert note["token"] not in note["neighbours"]
        probs = [p for _, p in note["alternatives"]]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 1e-3
        assert note["logprob"] <= math.log(probs[0]) + 1e-3  # nothing beats the model's top choice
    # logprobs are the model's own (temperature 1): check one against a direct forward
    logits, _ = model(torch.tensor([gen.prompt_ids + gen.ids[:1]]))
    expected = logits[0, len(gen.prompt_ids) - 1].log_softmax(-1)[gen.ids[0]].item()
    assert gen.logprobs[0] == pytest.approx(expected, abs=1e-4)
    compact = compact_annotation(notes)
    assert compact.count(" ; ") == 14


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------
def test_cli_generates_and_reports_a_missing_run_on_one_line(runs, tmp_path):
    cmd = [sys.executable, "-m", "picollm", "generate", "--run", str(runs["kgram_mlp"]), "--prompt", "the cat",
           "--max_new_tokens", "20", "--temperature", "0.8", "--top_k", "50", "--top_p", "0.95",
           "--repetition_penalty", "1.2", "--seed", "3", "--num_samples", "2", "--checkpoint", "last", "--annotate"]
    ok = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count("the cat") >= 2 and "alt:" in ok.stdout
    beam = subprocess.run(cmd[:8] + ["--beam", "3", "--max_new_tokens", "5"], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert beam.returncode == 0, beam.stderr
    missing = subprocess.run([sys.executable, "-m", "picollm", "generate", "--run", str(tmp_path / "nope")],
                             capture_output=True, text=True, cwd=REPO, timeout=120)
    assert missing.returncode == 2
    assert missing.stderr.startswith("error:") and len(missing.stderr.strip().splitlines()) == 1
    bad = subprocess.run(cmd[:8] + ["--top_p", "2"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert bad.returncode == 2 and "top_p" in bad.stderr and "Traceback" not in bad.stderr


def test_word_prompts_are_unfinished_lines():
    from picollm.analyze.generate import encode_prompt
    from picollm.data.tokenizers import WordTokenizer

    tok = WordTokenizer.from_text("the company said\nthe market fell\n")
    assert encode_prompt(tok, "the company") == [tok.stoi["the"], tok.stoi["company"]]  # no <eos> appended
    assert encode_prompt(tok, "the market\n")[-1] == tok.eos_id  # unless the text ends the line


def test_prompt_pieces_outside_the_vocabulary_are_named_in_a_warning(caplog):
    from picollm.analyze.generate import encode_prompt
    from picollm.data.tokenizers import CharTokenizer, WordTokenizer

    chars = CharTokenizer.from_text("abc ")
    with caplog.at_level("WARNING", logger="picollm"):
        ids = encode_prompt(chars, "abé cü")
    assert ids[2] == chars.unk_id and ids[5] == chars.unk_id
    assert len(caplog.records) == 1 and "'é', 'ü' not in the run's vocabulary" in caplog.records[0].getMessage()
    caplog.clear()
    words = WordTokenizer.from_text("the cat sat\n")
    with caplog.at_level("WARNING", logger="picollm"):
        encode_prompt(words, "the cat")
        assert not caplog.records  # every word known: no warning
        encode_prompt(words, "the dog")
    assert "'dog' not in the run's vocabulary" in caplog.records[0].getMessage()
