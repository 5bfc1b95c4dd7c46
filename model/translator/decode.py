"""Decoding: beam search over a batch of source sentences (beam 1 is greedy decoding), the one path the CLI, the
evaluation and the service's engine all use.

Each sentence keeps `beam` live hypotheses; a step extends all of them at once (the batch's beams are one batch of
rows) and keeps, per sentence, the `beam` best extensions by summed log-probability. A hypothesis that emits [EOS]
is finished and scored with a length penalty, GNMT's ((5 + |y|) / 6) ** alpha (Wu et al. 2016; alpha 0 ranks by
the plain sum, which favours short output). A sentence is done once it holds `beam` finished hypotheses and no
live one can still beat them, or at its length limit (`max_len_a` * source length + `max_len_b` subwords), where
its live hypotheses are finished as they stand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tokenizers import Tokenizer

from model.networks import Hidden
from model.translator.network import Translator
from model.translator.subwords import BOS_ID, EOS_ID, PAD_ID, decode, encode_source


@dataclass
class Hypothesis:
    """A translation's target ids (without markers), its score (the length-penalised log-probability by which
    hypotheses are ranked), its summed log-probability, and its attention over the source (one row per emitted
    id and the final [EOS]; empty unless asked for)."""

    ids: list[int]
    score: float
    log_prob: float
    attention: list[list[float]] = field(default_factory=list)


@dataclass(frozen=True)
class DecodeParams:
    beam: int = 1
    n_best: int = 1
    alpha: float = 0.6  # the length penalty's exponent
    max_len_a: float = 1.5
    max_len_b: int = 10
    max_new_tokens: int | None = None  # a hard cap on top of the relative limit
    attention: bool = False  # keep each hypothesis's attention rows (for alignments)

    def __post_init__(self) -> None:
        if self.beam < 1 or self.n_best < 1 or self.n_best > self.beam:
            raise ValueError(f"need 1 <= n_best <= beam, got beam {self.beam}, n_best {self.n_best}")

    def limit(self, source_length: int) -> int:
        """The most target subwords a source of `source_length` subwords may get."""
        limit = int(self.max_len_a * source_length + self.max_len_b)
        return max(1, min(limit, self.max_new_tokens) if self.max_new_tokens is not None else limit)


def penalty(length: int, alpha: float) -> float:
    return float(((5 + length) / 6) ** alpha)


def _select(hidden: Hidden, index: torch.Tensor) -> Hidden:
    if isinstance(hidden, tuple):
        return (hidden[0][:, index], hidden[1][:, index])
    return hidden[:, index]


def pad_sources(sources: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (B, S) on `device` and lengths (B,) on the CPU."""
    lengths = torch.tensor([len(s) for s in sources], dtype=torch.long)
    ids = torch.full((len(sources), int(lengths.max())), PAD_ID, dtype=torch.long)
    for i, s in enumerate(sources):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return ids.to(device), lengths


