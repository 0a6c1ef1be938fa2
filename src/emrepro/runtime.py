"""What every step script does first: send its output to the rule's log, set threads, set up W&B."""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from pathlib import Path


@contextlib.contextmanager
def step_log(path: str | None):
    """Redirect stdout and stderr (file descriptors too, so library and C output land there) to `path`."""
    if not path:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        except BaseException:
            traceback.print_exc()  # into the log: the interpreter would print it after fds are restored
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(max(1, int(n)))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def offline_hub() -> None:
    """Local folders only: no step below the paper scale's downloads ever waits on a hub lookup."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def wandb_setup(settings: dict, run_dir: str) -> list[str]:
    """Configure W&B through its environment variables; returns TRL's report_to.

    Offline by default: runs are written under `run_dir` and can be synced later with `wandb sync`.
    The API key is read by wandb itself from WANDB_API_KEY and never passes through the project."""
    if settings["mode"] == "disabled":
        os.environ["WANDB_MODE"] = "disabled"
        return []
    os.environ["WANDB_MODE"] = settings["mode"]
    os.environ["WANDB_PROJECT"] = settings["project"]
    os.environ["WANDB_DIR"] = str(Path(run_dir).resolve())
    os.environ.setdefault("WANDB_SILENT", "true")
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    return ["wandb"]
