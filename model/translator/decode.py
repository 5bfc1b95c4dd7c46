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

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import torch
from tokenizers import Tokenizer

from model.networks import Hidden
from model.translator.network import Memory, Translator
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


def _concat(a: Hidden, b: Hidden) -> Hidden:
    if isinstance(a, tuple) and isinstance(b, tuple):
        return (torch.cat([a[0], b[0]], dim=1), torch.cat([a[1], b[1]], dim=1))
    assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
    return torch.cat([a, b], dim=1)


def pad_sources(sources: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (B, S) on `device` and lengths (B,) on the CPU."""
    lengths = torch.tensor([len(s) for s in sources], dtype=torch.long)
    ids = torch.full((len(sources), int(lengths.max())), PAD_ID, dtype=torch.long)
    for i, s in enumerate(sources):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return ids.to(device), lengths


@dataclass
class _Sentence:
    """One source sentence in a search: its `beam` rows (consecutive), their scores, what has finished."""

    key: Hashable  # the caller's handle, returned with its hypotheses
    params: DecodeParams
    source_length: int
    limit: int
    scores: list[float]  # the summed log-probability of each of its rows, -inf where none is live
    finished: list[Hypothesis] = field(default_factory=list)
    steps: int = 0
    gone: bool = False  # done and answered; its rows stay, unused, until the search compacts them

    @property
    def beam(self) -> int:
        return self.params.beam


class BeamSearch:
    """Beam search as a batch that sentences join and leave between steps: each sentence keeps `beam` rows, one
    step runs the decoder over the rows of every sentence present (whatever its beam, its length limit, or when
    it joined), and a sentence leaves with its hypotheses as soon as it is done. `beam_search` runs one set of
    sentences to the end; the service's engine (app/serving/translator.py) admits new requests between steps.

    Each sentence's rows see only its own source (padded positions are masked), so its result does not depend on
    the others present (tests/model/translator/test_decode.py).

    The encoder states are kept once per sentence, not per row: a step attends through `Translator.step`'s grid of
    (sentence, beam slot), so a beam of 4 costs no copy of its source (bench/serve.py's /translate rows). Taking a
    sentence out still copies every other sentence's states, so the rows of a sentence that is done stay (and
    are stepped, unused) until they are a quarter of all rows, or until sentences join or are dropped, which
    copy them anyway: under load, when some sentence finishes at nearly every step, that is one copy per several
    sentences rather than one per step."""

    def __init__(self, net: Translator) -> None:
        self.net = net
        self.device = net.output_bias.device
        self.sentences: list[_Sentence] = []
        self.memory: Memory | None = None  # (B, S, ...) for the B sentences, S the longest source present
        self.hidden: Hidden | None = None  # (L, N, H) for the N rows
        self.width = 1  # the widest beam present: the grid of Translator.step is (B, width)
        self.place = torch.zeros(0, dtype=torch.long, device=self.device)  # (N,): each row's slot in that grid
        self.previous = torch.zeros(0, dtype=torch.long, device=self.device)  # (N,): each row's last id
        self.tokens: list[list[int]] = []  # per row, the ids emitted so far
        self.attention: list[list[torch.Tensor]] = []  # per row, one CPU row per emitted id (when asked for)

    def __len__(self) -> int:
        """The sentences still decoding."""
        return sum(not s.gone for s in self.sentences)

    @property
    def rows(self) -> int:
        return len(self.tokens)

    @torch.inference_mode()
    def add(self, sources: Sequence[list[int]], params: Sequence[DecodeParams], keys: Sequence[Hashable]) -> None:
        """Encode `sources` (ids ending in [EOS]) together and let them join at the next step."""
        if not sources:
            return
        self._compact()
        ids, lengths = pad_sources(list(sources), self.device)
        memory = self.net.encode(ids, lengths)
        beams = torch.tensor([p.beam for p in params], device=self.device)
        hidden = _select(
            self.net.initial_state(memory), torch.arange(len(sources), device=self.device).repeat_interleave(beams)
        )
        for source, p, key in zip(sources, params, keys, strict=True):
            scores = [0.0] + [float("-inf")] * (p.beam - 1)  # one live row at the start: the others would copy it
            self.sentences.append(_Sentence(key, p, len(source), p.limit(len(source)), scores))
        n = int(beams.sum())
        if self.memory is None or self.hidden is None:
            self.memory, self.hidden = memory, hidden
        else:
            self.memory, self.hidden = self.memory.join(memory), _concat(self.hidden, hidden)
        self.previous = torch.cat([self.previous, torch.full((n,), BOS_ID, dtype=torch.long, device=self.device)])
        self.tokens += [[] for _ in range(n)]
        self.attention += [[] for _ in range(n)]
        self._lay_out()

    @torch.inference_mode()
    def drop(self, keys: set[Hashable]) -> None:
        """Remove these sentences (their requests were cancelled) without finishing them."""
        if any(s.key in keys for s in self.sentences):
            self._keep([s for s in self.sentences if s.key not in keys and not s.gone])

    @torch.inference_mode()
    def step(self) -> list[tuple[Hashable, list[Hypothesis]]]:
        """Advance every sentence by one target subword; the (key, n-best hypotheses) of those that are done."""
        assert self.memory is not None and self.hidden is not None and len(self)
        logits, hidden, weights = self.net.step(self.previous, self.hidden, self.memory, self.place, self.width)
        self.hidden = hidden
        log_probs = torch.log_softmax(logits.float(), dim=-1)  # (N, V)
        log_probs[:, PAD_ID] = float("-inf")
        log_probs[:, BOS_ID] = float("-inf")
        starts = self._starts()
        candidates = self._candidates(log_probs, starts)
        wanted = any(s.params.attention and not s.gone for s in self.sentences)
        step_attention = weights.float().cpu() if wanted else None
        origins: list[int] = []  # the row each new row continues
        words: list[int] = []
        widths: list[int] = []  # the source positions of each new row's attention to keep (0: none)
        done: list[tuple[Hashable, list[Hypothesis]]] = []
        minus_inf = float("-inf")
        vocab = log_probs.shape[1]
        for s, start, (values, flat) in zip(self.sentences, starts, candidates, strict=True):
            if s.gone:  # its rows go on as they are, unused
                origins += range(start, start + s.beam)
                words += [EOS_ID] * s.beam
                widths += [0] * s.beam
                continue
            keep: list[float] = []
            slots: list[tuple[int, int]] = []
            for j, (value, index) in enumerate(zip(values, flat, strict=True)):
                if value == minus_inf or len(slots) == s.beam:
                    break
                row, w = start + index // vocab, index % vocab
                if w == EOS_ID:
                    if j < s.beam:  # an ending counts when it is among the K best extensions
                        self._finish(s, row, True, value, step_attention)
                    continue
                keep.append(value)
                slots.append((row, w))
            keep += [minus_inf] * (s.beam - len(slots))  # rows no candidate fills stay dead
            slots += [(start, EOS_ID)] * (s.beam - len(slots))
            s.scores, s.steps = keep, s.steps + 1
            ended = s.steps >= s.limit
            if ended:  # at its length limit a sentence's live rows end as they stand, this step's word included
                for (row, w), value in zip(slots, keep, strict=True):
                    if value != minus_inf:
                        self._finish(s, row, False, value, step_attention, extra=w)
            s.finished.sort(key=lambda h: -h.score)
            if ended or _settled(s.finished, max(keep), s.beam, s.params.alpha, s.limit, s.steps):
                done.append((s.key, s.finished[: s.params.n_best]))
                s.gone = True
            origins += [row for row, _ in slots]
            words += [w for _, w in slots]
            widths += [s.source_length if s.params.attention and not s.gone else 0] * s.beam
        self._advance(origins, words, widths, step_attention)
        unused = sum(s.beam for s in self.sentences if s.gone)
        if unused * 4 >= self.rows:
            self._compact()
        return done

    # ------------------------------------------------------------------ internals

    def _candidates(self, log_probs: torch.Tensor, starts: list[int]) -> list[tuple[list[float], list[int]]]:
        """Per sentence, its 2K best extensions (values, flat index into its K x V), as lists: after the ones that
        end, K still continue, so a beam never narrows. Sentences of one beam width share one top-k."""
        vocab = log_probs.shape[1]
        out: list[tuple[list[float], list[int]]] = [([], [])] * len(self.sentences)
        widths: dict[int, list[int]] = {}
        for i, s in enumerate(self.sentences):
            if not s.gone:
                widths.setdefault(s.beam, []).append(i)
        every = len(widths) == 1 and not any(s.gone for s in self.sentences)
        for beam, members in widths.items():
            scores = torch.tensor([x for i in members for x in self.sentences[i].scores], device=log_probs.device)
            if every:  # every row, in order
                mine = log_probs
            else:
                mine = log_probs[torch.tensor([starts[i] + k for i in members for k in range(beam)],
                                              device=log_probs.device)]  # fmt: skip
            total = (scores[:, None] + mine).view(len(members), beam * vocab)
            values, flat = total.topk(min(2 * beam, beam * vocab), dim=-1)
            for i, v, f in zip(members, values.tolist(), flat.tolist(), strict=True):
                out[i] = (v, f)
        return out

    def _finish(
        self, s: _Sentence, row: int, ended: bool, log_prob: float, step_attention: torch.Tensor | None,
        extra: int | None = None,
    ) -> None:  # fmt: skip
        """A finished hypothesis of row `row`: its ids (plus `extra`, this step's word, at the length limit),
        ranked by its log-probability under the length penalty ([EOS] counts in its length); its attention rows
        when asked for, this step's included."""
        body = self.tokens[row] + ([] if extra is None else [extra])
        length = len(body) + (1 if ended else 0)
        hyp = Hypothesis(body, log_prob / penalty(length, s.params.alpha), log_prob)
        if s.params.attention and step_attention is not None:
            rows = self.attention[row] + [step_attention[row, : s.source_length]]
            hyp.attention = [r.tolist() for r in rows]
        s.finished.append(hyp)

    def _advance(
        self, origins: list[int], words: list[int], widths: list[int], step_attention: torch.Tensor | None
    ) -> None:
        """The next step's rows: row i continues row origins[i] with words[i] (and, where widths[i] > 0, with its
        attention over that many source positions)."""
        self.tokens = [self.tokens[o] + [w] for o, w in zip(origins, words, strict=True)]
        if step_attention is None:
            self.attention = [[] for _ in origins]
        else:
            self.attention = [self.attention[o] + [step_attention[o, :n]] if n else []
                              for o, n in zip(origins, widths, strict=True)]  # fmt: skip
        self.previous = torch.tensor(words, dtype=torch.long, device=self.device)
        # a row continues a row of its own sentence, whose encoder states are the same: only the states move
        assert self.hidden is not None
        self.hidden = _select(self.hidden, torch.tensor(origins, dtype=torch.long, device=self.device))

    def _compact(self) -> None:
        """Take out the rows of the sentences that are done."""
        if any(s.gone for s in self.sentences):
            self._keep([s for s in self.sentences if not s.gone])

    def _starts(self) -> list[int]:
        """Each sentence's first row (its rows are consecutive)."""
        starts, start = [], 0
        for s in self.sentences:
            starts.append(start)
            start += s.beam
        return starts

    def _keep(self, staying: list[_Sentence]) -> None:
        """Keep only `staying`'s rows (a part of the sentences, in their order), as they are."""
        kept = {id(s) for s in staying}
        origins = [start + k for s, start in zip(self.sentences, self._starts(), strict=True) if id(s) in kept
                   for k in range(s.beam)]  # fmt: skip
        sentences = [i for i, s in enumerate(self.sentences) if id(s) in kept]
        self.tokens = [self.tokens[o] for o in origins]
        self.attention = [self.attention[o] for o in origins]
        index = torch.tensor(origins, dtype=torch.long, device=self.device)
        self.previous = self.previous[index]
        self.sentences = staying
        assert self.memory is not None and self.hidden is not None
        if not staying:
            self.memory = self.hidden = None
        else:
            longest = max(s.source_length for s in staying)  # the longest source present sets the width
            self.memory = self.memory.select(torch.tensor(sentences, device=self.device)).narrow(longest)
            self.hidden = _select(self.hidden, index)
        self._lay_out()

    def _lay_out(self) -> None:
        """Each row's slot in the (sentence, beam slot) grid that a step attends through."""
        self.width = max((s.beam for s in self.sentences), default=1)
        slots = [i * self.width + k for i, s in enumerate(self.sentences) for k in range(s.beam)]
        self.place = torch.tensor(slots, dtype=torch.long, device=self.device)


def _settled(finished: list[Hypothesis], best_live: float, beam: int, alpha: float, limit: int, t: int) -> bool:
    """Done when `beam` hypotheses have finished and no live one can still beat the worst of them: a live sum of
    log-probabilities (the best is `best_live`) only falls, so its best possible score is that sum under the most
    lenient penalty it can still get (the longest, at the limit, for alpha >= 0)."""
    if len(finished) < beam:
        return False
    if best_live == float("-inf"):
        return True
    lenient = max(penalty(t + 1, alpha), penalty(limit, alpha))
    return best_live / lenient < finished[beam - 1].score


def beam_search(net: Translator, sources: list[list[int]], params: DecodeParams) -> list[list[Hypothesis]]:
    """The `n_best` best hypotheses, best first, of each source (ids ending in [EOS], as encode_source gives)."""
    was_training = net.training
    net.eval()
    search = BeamSearch(net)
    search.add(sources, [params] * len(sources), list(range(len(sources))))
    found: dict[Hashable, list[Hypothesis]] = {}
    try:
        while search:
            found.update(search.step())
    finally:
        net.train(was_training)
    return [found[i] for i in range(len(sources))]


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