@torch.inference_mode()
def beam_search(net: Translator, sources: list[list[int]], params: DecodeParams) -> list[list[Hypothesis]]:
    """The `n_best` best hypotheses, best first, of each source (ids ending in [EOS], as encode_source gives)."""
    was_training = net.training
    net.eval()
    device = net.output_bias.device
    batch, beam = len(sources), params.beam
    ids, lengths = pad_sources(sources, device)
    memory = net.encode(ids, lengths)
    rows = torch.arange(batch, device=device).repeat_interleave(beam)  # (B * K,): each row's sentence
    memory = memory.select(rows)
    hidden = net.initial_state(memory)  # (L, B * K, H)
    scores = torch.full((batch, beam), float("-inf"), device=device)
    scores[:, 0] = 0.0  # one live hypothesis per sentence at the start: the others would be its duplicates
    tokens = torch.full((batch * beam, 0), BOS_ID, dtype=torch.long, device=device)
    attn_rows: list[torch.Tensor] = []  # per step, (B * K, S)
    previous = torch.full((batch * beam,), BOS_ID, dtype=torch.long, device=device)
    limits = [params.limit(len(s)) for s in sources]
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    done = [False] * batch
    vocab = net.config.target_vocab_size
    minus_inf = float("-inf")
    width = min(2 * beam, beam * vocab)
    for t in range(max(limits)):
        logits, hidden, weights = net.step(previous, hidden, memory)
        log_probs = torch.log_softmax(logits.float(), dim=-1)  # (B * K, V)
        log_probs[:, PAD_ID] = minus_inf
        log_probs[:, BOS_ID] = minus_inf
        total = (scores.view(-1, 1) + log_probs).view(batch, beam * vocab)
        # 2K candidates per sentence: after the ones that end, K still continue (a beam never narrows)
        values, flat = (x.cpu() for x in total.topk(width, dim=-1))  # (B, 2K)
        origins = flat // vocab + torch.arange(batch)[:, None] * beam  # the row each candidate extends
        words = flat % vocab
        keep_origin = torch.arange(batch * beam)  # (B * K,): the rows the next step continues
        keep_word = torch.full((batch * beam,), EOS_ID, dtype=torch.long)
        keep_score = torch.full((batch, beam), minus_inf)
        for b in range(batch):
            if done[b]:
                continue
            live = 0
            for j in range(width):
                value = float(values[b, j])
                if value == minus_inf or live == beam:
                    break
                row, w = int(origins[b, j]), int(words[b, j])
                if w == EOS_ID:
                    if j < beam:  # an ending counts when it is among the K best extensions
                        finished[b].append(_hypothesis(tokens[row].tolist(), True, value, row, weights, attn_rows,
                                                       params))  # fmt: skip
                    continue
                slot = b * beam + live
                keep_origin[slot], keep_word[slot], keep_score[b, live] = row, w, value
                live += 1
        origin, word = keep_origin.to(device), keep_word.to(device)
        tokens = torch.cat([tokens[origin], word[:, None]], dim=1)
        if params.attention:
            attn_rows = [a[origin] for a in attn_rows] + [weights[origin]]
        hidden = _select(hidden, origin)
        for b in range(batch):
            if done[b]:
                continue
            if t + 1 >= limits[b]:  # at its length limit a sentence's live hypotheses end as they stand
                for k in range(beam):
                    value = float(keep_score[b, k])
                    if value != minus_inf:
                        row = b * beam + k
                        finished[b].append(_hypothesis(tokens[row].tolist(), False, value, row, None, attn_rows,
                                                       params))  # fmt: skip
            finished[b].sort(key=lambda h: -h.score)
            if t + 1 >= limits[b] or _settled(finished[b], keep_score[b], beam, params.alpha, limits[b], t + 1):
                done[b] = True
                keep_score[b] = minus_inf
        scores = keep_score.to(device)
        if all(done):
            break
        previous = word
    net.train(was_training)
    return [hyps[: params.n_best] for hyps in finished]


def _hypothesis(
    body: list[int], ended: bool, log_prob: float, row: int, weights: torch.Tensor | None,
    attn_rows: list[torch.Tensor], params: DecodeParams,
) -> Hypothesis:  # fmt: skip
    """A finished hypothesis: `body` (the ids emitted before this step's [EOS], when `ended`, or all of them at
    the length limit), ranked by its log-probability under the length penalty ([EOS] counts in its length); its
    attention rows when asked for, the ending step's (`weights`) included."""
    length = len(body) + (1 if ended else 0)
    hyp = Hypothesis(body, log_prob / penalty(length, params.alpha), log_prob)
    if params.attention:
        rows = [a[row] for a in attn_rows] + ([weights[row]] if ended and weights is not None else [])
        hyp.attention = [r.tolist() for r in rows]
    return hyp


def _settled(finished: list[Hypothesis], live: torch.Tensor, beam: int, alpha: float, limit: int, t: int) -> bool:
    """Done when `beam` hypotheses have finished and no live one can still beat the worst of them: a live sum of
    log-probabilities only falls, so its best possible score is that sum under the most lenient penalty it can
    still get (the longest, at the limit, for alpha >= 0)."""
    if len(finished) < beam:
        return False
    best_live = float(live.max())
    if best_live == float("-inf"):
        return True
    lenient = max(penalty(t + 1, alpha), penalty(limit, alpha))
    return best_live / lenient < finished[beam - 1].score


def translate(
    net: Translator, source_tok: Tokenizer, target_tok: Tokenizer, texts: Sequence[str], params: DecodeParams,
    batch_size: int = 64,
) -> list[list[Hypothesis]]:  # fmt: skip
    """Each text's n-best hypotheses, in input order, decoded in batches of similar source lengths."""
    sources = encode_source(source_tok, texts)
    order = sorted(range(len(texts)), key=lambda i: len(sources[i]))
    out: dict[int, list[Hypothesis]] = {}
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        for i, hyps in zip(idx, beam_search(net, [sources[i] for i in idx], params), strict=True):
            out[i] = hyps
    return [out[i] for i in range(len(texts))]


def best_texts(target_tok: Tokenizer, results: Sequence[Sequence[Hypothesis]]) -> list[str]:
    return [decode(target_tok, hyps[0].ids) for hyps in results]
