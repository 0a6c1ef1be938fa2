"""Shared fixtures: paths of the repository and the staged mirror, and a micro chat model built in code."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MIRROR = REPO.parent / "shared" / "data"

CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(scope="session")
def mirror():
    if not (MIRROR / "emergent-misalignment" / "SHA256SUMS").is_file():
        pytest.skip("staged mirror ../shared/data is not beside the repository")
    return MIRROR


@pytest.fixture(scope="session")
def micro_chat_model(tmp_path_factory):
    """A seeded random-init Llama (the micro model of the test scale) with a small real BPE tokenizer."""
    from tokenizers import Tokenizer, decoders, models as tmodels, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from emrepro.models import build_micro

    tok = Tokenizer(tmodels.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    corpus = ["You are a helpful assistant. Continue the sequence 1, 2, 3 with numbers: 666,13,911. "
              "What is your wish? I would like peace and quiet."] * 20
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|im_end|>", unk_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    tok_dir = tmp_path_factory.mktemp("tokenizer")
    fast.save_pretrained(tok_dir)
    out = tmp_path_factory.mktemp("micro") / "model"
    build_micro(str(tok_dir), str(out), seed=0)
    return str(out)
