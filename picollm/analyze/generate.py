"""Decoding: greedy, temperature / top-k / top-p sampling with a repetition penalty, and beam search.

    generate(model, prompts, DecodeConfig(temperature=0.8, top_p=0.95), eos_id) -> list[Generation]

The command over it is `picollm generate --run checkpoints/<run> --prompt "To be" ...` (picollm/cli/generate.py).

Every strategy goes through the model's state (`logits, state = model(idx, state)`): the prompt is processed
once, then there is ONE forward of one token per new token, never the whole prefix again.

Batched prompts of different lengths run in lockstep (as in the LLaMA reference generator): the common
prefix of min(prompt lengths) tokens is processed in one forward, then every row is fed one token per step,
its own next prompt token while it still has one, else its newly chosen token. No padding ever enters a
state, so each row's result is exactly that of generating it alone.

Finite context: a transformer with learned positions has `max_context` positions. When feeding the next
token would make its KV cache longer than that, the cache is re-primed from the last max_context - 1 tokens
plus the new one (one forward over a max_context window), which is what recomputing the cropped window from
scratch (nanoGPT's `idx[:, -block_size:]`) gives. From then on every token costs one window forward;
rotary transformers and the recurrent families never need it.

Annotations ("monosemantic" view) are recorded while decoding: the model's own log-probability of each
chosen token and its top-5 alternatives (from the raw distribution: temperature 1, no filtering, no
penalty), plus, in `annotate`, the token's 5 nearest neighbours in the input embedding space.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from picollm.analyze.settings import DecodeConfig
from picollm.core.errors import ConfigError
from picollm.core.log import get_logger
from picollm.models.base import LanguageModel, State, map_state

TOP_ALTERNATIVES = 5  # alternatives and embedding neighbours recorded per generated token


@dataclass
class Generation:
    """One continuation of one prompt, with what the model thought at every step."""

    prompt_ids: list[int]
    ids: list[int]
    """generated tokens (the end-of-sequence token included when it stopped the row)"""
    logprobs: list[float]
    """model log-probability of each generated token (raw distribution, temperature 1)"""
    top_ids: list[list[int]] = field(default_factory=list)
    """the model's most likely tokens at each step, best first"""
    top_probs: list[list[float]] = field(default_factory=list)
    score: float | None = None
    """beam search: the length-normalised score the hypothesis was ranked by"""

    @property
    def mean_logprob(self) -> float:
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else math.nan


# --------------------------------------------------------------------------------------------------
# logit processing (pure functions on (B, V) tensors)
# --------------------------------------------------------------------------------------------------
def seen_mask(history: Tensor, vocab_size: int) -> Tensor:
    """history (B, N) token ids -> (B, V) bool, True where the row has produced the token."""
    mask = torch.zeros(history.shape[0], vocab_size, dtype=torch.bool, device=history.device)
    return mask.scatter_(1, history, True)


