"""Pins agree across requirements.txt, envs/*.yaml and containers/*; README and CI run the same tests."""

import re

import yaml

from conftest import REPO


def pins(lines):
    return dict(m.groups() for m in (re.match(r"^\s*([A-Za-z0-9_.-]+)==([^\s\\]+)", l) for l in lines) if m)


def test_env_files_and_containers_use_the_requirements_pins():
    required = pins((REPO / "requirements.txt").read_text().splitlines())
    for env_file in sorted((REPO / "envs").glob("*.yaml")):
        env_pins = pins(yaml.safe_load(env_file.read_text())["dependencies"][-1]["pip"])
        assert env_pins, env_file
        for name, version in env_pins.items():
            assert required.get(name) == version, f"{env_file.name}: {name}=={version} vs requirements.txt"
        for container in (REPO / "containers").glob(f"{env_file.stem}.*"):
            text = container.read_text().replace("\\\n", "\n").replace(" ", "\n")
            assert pins(text.splitlines()) == env_pins, container.name


def test_ci_runs_exactly_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = [l for l in (REPO / ".ci" / "run").read_text().splitlines() if l and not l.startswith(("#", "set ", "cd "))]
    assert len(ci) == 1 and ci[0] in readme
