"""model/sentiment/network.py: padding never changes a sentence's logits; the ensemble, the bag and the weighted
parts combine as documented."""

from __future__ import annotations

import pytest
import torch

from model.config import CELLS
from model.sentiment.config import POOLINGS, ClassifierConfig
from model.sentiment.network import SentimentClassifier

SENTENCE = [5, 9, 3, 12]


OTHERS = [[2, 4, 6, 8, 10, 12, 14, 16, 3], [7, 7, 11, 13, 2, 5, 3]]


def classifier(
    cell: str,
    pooling: str,
    bidirectional: bool,
    num_layers: int = 1,
    ensemble: int = 1,
    bag: bool = False,
    weighted: bool = False,
) -> SentimentClassifier:
    torch.manual_seed(0)
    config = ClassifierConfig(
        vocab_size=20,
        num_classes=3,
        cell=cell,  # type: ignore[arg-type]
        pooling=pooling,  # type: ignore[arg-type]
        bidirectional=bidirectional,
        embedding_dim=8,
        hidden_size=8,
        num_layers=num_layers,
        dropout=0.3,
        ensemble=ensemble,
        bag=bag,
        bag_buckets=64,
        weighted=weighted,
    )
    net = SentimentClassifier(config).eval()
    if bag:  # a trained bag is not all zeros
        assert net.bag is not None
        with torch.no_grad():
            for p in net.bag.parameters():
                p.normal_()
    if weighted:
        net.mixture.copy_(torch.linspace(0.5, 1.5, len(net.parts)))
    return net


