"""A loaded translator: an artifact (model/artifacts.py) turned into the network in eval mode plus its source and
target subword tokenizers and its decoding defaults. The service and the CLI use it; model/translator/task.py
names it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from model.artifacts import Artifact, ArtifactError, load_artifact
from model.networks import count_parameters
from model.translator.config import TranslatorConfig
from model.translator.decode import DecodeParams, Hypothesis, translate
from model.translator.network import Translator
from model.translator.subwords import decode, encode_source, source_words

TARGET_TOKENIZER = "target_tokenizer.json"  # the target side's vocabulary, when it is not the joint one


class TranslatorModel:
    """A loaded translator artifact: source and target tokenizers + network + decoding defaults."""

    def __init__(self, artifact: Artifact) -> None:
        self.artifact = artifact
        self.config = artifact.config.network_config(TranslatorConfig)
        self.network = Translator(self.config)
        artifact.build(self.network)
        self.source_tokenizer = artifact.tokenizer
        target = artifact.file(TARGET_TOKENIZER)
        if artifact.config.tokenizer.get("joint", True):
            self.target_tokenizer = self.source_tokenizer
        elif target is None:
            raise ArtifactError(f"{artifact.path} has no {TARGET_TOKENIZER}, and its vocabulary is not joint")
        else:
            self.target_tokenizer = Tokenizer.from_file(str(target))
        decoding = artifact.config.training.get("decoding", {})
        self.defaults = DecodeParams(
            beam=int(decoding.get("beam", 4)), alpha=float(decoding.get("alpha", 0.6)),
            max_len_a=float(decoding.get("max_len_a", 1.5)), max_len_b=int(decoding.get("max_len_b", 10)),
        )  # fmt: skip

    @property
    def parameters(self) -> int:
        return count_parameters(self.network)

    @property
    def tokenizer(self) -> Tokenizer:
        return self.source_tokenizer

    def params(self, **overrides: Any) -> DecodeParams:
        """The artifact's decoding defaults with the non-None `overrides` applied (n_best defaults to 1)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return replace(self.defaults, **given)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return encode_source(self.source_tokenizer, texts)

    def detokenize(self, ids: Sequence[int]) -> str:
        return decode(self.target_tokenizer, ids)

    def result(self, text: str, hyps: list[Hypothesis], alignment: bool) -> dict[str, Any]:
        """{"translation", "score"} [+ "alternatives"] [+ "alignment"] for one text's n-best hypotheses."""
        best = hyps[0]
        out: dict[str, Any] = {"translation": self.detokenize(best.ids), "score": best.score}
        if len(hyps) > 1:
            out["alternatives"] = [{"translation": self.detokenize(h.ids), "score": h.score} for h in hyps[1:]]
        if alignment:
            out["alignment"] = self.alignment(text, best)
        return out

    def alignment(self, text: str, hyp: Hypothesis) -> list[dict[str, Any]]:
        """Each target subword with the source word it attends to most (and that attention's weight)."""
        words, owner = source_words(self.source_tokenizer, text)
        rows = []
        for target_id, weights in zip(hyp.ids, hyp.attention, strict=False):
            per_word = [0.0] * len(words)
            for position, weight in enumerate(weights[: len(owner)]):
                if owner[position] >= 0:
                    per_word[owner[position]] += weight
            word = max(range(len(words)), key=per_word.__getitem__) if words else -1
            rows.append(
                {
                    "target": self.target_tokenizer.id_to_token(target_id),
                    "source_word": word,
                    "source": words[word] if word >= 0 else "",
                    "weight": per_word[word] if word >= 0 else 0.0,
                }
            )
        return rows

    def translate(
        self, texts: Sequence[str], params: DecodeParams | None = None, alignment: bool = False, batch_size: int = 64
    ) -> list[dict[str, Any]]:
        """One result per text, decoded in batches of similar source lengths."""
        params = params or self.defaults
        if alignment and not params.attention:
            params = replace(params, attention=True)
        results = translate(self.network, self.source_tokenizer, self.target_tokenizer, texts, params, batch_size)
        return [self.result(text, hyps, alignment) for text, hyps in zip(texts, results, strict=True)]


def load_translator(path: str | Path) -> TranslatorModel:
    return TranslatorModel(load_artifact(path, "translation"))