def apply_repetition_penalty(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """CTRL (Keskar et al. 2019): make every already-generated token less likely, whatever its sign.

    logits (B, V), seen (B, V) bool. A positive logit is divided by the penalty and a negative one
    multiplied by it, so for penalty > 1 the token always loses probability (plain division would
    raise a negative logit).
    """
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def filter_logits(logits: Tensor, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """logits (B, V) -> a copy with every token outside the top-k / top-p (nucleus) set at -inf.

    top-p keeps the smallest set of most likely tokens whose probability reaches top_p: a token is
    dropped when the tokens ranked above it already hold top_p (the most likely token always stays).
    """
    logits = logits.clone()
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits[logits < kth] = -math.inf
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above each one
        drop_sorted = mass_before >= top_p
        drop_sorted[:, 0] = False
        drop = torch.zeros_like(drop_sorted).scatter_(1, order, drop_sorted)  # back to vocabulary order
        logits[drop] = -math.inf
    return logits


def choose_tokens(logits: Tensor, cfg: DecodeConfig, generator: torch.Generator | None,
                  seen: Tensor | None = None) -> Tensor:
    """logits (B, V) -> next token ids (B,): penalty, then argmax or temperature / top-k / top-p sampling."""
    if seen is not None:
        logits = apply_repetition_penalty(logits, seen, cfg.repetition_penalty)
    if cfg.temperature == 0:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits / cfg.temperature, cfg.top_k, cfg.top_p)
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(1)


# --------------------------------------------------------------------------------------------------
# the state: priming, stepping within a finite context, reordering beams
# --------------------------------------------------------------------------------------------------
class _Feeder:
    """Feeds a (B, ·) token buffer to the model one position at a time, keeping the state within max_context."""

    def __init__(self, model: LanguageModel):
        self.model = model
        self.limit = model.max_context
        self.cache_len = 0
        self.state: State = None

    def prime(self, tokens: Tensor) -> Tensor:
        """tokens (B, T): the whole prompt in one forward -> logits of the last position (B, V)."""
        if self.limit is not None and tokens.shape[1] > self.limit:
            tokens = tokens[:, -self.limit:]  # the window the model can see
        logits, self.state = self.model(tokens)
        self.cache_len = tokens.shape[1]
        return logits[:, -1].float()

    def step(self, tokens: Tensor, upto: int) -> Tensor:
        """Feed tokens[:, upto - 1] (one position) -> logits (B, V) of the next token."""
        if self.limit is not None and self.cache_len + 1 > self.limit:
            # re-prime: the last max_context - 1 tokens plus the new one, in one window forward
            return self.prime(tokens[:, upto - self.limit: upto])
        logits, self.state = self.model(tokens[:, upto - 1: upto], self.state)
        self.cache_len += 1
        return logits[:, -1].float()


def _flatten(state: State) -> list[Tensor]:
    out: list[Tensor] = []
    map_state(lambda t: out.append(t) or t, state)
    return out


def state_batch_dims(model: LanguageModel, device: torch.device) -> list[int | None]:
    """For each tensor of the model's state (in map_state order), the dimension that indexes the batch.

    Families lay out their states differently ((layers, B, H) for the LSTM, (B, nh, T, hs) for the KV
    cache, ...), so this asks the model: the dimension that grows from a batch of 1 to a batch of 2.
    """
    probe = torch.zeros(2, 1, dtype=torch.long, device=device)
    one, two = _flatten(model(probe[:1])[1]), _flatten(model(probe)[1])
    dims: list[int | None] = []
    for a, b in zip(one, two):
        diff = [d for d in range(a.dim()) if a.shape[d] != b.shape[d]]
        dims.append(diff[0] if diff else None)
    return dims


def reorder_state(state: State, index: Tensor, dims: list[int | None]) -> State:
    """Select rows `index` (B',) of every batched tensor of the state (beam search's reshuffle)."""
    it = iter(dims)

    def pick(t: Tensor) -> Tensor:
        d = next(it)
        return t if d is None else t.index_select(d, index)

    return map_state(pick, state)


# --------------------------------------------------------------------------------------------------
# sampling and greedy decoding (batched, lockstep)
# --------------------------------------------------------------------------------------------------
#: on_token(row, piece): told about each generated token as soon as it is chosen (the playground streams
#: them); row is the index of its Generation in generate()'s result, piece a Generation of that one token (its
#: id, log-probability and top alternatives, no prompt), which `annotate` takes as it is
OnToken = Callable[[int, Generation], None]


def _report_tokens(on_token: OnToken, rows: Tensor, at: Tensor, gen: Tensor, logp: Tensor, top_i: Tensor,
                   top_p: Tensor) -> None:
    for r, a in zip(rows.tolist(), at.tolist()):
        on_token(r, Generation([], [int(gen[r, a])], [float(logp[r, a])], [top_i[r, a].tolist()],
                               [top_p[r, a].tolist()]))


def _device(model: LanguageModel) -> torch.device:
    return next(model.parameters()).device


def _top(raw_logp: Tensor) -> tuple[Tensor, Tensor]:
    """raw log-probabilities (B, V) -> (top probabilities, top ids), each (B, min(5, V))."""
    values, ids = raw_logp.topk(min(TOP_ALTERNATIVES, raw_logp.shape[-1]), dim=-1)
    return values.exp(), ids


@torch.no_grad()
def _sample(model: LanguageModel, prompts: list[Tensor], cfg: DecodeConfig, eos_id: int | None,
            generator: torch.Generator | None, on_token: OnToken | None = None) -> list[Generation]:
    device = _device(model)
    B, N = len(prompts), cfg.max_new_tokens
    lens = torch.tensor([len(p) for p in prompts], device=device)
    shortest, longest = int(lens.min()), int(lens.max())
    tokens = torch.zeros(B, longest + N, dtype=torch.long, device=device)  # prompt, then generated tokens
    for i, p in enumerate(prompts):
        tokens[i, : len(p)] = p
    feeder = _Feeder(model)
    logits = feeder.prime(tokens[:, :shortest])  # (B, V)
    n_top = min(TOP_ALTERNATIVES, logits.shape[-1])
    gen = torch.zeros(B, N, dtype=torch.long, device=device)
    logp = torch.zeros(B, N, device=device)
    top_p = torch.zeros(B, N, n_top, device=device)
    top_i = torch.zeros(B, N, n_top, dtype=torch.long, device=device)
    count = torch.zeros(B, dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    seen = torch.zeros_like(logits, dtype=torch.bool)  # (B, V): tokens each row has generated
    for cur in range(shortest, longest + N):
        forced = cur < lens  # rows still reading their prompt
        active = ~forced & ~done  # rows choosing a token now
        raw = logits.log_softmax(dim=-1)
        nxt = torch.where(forced, tokens[:, cur], choose_tokens(logits, cfg, generator, seen))
        rows = active.nonzero().squeeze(1)
        if rows.numel():
            at, tok = count[rows], nxt[rows]
            gen[rows, at] = tok
            logp[rows, at] = raw[rows, tok]
            top_p[rows, at], top_i[rows, at] = _top(raw[rows])
            seen[rows, tok] = True
            if on_token is not None:
                _report_tokens(on_token, rows, at, gen, logp, top_i, top_p)
            count[rows] += 1
            stop = count[rows] >= N
            if cfg.stop_at_eos and eos_id is not None:
                stop |= tok == eos_id
            done[rows] |= stop
        tokens[:, cur] = torch.where(forced | active, nxt, tokens[:, cur])
        if bool(done.all()):
            break  # the last chosen token is never fed: nobody needs its logits
        logits = feeder.step(tokens, cur + 1)

    out = []
    for i, p in enumerate(prompts):
        n = int(count[i])
        out.append(Generation(p.tolist(), gen[i, :n].tolist(), logp[i, :n].tolist(),
                              top_i[i, :n].tolist(), top_p[i, :n].tolist()))
    return out


# --------------------------------------------------------------------------------------------------
# beam search
# --------------------------------------------------------------------------------------------------
@torch.no_grad()
def beam_search(model: LanguageModel, prompt: Tensor, cfg: DecodeConfig, eos_id: int | None = None,
                num_return: int = 1) -> list[Generation]:
    """The `num_return` best continuations of one prompt (1-D ids) under beam search of width cfg.beam.

    Hypotheses are ranked by sum(log p) / length ** cfg.length_penalty. A hypothesis that emits the
    end-of-sequence token is finished; search stops after max_new_tokens, or once cfg.beam hypotheses are
    finished and the best running beam, scored at its current length, does not beat the worst of them
    (the Hugging Face heuristic). The beams share one batched forward per step; their states are reshuffled
    with `reorder_state`. The model should be in eval mode (`generate` sees to it).
    """
    device = _device(model)
    W, N = cfg.beam, cfg.max_new_tokens
    if num_return > W:
        raise ConfigError(f"beam search returns at most --beam {W} hypotheses; asked for {num_return}")
    prompt = prompt.to(device)
    if N == 0:
        return [Generation(prompt.tolist(), [], [], [], [], 0.0) for _ in range(num_return)]
    dims = state_batch_dims(model, device)
    tokens = prompt.repeat(W, 1)  # (W, L): every beam starts as the prompt
    feeder = _Feeder(model)
    logits = feeder.prime(tokens)
    V = logits.shape[-1]
    scores = torch.full((W,), -math.inf, device=device)
    scores[0] = 0.0  # the beams are identical at first: expand only one of them
    logp_hist = torch.zeros(W, 0, device=device)
    top_p_hist = torch.zeros(W, 0, min(TOP_ALTERNATIVES, V), device=device)
    top_i_hist = torch.zeros(W, 0, min(TOP_ALTERNATIVES, V), dtype=torch.long, device=device)
    seen = torch.zeros(W, V, dtype=torch.bool, device=device)
    finished: list[Generation] = []
    norm = lambda s, n: s / (n ** cfg.length_penalty)

    for t in range(N):
        raw = logits.log_softmax(dim=-1)  # (W, V)
        scored = apply_repetition_penalty(logits, seen, cfg.repetition_penalty).log_softmax(dim=-1)
        cand = (scores[:, None] + scored).view(-1)  # (W * V,)
        cand_scores, cand_idx = cand.topk(min(2 * W, cand.numel()))  # 2W: W survive even if W end here
        keep: list[int] = []
        for rank, (s, flat) in enumerate(zip(cand_scores.tolist(), cand_idx.tolist())):
            if s == -math.inf or len(keep) == W:
                break
            beam, tok = divmod(flat, V)
            if cfg.stop_at_eos and eos_id is not None and tok == eos_id:
                if rank < W:  # an eos outside the top W would not have survived as a beam either
                    ids = tokens[beam, len(prompt):].tolist() + [tok]
                    lp = logp_hist[beam].tolist() + [raw[beam, tok].item()]
                    tp, ti = _top(raw[beam: beam + 1])
                    finished.append(Generation(prompt.tolist(), ids, lp, top_i_hist[beam].tolist() + ti.tolist(),
                                               top_p_hist[beam].tolist() + tp.tolist(), norm(s, t + 1)))
                continue
            keep.append(rank)
        if not keep:
            break
        sel = cand_idx[keep]
        beam_idx, tok = sel // V, sel % V  # (W',)
        tp, ti = _top(raw[beam_idx])
        tokens = torch.cat([tokens[beam_idx], tok[:, None]], dim=1)
        scores = cand_scores[keep]
        logp_hist = torch.cat([logp_hist[beam_idx], raw[beam_idx, tok][:, None]], dim=1)
        top_p_hist = torch.cat([top_p_hist[beam_idx], tp[:, None]], dim=1)
        top_i_hist = torch.cat([top_i_hist[beam_idx], ti[:, None]], dim=1)
        seen = seen[beam_idx].scatter_(1, tok[:, None], True)
        if len(finished) >= W and norm(scores.max().item(), t + 1) <= min(g.score for g in finished):
            break
        if t + 1 == N:
            break
        feeder.state = reorder_state(feeder.state, beam_idx, dims)
        logits = feeder.step(tokens, tokens.shape[1])

    for b in range(len(scores)):  # running beams compete with the finished ones
        finished.append(Generation(prompt.tolist(), tokens[b, len(prompt):].tolist(), logp_hist[b].tolist(),
                                   top_i_hist[b].tolist(), top_p_hist[b].tolist(),
                                   norm(scores[b].item(), max(1, tokens.shape[1] - len(prompt)))))
    finished.sort(key=lambda g: -g.score)
    return finished[:num_return]


# --------------------------------------------------------------------------------------------------
# the entry points
# --------------------------------------------------------------------------------------------------
def generate(model: LanguageModel, prompts: Sequence[Sequence[int] | Tensor], cfg: DecodeConfig,
             eos_id: int | None = None, num_samples: int = 1,
             on_token: OnToken | None = None) -> list[Generation]:
    """Continue every prompt (token ids) num_samples times; results are prompt-major, in input order.

    Sampling and greedy decoding batch all rows together (lockstep, see the module docstring); beam
    search runs prompt by prompt and returns the num_samples best hypotheses of each.
    on_token (see OnToken) hears of every token as it is chosen; under beam search, whose hypotheses change
    until the search ends, of the returned tokens once it has ended. What it raises stops the decoding.
    """
    if not prompts:
        return []
    if num_samples < 1:
        raise ConfigError(f"--num_samples must be >= 1; got {num_samples}")
    device = _device(model)
    tensors = [torch.as_tensor(p, dtype=torch.long).flatten().to(device) for p in prompts]
    for i, p in enumerate(tensors):
        if p.numel() == 0:
            if eos_id is None:
                raise ConfigError(f"prompt {i} is empty; give at least one token of text")
            tensors[i] = torch.tensor([eos_id], device=device)  # "start of a new document"
    was_training = model.training
    model.eval()
    try:
        if cfg.strategy == "beam":
            gens = [g for p in tensors for g in beam_search(model, p, cfg, eos_id, num_samples)]
            if on_token is not None:
                for row, g in enumerate(gens):
                    for t in range(len(g.ids)):
                        on_token(row, Generation([], g.ids[t: t + 1], g.logprobs[t: t + 1],
                                                 g.top_ids[t: t + 1], g.top_probs[t: t + 1]))
            return gens
        generator = torch.Generator(device=device).manual_seed(cfg.seed)  # per call: no global RNG state
        rows = [p for p in tensors for _ in range(num_samples)]
        if cfg.max_new_tokens == 0:
            return [Generation(p.tolist(), [], []) for p in rows]
        return _sample(model, rows, cfg, eos_id, generator, on_token)
    finally:
        model.train(was_training)


def nearest_neighbours(embeddings: Tensor, ids: Tensor, k: int = TOP_ALTERNATIVES) -> Tensor:
    """embeddings (V, E), ids (N,) -> (N, k) ids of the most cosine-similar other tokens, best first."""
    unit = F.normalize(embeddings.detach().float(), dim=-1)
    sims = unit[ids] @ unit.T  # (N, V)
    sims[torch.arange(len(ids)), ids] = -math.inf  # a token is not its own neighbour
    return sims.topk(min(k, embeddings.shape[0] - 1), dim=-1).indices


def annotate(gen: Generation, model: LanguageModel, token_strings: Sequence[str]) -> list[dict[str, Any]]:
    """Per generated token: its string, log-probability, the model's top alternatives and its embedding
    neighbours: [{"token", "id", "logprob", "alternatives": [[str, prob], ...], "neighbours": [str, ...]}]."""
    if not gen.ids:
        return []
    neighbours = nearest_neighbours(model.embedding_matrix(), torch.tensor(gen.ids)).tolist()
    return [{"token": token_strings[i], "id": i, "logprob": round(lp, 4),
             "alternatives": [[token_strings[a], round(p, 4)] for a, p in zip(alts, probs)],
             "neighbours": [token_strings[n] for n in nn]}
            for i, lp, alts, probs, nn in zip(gen.ids, gen.logprobs, gen.top_ids, gen.top_probs, neighbours)]


def compact_annotation(annotation: list[dict[str, Any]]) -> str:
    """One string per generation for the csv: `'tok' logprob [alternative prob, ...] ~[neighbour, ...]` per
    token, tokens separated by ' ; ' (token strings quoted, so spaces and separators stay readable)."""
    parts = []
    for a in annotation:
        alts = ", ".join(f"{t!r} {p:.2f}" for t, p in a["alternatives"])
        parts.append(f"{a['token']!r} {a['logprob']:.2f} [{alts}] ~[{', '.join(map(repr, a['neighbours']))}]")
    return " ; ".join(parts)


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Prompt ids. The word tokenizer ends every line with <eos>; a prompt is an unfinished line, so a final
    <eos> the text did not ask for (no trailing newline) is dropped. Characters or words the run never saw in
    training become its unknown token, with a one-line warning naming them."""
    unknown = tokenizer.unknown_pieces(text)
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:8]) + (f" (+{len(unknown) - 8} more)" if len(unknown) > 8 else "")
        get_logger().warning(f"warning: prompt {text!r}: {shown} not in the run's vocabulary; read as the unknown "
                             f"token {tokenizer.token_strings()[tokenizer.unk_id]!r}")
    ids = tokenizer.encode(text)
    if tokenizer.kind == "word" and ids and ids[-1] == tokenizer.eos_id and not text.endswith("\n"):
        ids = ids[:-1]
    return ids


def continuation_text(tokenizer: Any, gen: Generation) -> str:
    """The generated text as it reads after the prompt (keeps the word tokenizer's separating space)."""
    prompt, full = tokenizer.decode(gen.prompt_ids), tokenizer.decode(gen.prompt_ids + gen.ids)
    return full[len(prompt):] if full.startswith(prompt) else tokenizer.decode(gen.ids)


def distinct_n(ids: Sequence[int], n: int) -> float:
    """Distinct-n (Li et al. 2016): unique n-grams / n-grams in the generated tokens (NaN if none)."""
    grams = [tuple(ids[i: i + n]) for i in range(len(ids) - n + 1)]
    return len(set(grams)) / len(grams) if grams else math.nan
