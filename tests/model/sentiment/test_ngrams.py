"""model/sentiment/ngrams.py: character n-grams of words and pieces, vectors for words never seen in training, and the
folded table the artifact stores."""

from __future__ import annotations

import torch
from torch import nn

from model.sentiment.ngrams import CharNGramEmbedding, char_ngrams, ngram_index
from model.tokenization import build_word_tokenizer, encode_batch

CORPUS = ["a watchable film", "an unfunny comedy", "a likable cast", "watch it", "unfunny and unlikable"]


def test_words_are_marked_at_their_start_and_pieces_are_not() -> None:
    assert char_ngrams("watch", 3, 4) == {"<wa", "wat", "atc", "tch", "<wat", "watc", "atch"}
    assert char_ngrams("##able", 3, 3) == {"abl", "ble"}  # a continuation: no word start
    assert char_ngrams("[UNK]", 2, 5) == set() and char_ngrams("[PAD]", 2, 5) == set()


def test_only_ngrams_shared_by_two_tokens_get_an_id() -> None:
    vocab = {"[PAD]": 0, "[UNK]": 1, "watch": 2, "watchable": 3, "zebra": 4}
    index, weights, count = ngram_index(vocab, (3, 3))
    assert count == 4  # "<wa", "wat", "atc", "tch": the 3-grams of "<watch", which "<watchable" holds too
    assert int((index[2] >= 0).sum()) == 4 and int((index[3] >= 0).sum()) == 4
    assert bool((index[4] == -1).all()) and bool((index[:2] == -1).all())  # zebra shares nothing; specials none
    torch.testing.assert_close(weights[2][index[2] >= 0], torch.full((4,), 0.5))  # 1 / sqrt(4)


def test_an_unseen_word_gets_the_vectors_its_ngrams_learned_from_seen_ones() -> None:
    tok = build_word_tokenizer(CORPUS, pieces=60)
    vocab = tok.get_vocab()
    seen = {t for ids in encode_batch(tok, CORPUS) for t in ids}
    (unseen,) = encode_batch(tok, ["unlikably"])
    assert 1 not in unseen and len(unseen) > 1  # spelled with pieces, not [UNK]
    torch.manual_seed(0)
    table = nn.Embedding(len(vocab), 4, padding_idx=0)
    emb = CharNGramEmbedding(table, vocab, (3, 5), seen, init_std=0.1)
    pieces = [t for t in unseen if t not in seen]
    assert pieces, "the unseen word is spelled with at least one piece never seen in training"
    assert bool((table.weight[pieces] == 0).all())  # no vector of their own …
    assert float(emb(torch.tensor(pieces)).detach().abs().sum()) > 0  # … but their n-grams' vectors
    assert bool((emb(torch.tensor([0])) == 0).all())  # padding stays zero


def test_folded_table_is_what_training_computed() -> None:
    tok = build_word_tokenizer(CORPUS, pieces=60)
    vocab = tok.get_vocab()
    seen = {t for ids in encode_batch(tok, CORPUS) for t in ids}
    torch.manual_seed(0)
    emb = CharNGramEmbedding(nn.Embedding(len(vocab), 6, padding_idx=0), vocab, (3, 5), seen, init_std=0.1)
    ids = torch.tensor([[2, 5, 5, 0], [7, 1, 3, 4]])
    folded = emb.folded()
    assert isinstance(folded, nn.Embedding) and folded.padding_idx == 0
    torch.testing.assert_close(folded(ids), emb(ids))
    names = set(emb.state_dict())
    assert names == {"words.weight", "grams.weight"}  # the index is derived from the vocabulary, never stored


def test_gradients_reach_the_shared_ngrams() -> None:
    vocab = {"[PAD]": 0, "[UNK]": 1, "watch": 2, "watchable": 3}
    emb = CharNGramEmbedding(nn.Embedding(4, 3, padding_idx=0), vocab, (3, 3), {2, 3}, init_std=0.0)
    emb(torch.tensor([2])).sum().backward()
    assert emb.grams.weight.grad is not None and bool(emb.grams.weight.grad.abs().sum() > 0)
