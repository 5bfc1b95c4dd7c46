"""Beam search: beam 1 is greedy decoding, n-best lists come best first, on a tiny model a wide beam finds what
exhaustive search finds, and a sentence gets the same hypotheses whoever shares its steps (other beams, other
limits, sentences joining and leaving mid-way)."""

from __future__ import annotations

import itertools

import pytest
import torch

from model.translator.config import TranslatorConfig
from model.translator.decode import BeamSearch, DecodeParams, Hypothesis, beam_search, pad_sources, penalty
from model.translator.network import Translator
from model.translator.subwords import BOS_ID, EOS_ID, PAD_ID

SOURCES = [[5, 6, 7, 8, 9, 3], [10, 11, 3], [12, 13, 14, 3]]


def net_of(vocab: int = 25, seed: int = 0, **overrides: object) -> Translator:
    torch.manual_seed(seed)
    config = TranslatorConfig(
        source_vocab_size=30,
        target_vocab_size=vocab,
        embedding_dim=8,
        hidden_size=12,
        **overrides,  # type: ignore[arg-type]
    )
    net = Translator(config).eval()
    with torch.no_grad():  # a random network rarely ends a sentence: make [EOS] likely enough to matter
        net.output_bias[EOS_ID] = 2.0
    return net


@torch.no_grad()
def greedy(net: Translator, source: list[int], limit: int) -> list[int]:
    """The textbook loop, one sentence, argmax at each step."""
    ids, lengths = pad_sources([source], torch.device("cpu"))
    memory = net.encode(ids, lengths)
    hidden = net.initial_state(memory)
    previous, out = torch.tensor([BOS_ID]), []
    for _ in range(limit):
        logits, hidden, _ = net.step(previous, hidden, memory)
        logits[:, [PAD_ID, BOS_ID]] = float("-inf")  # never emitted
        word = int(logits.argmax(-1))
        if word == EOS_ID:
            break
        out.append(word)
        previous = torch.tensor([word])
    return out


def test_beam_one_is_greedy_decoding() -> None:
    net = net_of()
    params = DecodeParams(beam=1)
    for source, (hyp,) in zip(SOURCES, beam_search(net, SOURCES, params), strict=True):
        assert hyp.ids == greedy(net, source, params.limit(len(source)))


def test_n_best_lists_are_ordered_and_distinct() -> None:
    results = beam_search(net_of(), SOURCES, DecodeParams(beam=6, n_best=4))
    for hyps in results:
        assert len(hyps) == 4
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        assert len({tuple(h.ids) for h in hyps}) == 4


def test_a_sentence_decodes_the_same_alone_or_in_a_batch() -> None:
    net, params = net_of(), DecodeParams(beam=4, n_best=2)
    together = beam_search(net, SOURCES, params)
    for source, hyps in zip(SOURCES, together, strict=True):
        (alone,) = beam_search(net, [source], params)
        assert [h.ids for h in alone] == [h.ids for h in hyps]
        assert [h.score for h in alone] == pytest.approx([h.score for h in hyps], abs=1e-5)


@torch.no_grad()
def sequence_log_prob(net: Translator, source: list[int], ids: list[int]) -> float:
    ids_t, lengths = pad_sources([source], torch.device("cpu"))
    logits, _ = net(ids_t, lengths, torch.tensor([[BOS_ID, *ids[:-1]]]))
    log_probs = torch.log_softmax(logits[0], -1)
    return float(sum(log_probs[t, i] for t, i in enumerate(ids)))


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
def test_a_wide_beam_finds_the_exhaustive_best(alpha: float) -> None:
    vocab, limit = 7, 3  # words 1 ([UNK]) and 4..6, and [EOS]: every sequence of up to 3 outputs
    net = net_of(vocab=vocab, seed=3)
    source = SOURCES[1]
    params = DecodeParams(beam=64, n_best=5, alpha=alpha, max_len_a=0.0, max_len_b=limit)
    (found,) = beam_search(net, [source], params)
    words = [1, 4, 5, 6]
    # every body of fewer than `limit` words closed by [EOS], and every body of `limit` words, which the length
    # limit ends as it stands
    candidates = [(list(body), [*body, EOS_ID]) for n in range(limit) for body in itertools.product(words, repeat=n)]
    candidates += [(list(body), list(body)) for body in itertools.product(words, repeat=limit)]
    scored = sorted(
        (
            (sequence_log_prob(net, source, emitted) / penalty(len(emitted), alpha), body)
            for body, emitted in candidates
        ),
        reverse=True,
    )
    assert [h.ids for h in found] == [body for _, body in scored[:5]]
    assert [h.score for h in found] == pytest.approx([score for score, _ in scored[:5]], abs=1e-4)


def same(a: list[Hypothesis], b: list[Hypothesis]) -> None:
    assert [h.ids for h in a] == [h.ids for h in b]
    assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)
    for x, y in zip(a, b, strict=True):
        assert len(x.attention) == len(y.attention)
        for rx, ry in zip(x.attention, y.attention, strict=True):
            assert rx == pytest.approx(ry, abs=1e-5)


@pytest.mark.parametrize(
    "overrides", [{}, {"attention": "additive"}, {"attention": "none"}, {"cell": "lstm"}], ids=repr
)
def test_sentences_join_and_leave_a_search_between_steps(overrides: dict[str, str]) -> None:
    """What the service's engine does: a search with sentences of different beams, n-best, limits and attention,
    more joining after some steps; each gets what it gets alone (the rows of a beam share their sentence's
    encoder states through Translator.step's grid, whatever the attention or cell)."""
    net = net_of(**overrides)
    plans = [
        (SOURCES[0], DecodeParams(beam=4, n_best=2, attention=True)),
        (SOURCES[1], DecodeParams(beam=1)),
        (SOURCES[2], DecodeParams(beam=3, max_len_a=0.0, max_len_b=2)),
        ([20, 21, 22, 23, 24, 25, 26, 27, 3], DecodeParams(beam=2, attention=True)),  # joins later, longest source
        ([15, 3], DecodeParams(beam=8, n_best=8)),
    ]
    search = BeamSearch(net)
    search.add([s for s, _ in plans[:3]], [p for _, p in plans[:3]], [0, 1, 2])
    found: dict[object, list[Hypothesis]] = {}
    for _ in range(2):
        found.update(search.step())
    search.add([s for s, _ in plans[3:]], [p for _, p in plans[3:]], [3, 4])
    while search:
        found.update(search.step())
    assert sorted(found) == [0, 1, 2, 3, 4]
    for key, (source, params) in enumerate(plans):
        (alone,) = beam_search(net, [source], params)
        same(found[key], alone)
    assert found[0][0].attention and len(found[0][0].attention[0]) == len(SOURCES[0])


def test_a_dropped_sentence_leaves_the_others_as_they_were() -> None:
    net, params = net_of(), DecodeParams(beam=3)
    search = BeamSearch(net)
    search.add(SOURCES, [params] * 3, ["a", "b", "c"])
    found = dict(search.step())
    search.drop({"b"})
    assert search.rows == 3 * (len(search))
    while search:
        found.update(search.step())
    assert "b" not in found
    for key, source in zip("ac", (SOURCES[0], SOURCES[2]), strict=True):
        same(found[key], beam_search(net, [source], params)[0])
