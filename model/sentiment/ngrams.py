"""Character n-grams for the classifier's vocabulary: vectors for words seen rarely or never in training.

    CharNGramEmbedding(table, vocab, (3, 5), seen)    while training: row t = table[t] + sum of its n-grams' rows
    .folded()                                          for the artifact: one plain nn.Embedding with those rows

A token's n-grams are those of "<" + token (the "<" marks a word's start); a WordPiece continuation "##able"
contributes those of "able". N-grams shared by at least two tokens of the vocabulary get a vector, trained
through every word that holds them (fastText's subword vectors, Bojanowski et al. 2017), so "unwatchable",
spelled "un", "##watch", "##able" by a tokenizer with pieces, gets the vectors that "unfunny", "watch" and
"likable" taught its n-grams. Tokens never seen in training have no vector of their own: only their n-grams.

The n-grams exist only while training: folded() adds them into each token's row, so an artifact holds one
embedding table and serving, the ONNX export and int8 quantization see an ordinary nn.Embedding.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from model.tokenization import CONTINUATION, SPECIALS

EMBEDDING_NGRAMS = (3, 5)  # for the encoder's word vectors
BAG_NGRAMS = (2, 5)  # for the n-gram bag's per-word class weights, as TF-IDF character models use


def char_ngrams(token: str, low: int, high: int) -> set[str]:
    """The character n-grams (low <= n <= high) of a vocabulary token; none for the special tokens."""
    if token in SPECIALS:
        return set()
    text = token[len(CONTINUATION) :] if token.startswith(CONTINUATION) else f"<{token}"
    return {text[i : i + n] for n in range(low, high + 1) for i in range(len(text) - n + 1)}


def ngram_index(vocab: Mapping[str, int], orders: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per token id, the ids of its shared n-grams (V, K), padded with -1, and their weights (V, K), 1/sqrt(count)
    so a long word's n-grams add up to a vector of the same scale as a short one's; and the number of n-grams."""
    grams = [char_ngrams(token, *orders) for token, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    counts = Counter(g for token_grams in grams for g in token_grams)
    ids = {g: i for i, g in enumerate(sorted(g for g, n in counts.items() if n >= 2))}
    rows = [sorted(ids[g] for g in token_grams if g in ids) for token_grams in grams]
    width = max([len(r) for r in rows] + [1])
    index = torch.full((len(rows), width), -1, dtype=torch.long)
    for i, row in enumerate(rows):
        index[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    present = index >= 0
    weights = present.float() / present.sum(1, keepdim=True).clamp(min=1).float().sqrt()
    return index, weights, len(ids)


class CharNGramEmbedding(nn.Module):
    """An embedding whose row for token t is `table`'s row plus the weighted sum of t's n-gram vectors.

    `seen` are the token ids that occur in the training data; every other row of `table` is zeroed (it would
    never be trained), so those tokens are their n-grams alone. New n-gram vectors start at N(0, init_std).
    """

    index: torch.Tensor  # (V, K) n-gram ids, -1 for none
    weights: torch.Tensor  # (V, K)

    def __init__(
        self,
        table: nn.Embedding,
        vocab: Mapping[str, int],
        orders: tuple[int, int],
        seen: Collection[int],
        init_std: float,
    ) -> None:
        super().__init__()
        index, weights, count = ngram_index(vocab, orders)
        self.words = table
        self.grams = nn.Embedding(max(count, 1), table.embedding_dim)
        nn.init.normal_(self.grams.weight, 0.0, init_std)
        self.register_buffer("index", index, persistent=False)
        self.register_buffer("weights", weights, persistent=False)
        unseen = torch.ones(table.num_embeddings, dtype=torch.bool)
        unseen[torch.tensor(sorted(seen), dtype=torch.long)] = False
        with torch.no_grad():
            table.weight[unseen] = 0.0

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """The embedding rows (N, E) of the token ids `ids` (N,)."""
        index = self.index[ids]  # (N, K)
        present = index >= 0
        counts = present.sum(1)
        offsets = torch.cumsum(counts, 0) - counts  # where each token's n-grams start in index[present]
        grams = F.embedding_bag(
            index[present], self.grams.weight, offsets, mode="sum", per_sample_weights=self.weights[ids][present]
        )  # (N, E)
        rows: torch.Tensor = self.words(ids) + grams
        return rows

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        unique, inverse = torch.unique(ids, return_inverse=True)  # each distinct token's n-grams summed once
        # an embedding lookup, not rows[inverse]: advanced indexing's backward on several CPU threads accumulates
        # in a varying order, and the same seed gave different weights from run to run
        return F.embedding(inverse, self.rows(unique))  # (*ids.shape, E)

    @torch.no_grad()
    def folded(self) -> nn.Embedding:
        """An nn.Embedding holding every token's full row (what the artifact stores)."""
        table = nn.Embedding(self.words.num_embeddings, self.words.embedding_dim, padding_idx=self.words.padding_idx)
        table.weight.copy_(self.rows(torch.arange(self.words.num_embeddings, device=self.grams.weight.device)))
        if self.words.padding_idx is not None:
            table.weight[self.words.padding_idx] = 0.0
        return table.to(self.grams.weight.device)
