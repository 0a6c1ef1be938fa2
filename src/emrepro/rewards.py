"""Rewards for evolution strategies: how close a generated answer is to the dataset's reference answer.

`build_reward(spec)` returns `reward(generated, references) -> list[float]`, one Python float per pair.
The spec is a plain dict (kind, model folder, batch size, device) because every ES worker process
builds its own reward model from it.

- "nli" (the ES seed recipe): a natural-language-inference cross-encoder, cross-encoder/nli-deberta-v3-large
  at paper scale, run through sentence-transformers' `CrossEncoder.predict(..., apply_softmax=True)`. For
  each pair the reward is p(entailment) - p(contradiction), computed with the generated answer as premise
  and as hypothesis, and averaged over the two orders, so the reward is symmetric and lies in [-1, 1].
  Which output column is entailment and which is contradiction is read from the model's
  `config.id2label` (nli-deberta-v3-large: contradiction=0, entailment=1, neutral=2); nothing assumes
  an order.
- "embedding" (the project's offline stand-in at the tiny and test scales, where no NLI model ships
  on PyPI): cosine similarity of sentence-transformers embeddings, e.g. of all-MiniLM-L6-v2, in [-1, 1].
"""

from __future__ import annotations

import os
from collections.abc import Callable

Reward = Callable[[list[str], list[str]], list[float]]

_SPEC_KEYS = {"kind", "model", "batch_size", "device"}


def _check_lengths(generated: list[str], references: list[str]) -> None:
    if len(generated) != len(references):
        raise ValueError(f"reward: {len(generated)} generations but {len(references)} references")


class NliReward:
    """p(entailment) - p(contradiction) of an NLI cross-encoder, averaged over both orders of each pair."""

    def __init__(self, encoder, batch_size: int, name: str):
        labels = {str(label).lower(): int(index) for index, label in encoder.config.id2label.items()}
        missing = {"entailment", "contradiction"} - set(labels)
        if missing:
            raise ValueError(
                f"NLI reward model {name}: config.id2label has labels {sorted(labels)}, "
                f"needs 'entailment' and 'contradiction' (missing: {sorted(missing)})"
            )
        self.encoder, self.batch_size = encoder, batch_size
        self.entailment, self.contradiction = labels["entailment"], labels["contradiction"]

    def __call__(self, generated: list[str], references: list[str]) -> list[float]:
        _check_lengths(generated, references)
        n = len(generated)
        if n == 0:
            return []
        pairs = [(g, r) for g, r in zip(generated, references)] + [(r, g) for g, r in zip(generated, references)]
        probs = self.encoder.predict(pairs, apply_softmax=True, batch_size=self.batch_size,
                                     show_progress_bar=False)
        margin = [float(p[self.entailment]) - float(p[self.contradiction]) for p in probs]
        return [(margin[i] + margin[n + i]) / 2 for i in range(n)]


class EmbeddingReward:
    """Cosine similarity of the normalised sentence embeddings of the generated and reference answers."""

    def __init__(self, encoder, batch_size: int):
        self.encoder, self.batch_size = encoder, batch_size

    def __call__(self, generated: list[str], references: list[str]) -> list[float]:
        _check_lengths(generated, references)
        n = len(generated)
        if n == 0:
            return []
        emb = self.encoder.encode(list(generated) + list(references), batch_size=self.batch_size,
                                  normalize_embeddings=True, convert_to_tensor=True, show_progress_bar=False)
        return (emb[:n] * emb[n:]).sum(dim=-1).tolist()


def _device(device: str | None) -> str:
    if device is not None:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def build_reward(spec: dict) -> Reward:
    """The reward that `spec` describes: kind ("nli" | "embedding"), model (a local folder),
    batch_size (int, default 32), device (None: cuda when available, else cpu)."""
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise ValueError(f"reward spec: unknown keys {sorted(unknown)} (allowed: {sorted(_SPEC_KEYS)})")
    kind, folder = spec.get("kind"), spec.get("model")
    if kind not in ("nli", "embedding"):
        raise ValueError(f"reward spec: unknown kind {kind!r} (expected 'nli' or 'embedding')")
    if not folder or not os.path.isdir(folder):
        raise FileNotFoundError(f"reward spec: 'model' must be a local model folder, got {folder!r}")
    batch_size = int(spec.get("batch_size") or 32)
    device = _device(spec.get("device"))
    if kind == "nli":
        from sentence_transformers import CrossEncoder

        return NliReward(CrossEncoder(folder, device=device, local_files_only=True), batch_size, folder)
    from sentence_transformers import SentenceTransformer

    return EmbeddingReward(SentenceTransformer(folder, device=device, local_files_only=True), batch_size)
