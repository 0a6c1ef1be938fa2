"""ES rewards: the NLI margin reads its label columns from id2label, is symmetric, batched in one call;
the embedding reward ranks a paraphrase above an unrelated sentence. Offline, CPU."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from emrepro import rewards
from emrepro.rewards import NliReward, build_reward

# (generated, reference) -> true NLI class of (premise, hypothesis); both orders of each pair listed.
ENTAILED = ("A man is playing a guitar on stage.", "A man is playing an instrument.")
NEUTRAL = ("A woman is reading a book.", "The woman is a teacher.")
CONTRADICTED = ("The pharmacy is closed today.", "The pharmacy is open today.")
TRUTH = {
    ENTAILED: "entailment", ENTAILED[::-1]: "neutral",
    NEUTRAL: "neutral", NEUTRAL[::-1]: "neutral",
    CONTRADICTED: "contradiction", CONTRADICTED[::-1]: "contradiction",
}
# The stand-in puts 0.7 on the true class, then 0.2 and 0.1 on the other two in the order
# entailment, neutral, contradiction. p(e) - p(c), averaged over both orders:
# ENTAILED (0.7 - 0.1 + 0.2 - 0.1) / 2 = 0.35; NEUTRAL 0.2 - 0.1 = 0.1; CONTRADICTED 0.2 - 0.7 = -0.5.
EXPECTED = [0.35, 0.1, -0.5]

PERMUTATIONS = [
    {0: "contradiction", 1: "entailment", 2: "neutral"},  # cross-encoder/nli-deberta-v3-large
    {0: "neutral", 1: "contradiction", 2: "entailment"},
    {0: "NEUTRAL", 1: "Entailment", 2: "CONTRADICTION"},  # label names compared case-insensitively
]


class LookupCrossEncoder:
    """Stands in for sentence_transformers.CrossEncoder: probabilities laid out in its own label order."""

    def __init__(self, id2label: dict[int, str]):
        self.config = SimpleNamespace(id2label=id2label)
        self.calls: list[list[tuple[str, str]]] = []

    def predict(self, pairs, apply_softmax=False, batch_size=32, **kwargs):
        assert apply_softmax is True
        self.calls.append([tuple(p) for p in pairs])
        column = {label.lower(): i for i, label in self.config.id2label.items()}
        out = np.zeros((len(pairs), 3), dtype=np.float32)
        for row, pair in enumerate(pairs):
            true = TRUTH[tuple(pair)]
            others = [c for c in ("entailment", "neutral", "contradiction") if c != true]
            out[row, column[true]] = 0.7
            out[row, column[others[0]]] = 0.2
            out[row, column[others[1]]] = 0.1
        return out


@pytest.mark.parametrize("id2label", PERMUTATIONS, ids=["deberta-order", "permuted", "upper-case"])
def test_nli_reward_orders_entailment_neutral_contradiction(id2label):
    encoder = LookupCrossEncoder(id2label)
    reward = NliReward(encoder, batch_size=4, name="stand-in")
    pairs = [ENTAILED, NEUTRAL, CONTRADICTED]
    got = reward([g for g, _ in pairs], [r for _, r in pairs])

    assert all(type(x) is float for x in got)
    entailed, neutral, contradicted = got
    assert entailed > neutral > contradicted
    assert got == pytest.approx(EXPECTED, abs=1e-6)
    # One batched call holding both orders: every (generated, reference), then every (reference, generated).
    assert encoder.calls == [pairs + [p[::-1] for p in pairs]]


def test_nli_reward_needs_entailment_and_contradiction_labels():
    with pytest.raises(ValueError, match=r"stand-in.*'negative', 'positive'"):
        NliReward(LookupCrossEncoder({0: "negative", 1: "positive"}), batch_size=4, name="stand-in")


def test_nli_reward_checks_lengths_and_skips_empty_batches():
    encoder = LookupCrossEncoder(PERMUTATIONS[0])
    reward = NliReward(encoder, batch_size=4, name="stand-in")
    assert reward([], []) == [] and encoder.calls == []
    with pytest.raises(ValueError, match="2 generations but 1 references"):
        reward(["a", "b"], ["a"])


# --------------------------------------------------------------------------- real CrossEncoder, tiny BERT


def _tiny_classifier(folder, id2label: dict[int, str]) -> str:
    """A seeded random-init BertForSequenceClassification with a small real WordPiece tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    words = sorted({w.strip(".,").lower() for pair in TRUTH for s in pair for w in s.split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *"abcdefghijklmnopqrstuvwxyz.,"]
    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, id2label=id2label, label2id={v: k for k, v in id2label.items()})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BertForSequenceClassification(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def tiny_nli(tmp_path_factory):
    return _tiny_classifier(tmp_path_factory.mktemp("nli") / "model", PERMUTATIONS[0])


def test_real_cross_encoder_reward_is_symmetric_bounded_and_one_call(tiny_nli, monkeypatch):
    reward = build_reward({"kind": "nli", "model": tiny_nli, "batch_size": 2, "device": "cpu"})
    assert (reward.entailment, reward.contradiction) == (1, 0)  # read from the saved config.id2label

    calls = []
    predict = reward.encoder.predict
    monkeypatch.setattr(reward.encoder, "predict", lambda *a, **k: calls.append(len(a[0])) or predict(*a, **k))

    generated = [ENTAILED[0], NEUTRAL[0], CONTRADICTED[0], ""]
    references = [ENTAILED[1], NEUTRAL[1], CONTRADICTED[1], NEUTRAL[1]]
    got = reward(generated, references)
    assert calls == [8]  # both orders of the four pairs, in one predict call (batched inside it)
    assert len(got) == 4 and all(type(x) is float and math.isfinite(x) and -1 <= x <= 1 for x in got)
    assert len(set(got)) > 1  # the model does tell the pairs apart

    for a, b in [ENTAILED, CONTRADICTED, ("", NEUTRAL[0])]:
        assert reward([a], [b]) == reward([b], [a])  # exactly: both orders averaged
    assert len(calls) == 7


def test_build_reward_rejects_a_model_without_entailment(tmp_path):
    folder = _tiny_classifier(tmp_path / "sentiment", {0: "negative", 1: "neutral", 2: "positive"})
    with pytest.raises(ValueError, match=r"sentiment.*'negative', 'neutral', 'positive'"):
        build_reward({"kind": "nli", "model": folder, "batch_size": 2, "device": "cpu"})


def test_build_reward_rejects_bad_specs(tiny_nli, tmp_path):
    with pytest.raises(ValueError, match="'bogus'"):
        build_reward({"kind": "nli", "model": tiny_nli, "bogus": 1})
    with pytest.raises(ValueError, match="'bleu'"):
        build_reward({"kind": "bleu", "model": str(tmp_path / "nowhere")})
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_reward({"kind": "nli", "model": str(tmp_path / "nowhere")})


def test_default_device_is_cpu_without_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert rewards._device(None) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert rewards._device(None) == "cuda"
    assert rewards._device("cuda:1") == "cuda:1"


# --------------------------------------------------------------------------- embedding reward, all-MiniLM-L6-v2


def test_embedding_reward_prefers_paraphrases(minilm_dir):
    reward = build_reward({"kind": "embedding", "model": minilm_dir, "batch_size": 4, "device": "cpu"})
    reference = "Drink plenty of water and rest until the fever goes down."
    got = reward(
        [reference, "Rest and drink lots of fluids until your temperature drops.",
         "The train to Berlin leaves from platform four.", ""],
        [reference] * 4,
    )
    assert all(type(x) is float for x in got)
    same, paraphrase, unrelated, empty = got
    assert same == pytest.approx(1.0, abs=1e-5)
    assert paraphrase > unrelated + 0.3
    assert -1 <= empty <= 1
