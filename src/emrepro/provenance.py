"""Provenance helpers shared by every step: digests, atomic outputs and run.json records."""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

_CHUNK = 1 << 20

# Distributions whose versions go into run.json (looked up by metadata, so nothing heavy is imported).
_LIBRARIES = (
    "torch",
    "transformers",
    "trl",
    "peft",
    "accelerate",
    "deepspeed",
    "datasets",
    "huggingface_hub",
    "inspect_ai",
    "snakemake",
)


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file, read in chunks so large weights never sit in memory."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_tree(path: str | os.PathLike) -> str:
    """Digest of a directory: sha256 over the sorted (relative path, file sha256) list."""
    h = hashlib.sha256()
    for rel, digest in sorted(file_digests(path).items()):
        h.update(f"{rel}\0{digest}\n".encode())
    return h.hexdigest()


def file_digests(path: str | os.PathLike) -> dict[str, str]:
    """{relative posix path: sha256} for every file below a directory."""
    out = {}
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in files:
            full = os.path.join(root, name)
            rel = os.path.relpath(full, path).replace(os.sep, "/")
            out[rel] = sha256_file(full)
    return out


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary sibling path; rename it onto `path` on success, delete it on error.

    The caller creates a file or a directory at the yielded path. Being a sibling keeps the final
    rename on one filesystem, so readers (and Snakemake) only ever see complete outputs.
    """
    path = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{name}.tmp-{os.getpid()}")
    _remove(tmp)  # left over from a crashed run that had the same pid
    try:
        yield tmp
        if not os.path.lexists(tmp):
            raise FileNotFoundError(f"atomic_output: nothing was written to {tmp} for {path}")
        if os.path.isdir(path) and not os.path.islink(path):
            # os.replace cannot overwrite a non-empty directory: move the old one aside first.
            old = os.path.join(parent, f".{name}.old-{os.getpid()}")
            _remove(old)
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Hard-link a file (weights can be GBs: a link costs nothing), or copy it across filesystems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")


def _git(args: list[str], cwd: str) -> str | None:
    try:
        res = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout if res.returncode == 0 else None


def git_revision() -> tuple[str, bool | None]:
    """(HEAD commit, dirty) of the repository holding this package; ("unknown", None) outside git."""
    here = os.path.dirname(os.path.abspath(__file__))
    head = _git(["rev-parse", "HEAD"], here)
    if head is None:
        return "unknown", None
    status = _git(["status", "--porcelain"], here)
    return head.strip(), (None if status is None else bool(status.strip()))


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def _device() -> str:
    try:
        import torch
    except ImportError:
        return "cpu"
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return "cpu"


def input_digest(path: str | os.PathLike) -> str:
    if os.path.isdir(path):
        return sha256_tree(path)
    return sha256_file(path)


def _utc(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).isoformat().replace("+00:00", "Z")


def run_info(
    config_subset: dict,
    inputs: dict[str, str] | list[str],
    started: float,
    extra: dict | None = None,
) -> dict:
    """Provenance record for a step's run.json. Deliberately holds no environment variables,
    since those may carry tokens."""
    if not isinstance(inputs, dict):
        inputs = {str(p): str(p) for p in inputs}
    revision, dirty = git_revision()
    now = time.time()
    info = {
        "git_revision": revision,
        "dirty": dirty,
        "config": config_subset,
        "inputs": {
            name: {"path": os.fspath(p), "sha256": input_digest(p)} for name, p in inputs.items()
        },
        "libraries": library_versions(),
        "hostname": socket.gethostname(),
        "device": _device(),
        "wall_time_s": round(now - started, 3),
        "started_utc": _utc(started),
        "finished_utc": _utc(now),
    }
    if extra:
        info.update(extra)
    return info