def padded(seqs: list[list[int]], pad_value: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in seqs])
    ids = torch.full((len(seqs), int(lengths.max())), pad_value, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
    return ids, lengths


@pytest.mark.parametrize("bidirectional", [True, False], ids=["bi", "uni"])
@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("cell", CELLS)
def test_logits_do_not_depend_on_padding(cell: str, pooling: str, bidirectional: bool) -> None:
    net = classifier(cell, pooling, bidirectional)
    with torch.no_grad():
        alone = net(*padded([SENTENCE]))  # (1, C)
        # the sentence sits between two longer ones, so it carries 5 padding positions
        in_batch = net(*padded([OTHERS[0], SENTENCE, OTHERS[1]]))  # (3, C)
        # whatever id fills the padding, it must never reach the cells or the pooling
        odd_padding = net(*padded([OTHERS[0], SENTENCE, OTHERS[1]], pad_value=17))
    assert alone.shape == (1, 3) and in_batch.shape == (3, 3)
    torch.testing.assert_close(in_batch[1], alone[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(odd_padding, in_batch, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cell", CELLS)
def test_two_layer_encoder_is_padding_invariant_too(cell: str) -> None:
    net = classifier(cell, "maxmean", True, num_layers=2)
    with torch.no_grad():
        alone = net(*padded([SENTENCE]))
        in_batch = net(*padded([OTHERS[0], SENTENCE]))
    torch.testing.assert_close(in_batch[1], alone[0], atol=1e-5, rtol=0)


def test_ensemble_averages_member_probabilities_and_ignores_padding() -> None:
    net = classifier("lstm", "maxmean", True, ensemble=3)
    ids, lengths = padded([OTHERS[0], SENTENCE, OTHERS[1]])
    with torch.no_grad():
        members = net(ids, lengths, per_member=True)  # (M, B, C)
        combined = net(ids, lengths)  # (B, C)
        alone = net(*padded([SENTENCE]))
    assert members.shape == (3, 3, 3) and combined.shape == (3, 3)
    assert not torch.allclose(members[0], members[1])  # independently initialised members
    expected = torch.softmax(members, dim=-1).mean(0).log()
    torch.testing.assert_close(combined, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(combined.exp().sum(-1), torch.ones(3))  # log-probabilities
    torch.testing.assert_close(combined[1], alone[0], atol=1e-5, rtol=0)


def test_pooling_changes_the_features() -> None:
    ids, lengths = padded([SENTENCE, OTHERS[0]])
    with torch.no_grad():
        feats = {p: classifier("lstm", p, True).members[0].pool(ids, lengths) for p in POOLINGS}
    assert feats["maxmean"].shape == (2, 32)  # 2 directions x 8 hidden x (max, mean)
    assert all(feats[p].shape == (2, 16) for p in ("max", "mean", "last"))
    torch.testing.assert_close(feats["maxmean"], torch.cat([feats["max"], feats["mean"]], dim=-1))
    assert not torch.allclose(feats["max"], feats["mean"])


def test_dropout_is_active_in_training_only() -> None:
    net = classifier("gru", "mean", True)
    ids, lengths = padded([SENTENCE])
    with torch.no_grad():
        assert torch.equal(net(ids, lengths), net(ids, lengths))
        net.train()
        torch.manual_seed(1)
        first = net(ids, lengths)
        second = net(ids, lengths)
    assert not torch.equal(first, second)


def test_config_rejects_unknown_values() -> None:
    with pytest.raises(ValueError, match="cell must be one of"):
        ClassifierConfig(vocab_size=5, num_classes=2, cell="transformer")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pooling must be one of"):
        ClassifierConfig(vocab_size=5, num_classes=2, pooling="sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dropout"):
        ClassifierConfig(vocab_size=5, num_classes=2, dropout=1.0)
    with pytest.raises(ValueError, match="ensemble"):
        ClassifierConfig(vocab_size=5, num_classes=2, ensemble=0)


def test_members_side_by_side_equal_the_forward() -> None:
    from concurrent.futures import ThreadPoolExecutor

    torch.manual_seed(0)
    config = ClassifierConfig(vocab_size=50, num_classes=3, hidden_size=8, embedding_dim=8, ensemble=3)
    net = SentimentClassifier(config).eval()
    ids = torch.randint(1, 50, (5, 7))
    lengths = torch.tensor([7, 3, 5, 1, 6])
    with torch.inference_mode():
        expected = net(ids, lengths)
    with ThreadPoolExecutor(2) as pool:
        assert torch.equal(net.infer(ids, lengths, pool), expected)
    assert torch.equal(net.infer(ids, lengths), expected)


def test_the_bag_ignores_padding_and_hashes_word_pairs() -> None:
    net = classifier("lstm", "maxmean", True, bag=True)
    bag = net.bag
    assert bag is not None
    with torch.no_grad():
        alone = bag(*padded([SENTENCE]))
        in_batch = bag(*padded([OTHERS[0], SENTENCE, OTHERS[1]], pad_value=17))
        one_word = bag(*padded([[5]]))
        words = bag.words.weight[SENTENCE].sum(0) / 2  # sqrt(4 words)
        pairs = torch.tensor([(a * bag.PAIR_HASH + b) % 64 for a, b in zip(SENTENCE, SENTENCE[1:], strict=False)])
        expected = words + bag.pairs.weight[pairs].sum(0) / 3**0.5 + bag.bias
    torch.testing.assert_close(alone[0], expected)
    torch.testing.assert_close(in_batch[1], alone[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(one_word[0], bag.words.weight[5] + bag.bias)  # no pairs in a one-word text


def test_weighted_parts_sum_their_log_probabilities() -> None:
    net = classifier("gru", "max", True, ensemble=2, bag=True, weighted=True)
    ids, lengths = padded([OTHERS[0], SENTENCE, OTHERS[1]])
    with torch.no_grad():
        parts = net(ids, lengths, per_member=True)  # (K, B, C): two members and the bag
        combined = net(ids, lengths)
        alone = net(*padded([SENTENCE]))
    assert parts.shape == (3, 3, 3) and len(net.parts) == 3
    expected = (net.mixture[:, None, None] * torch.log_softmax(parts, -1)).sum(0)
    torch.testing.assert_close(combined, expected)
    torch.testing.assert_close(combined[1], alone[0], atol=1e-5, rtol=0)


def test_configs_without_the_new_fields_build_the_networks_they_always_did() -> None:
    """An artifact written before the bag existed: its config has no bag or weighted, its weights no mixture."""
    old = classifier("lstm", "maxmean", True, ensemble=2)
    config = {k: v for k, v in vars(old.config).items() if k not in ("bag", "bag_buckets", "weighted")}
    again = SentimentClassifier(ClassifierConfig(**config))
    again.load_state_dict(old.state_dict(), strict=True)
    assert again.bag is None and len(again.parts) == 2
