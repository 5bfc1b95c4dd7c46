"""A linear-chain conditional random field over per-token tag scores: the optional output layer of the tagger.

A path y_1..y_T through K tags scores
    start[y_1] + sum_t emissions[t, y_t] + sum_{t>1} transitions[y_{t-1}, y_t] + end[y_T]
and the CRF is a softmax over all K^T paths. Every method runs over the batch at once and loops only over time
(T steps of (B, K, K) work); a mask (B, T), True on the real tokens, must be a prefix with at least one real
token per sentence, so a sentence scores the same alone or padded in a batch.

  nll(emissions, tags, mask)   forward algorithm: log Z - score(gold), (B,)
  viterbi(emissions, mask)     the best path of each sentence, trimmed to its length
  marginals(emissions, mask)   forward-backward: P(y_t = k | sentence), (B, T, K), 0 on padding
"""

from __future__ import annotations

import torch
from torch import nn


class CRF(nn.Module):
    """Transition scores `transitions[i, j]` (tag i followed by tag j), `start` and `end` scores per tag."""

    def __init__(self, num_tags: int) -> None:
        super().__init__()
        if num_tags < 1:
            raise ValueError(f"num_tags must be >= 1, got {num_tags}")
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))  # (K, K)
        self.start = nn.Parameter(torch.zeros(num_tags))  # (K,)
        self.end = nn.Parameter(torch.zeros(num_tags))  # (K,)

    def _check(self, emissions: torch.Tensor, mask: torch.Tensor) -> None:
        if emissions.dim() != 3 or emissions.shape[-1] != self.num_tags:
            raise ValueError(f"emissions must be (B, T, {self.num_tags}), got {tuple(emissions.shape)}")
        if mask.shape != emissions.shape[:2]:
            raise ValueError(f"mask must be (B, T) = {tuple(emissions.shape[:2])}, got {tuple(mask.shape)}")
        if emissions.shape[1] == 0 or not bool(mask[:, 0].all()):
            raise ValueError("every sentence needs at least one real token (mask[:, 0] all True)")

    def _scaled(self, temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Transition, start and end scores divided by `temperature` (with the emissions: a tempered CRF)."""
        return self.transitions / temperature, self.start / temperature, self.end / temperature

    def _forward(
        self, emissions: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward log-scores alpha (B, T, K) (carried unchanged over padding) and log Z (B,)."""
        transitions, start, end = self._scaled(temperature)
        emissions = emissions / temperature
        alpha = start + emissions[:, 0]  # (B, K)
        alphas = [alpha]
        for t in range(1, emissions.shape[1]):
            step = torch.logsumexp(alpha[:, :, None] + transitions, dim=1) + emissions[:, t]  # (B, K)
            alpha = torch.where(mask[:, t, None], step, alpha)
            alphas.append(alpha)
        return torch.stack(alphas, dim=1), torch.logsumexp(alpha + end, dim=-1)  # (B, T, K), (B,)

    def _backward(self, emissions: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """Backward log-scores beta (B, T, K): beta[t, i] = log sum over the rest of the path given y_t = i."""
        transitions, _, end = self._scaled(temperature)
        emissions = emissions / temperature
        beta = end.expand(emissions.shape[0], -1)  # (B, K)
        betas = [beta]
        for t in range(emissions.shape[1] - 2, -1, -1):
            nxt = emissions[:, t + 1] + beta  # (B, K)
            step = torch.logsumexp(transitions + nxt[:, None, :], dim=2)  # (B, K)
            beta = torch.where(mask[:, t + 1, None], step, end.expand_as(step))  # the last real token ends the path
            betas.append(beta)
        return torch.stack(betas[::-1], dim=1)  # (B, T, K)

    def score(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The score of the path `tags` (B, T) through each sentence, (B,)."""
        tags = tags.masked_fill(~mask, 0)  # padding may hold any value, e.g. -100
        maskf = mask.to(emissions.dtype)
        emitted = emissions.gather(-1, tags.unsqueeze(-1)).squeeze(-1)  # (B, T)
        moved = self.transitions[tags[:, :-1], tags[:, 1:]]  # (B, T-1)
        last = tags.gather(1, (mask.sum(1, keepdim=True) - 1)).squeeze(1)  # (B,)
        inner = (emitted * maskf).sum(1) + (moved * maskf[:, 1:]).sum(1)
        return self.start[tags[:, 0]] + inner + self.end[last]

    def nll(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of the gold `tags` (B, T) per sentence, (B,)."""
        self._check(emissions, mask)
        _, log_z = self._forward(emissions, mask)
        return log_z - self.score(emissions, tags, mask)

    def marginals(self, emissions: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """P(y_t = k | sentence) (B, T, K) by forward-backward; rows sum to 1 on real tokens, 0 on padding.
        `temperature` divides every score (emissions, transitions, start, end) before normalising."""
        self._check(emissions, mask)
        alpha, log_z = self._forward(emissions, mask, temperature)
        beta = self._backward(emissions, mask, temperature)
        probs = torch.exp(alpha + beta - log_z[:, None, None])  # (B, T, K)
        return probs * mask.unsqueeze(-1).to(probs.dtype)

    @torch.no_grad()
    def viterbi(self, emissions: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        """The highest-scoring tag path of each sentence, as lists trimmed to the sentence lengths."""
        self._check(emissions, mask)
        batch, length, k = emissions.shape
        best = self.start + emissions[:, 0]  # (B, K)
        keep = torch.arange(k, device=emissions.device).expand(batch, k)  # padding points back to the same tag
        pointers = []
        for t in range(1, length):
            candidates = best[:, :, None] + self.transitions  # (B, K prev, K next)
            step, came_from = candidates.max(dim=1)  # (B, K), (B, K)
            real = mask[:, t, None]
            best = torch.where(real, step + emissions[:, t], best)
            pointers.append(torch.where(real, came_from, keep))
        tag = (best + self.end).argmax(-1)  # (B,) the last real token's tag, carried through the padding
        path = [tag]
        for came_from in reversed(pointers):
            tag = came_from.gather(1, tag[:, None]).squeeze(1)
            path.append(tag)
        tags = torch.stack(path[::-1], dim=1).tolist()  # (B, T)
        lengths = mask.sum(1).tolist()
        return [row[:n] for row, n in zip(tags, lengths, strict=True)]
