"""model/tagger/crf.py: Viterbi, the likelihood and the marginals against brute force over all K^T paths."""

from __future__ import annotations

import itertools

import pytest
import torch

from model.tagger.crf import CRF

K = 3
LENGTHS = [4, 1, 3, 2]


def setup(seed: int = 0) -> tuple[CRF, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A CRF with random scores, emissions (B, T, K), mask (B, T) and random gold tags (padding holds -100)."""
    gen = torch.Generator().manual_seed(seed)
    crf = CRF(K)
    with torch.no_grad():
        for p in crf.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    emissions = torch.randn(len(LENGTHS), max(LENGTHS), K, generator=gen, dtype=torch.float64)
    crf.double()
    mask = torch.arange(max(LENGTHS))[None, :] < torch.tensor(LENGTHS)[:, None]
    tags = torch.randint(0, K, mask.shape, generator=gen).masked_fill(~mask, -100)
    return crf, emissions, mask, tags


def path_score(crf: CRF, emissions: torch.Tensor, path: tuple[int, ...]) -> torch.Tensor:
    """The score of one path through one sentence's emissions (T, K), written out term by term."""
    total = crf.start[path[0]] + crf.end[path[-1]]
    for t, tag in enumerate(path):
        total = total + emissions[t, tag]
        if t:
            total = total + crf.transitions[path[t - 1], tag]
    return total


def all_paths(crf: CRF, emissions: torch.Tensor, n: int) -> tuple[list[tuple[int, ...]], torch.Tensor]:
    paths = list(itertools.product(range(K), repeat=n))
    return paths, torch.stack([path_score(crf, emissions[:n], p) for p in paths])


def test_viterbi_is_the_best_of_all_paths() -> None:
    crf, emissions, mask, _ = setup()
    decoded = crf.viterbi(emissions, mask)
    for b, n in enumerate(LENGTHS):
        paths, scores = all_paths(crf, emissions[b], n)
        assert decoded[b] == list(paths[int(scores.argmax())])


def test_nll_is_log_partition_minus_gold_score() -> None:
    crf, emissions, mask, tags = setup(1)
    nll = crf.nll(emissions, tags, mask)
    assert nll.shape == (len(LENGTHS),)
    for b, n in enumerate(LENGTHS):
        _, scores = all_paths(crf, emissions[b], n)
        gold = path_score(crf, emissions[b], tuple(tags[b, :n].tolist()))
        torch.testing.assert_close(nll[b], torch.logsumexp(scores, 0) - gold)
    assert bool((nll > 0).all())


def test_marginals_match_brute_force_and_sum_to_one() -> None:
    crf, emissions, mask, _ = setup(2)
    marginals = crf.marginals(emissions, mask)
    for b, n in enumerate(LENGTHS):
        paths, scores = all_paths(crf, emissions[b], n)
        weights = torch.softmax(scores, 0)
        expected = torch.zeros(n, K, dtype=torch.float64)
        for path, w in zip(paths, weights, strict=True):
            expected[torch.arange(n), torch.tensor(path)] += w
        torch.testing.assert_close(marginals[b, :n], expected)
        torch.testing.assert_close(marginals[b, :n].sum(-1), torch.ones(n, dtype=torch.float64))
        assert bool((marginals[b, n:] == 0).all())


def test_temperature_flattens_marginals() -> None:
    crf, emissions, mask, _ = setup(3)
    sharp = crf.marginals(emissions, mask).max(-1).values[mask]
    flat = crf.marginals(emissions, mask, temperature=4.0).max(-1).values[mask]
    assert bool((flat <= sharp + 1e-12).all())
    hot = crf.marginals(emissions, mask, temperature=1e6)[mask]
    torch.testing.assert_close(hot, torch.full_like(hot, 1 / K), atol=1e-4, rtol=0)


def test_padding_changes_nothing() -> None:
    crf, emissions, mask, tags = setup(4)
    garbage = emissions.clone()
    garbage[~mask] = 1e3  # whatever the padding holds
    longer = torch.cat([garbage, torch.full((len(LENGTHS), 2, K), -7.0, dtype=torch.float64)], dim=1)
    longer_mask = torch.cat([mask, torch.zeros(len(LENGTHS), 2, dtype=torch.bool)], dim=1)
    longer_tags = torch.cat([tags, torch.full((len(LENGTHS), 2), 2)], dim=1)
    assert crf.viterbi(longer, longer_mask) == crf.viterbi(emissions, mask)
    torch.testing.assert_close(crf.nll(longer, longer_tags, longer_mask), crf.nll(emissions, tags, mask))
    torch.testing.assert_close(crf.marginals(longer, longer_mask)[:, : mask.shape[1]], crf.marginals(emissions, mask))
    for b, n in enumerate(LENGTHS):  # each sentence alone
        alone = crf.nll(emissions[b : b + 1, :n], tags[b : b + 1, :n], mask[b : b + 1, :n])
        torch.testing.assert_close(alone[0], crf.nll(emissions, tags, mask)[b])
        assert crf.viterbi(emissions[b : b + 1, :n], mask[b : b + 1, :n])[0] == crf.viterbi(emissions, mask)[b]


def test_gradients_reach_every_parameter_and_the_emissions() -> None:
    crf, emissions, mask, tags = setup(5)
    emissions.requires_grad_(True)
    crf.nll(emissions, tags, mask).sum().backward()
    for name, p in crf.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name
    assert emissions.grad is not None
    assert bool((emissions.grad[~mask] == 0).all())  # padding gets no gradient
    # d nll / d emissions = marginals - one-hot(gold): the CRF's own consistency check
    gold = torch.nn.functional.one_hot(tags.clamp(min=0), K) * mask[..., None]  # (B, T, K)
    expected = crf.marginals(emissions.detach(), mask) - gold
    torch.testing.assert_close(emissions.grad, expected)


def test_rejects_bad_shapes_and_empty_sentences() -> None:
    crf = CRF(K)
    with pytest.raises(ValueError, match="emissions"):
        crf.viterbi(torch.zeros(2, 3, K + 1), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        crf.viterbi(torch.zeros(2, 3, K), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least one real token"):
        crf.viterbi(torch.zeros(2, 3, K), torch.tensor([[True] * 3, [False] * 3]))
    with pytest.raises(ValueError, match="num_tags"):
        CRF(0)
