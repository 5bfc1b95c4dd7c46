"""The transfer set a distilled student learns from: the training texts and variants of each (Tang et al. 2019,
"Distilling Task-Specific Knowledge from BERT into Simple Neural Networks"), all labelled by the teacher.

    variants = augmented(ids, copies=4, mask=0.1, ngram=0.25, seed=0)

A variant masks each word with probability `mask` (it becomes [UNK]) and, with probability `ngram`, keeps only
a random n-gram of the text (n from 1 to 5). The teacher's probabilities on these texts tell the student how
the teacher reads phrases and partial sentences it never saw labelled. Tang et al. also swap words for others
of the same part of speech; that needs a tagger, which this package does not train before the classifier.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from model.tokenization import UNK_ID

MAX_NGRAM = 5


def variant(ids: Sequence[int], mask: float, ngram: float, rng: random.Random) -> list[int]:
    """One variant of a text's token ids (never empty)."""
    out = [UNK_ID if rng.random() < mask else t for t in ids]
    if len(out) > 2 and rng.random() < ngram:
        n = rng.randint(1, min(MAX_NGRAM, len(out) - 1))
        start = rng.randint(0, len(out) - n)
        out = out[start : start + n]
    return out or [UNK_ID]


def augmented(
    ids: Sequence[Sequence[int]], copies: int, mask: float, ngram: float, seed: int
) -> tuple[list[list[int]], list[int]]:
    """`copies` variants of every text, and for each variant the index of the text it came from. Seeded: the same
    arguments give the same variants (a resumed distillation sees the transfer set it started with)."""
    rng = random.Random(seed)
    variants: list[list[int]] = []
    sources: list[int] = []
    for i, text in enumerate(ids):
        for _ in range(copies):
            variants.append(variant(text, mask, ngram, rng))
            sources.append(i)
    return variants, sources
