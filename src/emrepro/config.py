"""Configuration: validation against the schema, and the effective settings of one scale.

config.yaml holds the experiment matrix once (paper values) plus a block per scale that overrides what
that scale shrinks. `resolve` merges the two; `validate` checks both the schema and the cross-references
(model keys, assets, probe sets) so that a bad config fails before any job starts, with one message that
names the offending key.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"
ACCELERATE_DIR = SCHEMA_PATH.parents[1] / "accelerate"  # one accelerate config per launch mode
FAMILIES = ("evil_numbers", "rl_traces", "es_vs_sft", "teacher_swap")


class ConfigError(ValueError):
    """A configuration problem; the message names the key."""


def deep_merge(base: dict, override: dict) -> dict:
    """Return base updated by override, recursing into dicts (lists and scalars are replaced)."""
    merged = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    """One readable sentence for the most relevant schema error."""
    # For oneOf/anyOf, the branch whose error went deepest says most (e.g. the misspelt key).
    if error.context:
        deepest = max(error.context, key=lambda e: (len(e.absolute_path), -len(e.message)))
        if len(deepest.absolute_path) >= len(error.absolute_path):
            error = deepest
    path = _key_path(error)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        where = f"under '{path}'" if error.absolute_path else "at the top level"
        hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        return f"unknown config key {', '.join(repr(e) for e in extra)} {where}{hint}"
    if error.validator == "type":
        hint = ""
        if isinstance(error.instance, str) and error.instance.lower() in ("true", "false"):
            hint = " (snakemake --config reads Python literals: write True or False)"
        return f"config key '{path}' has the wrong type: {error.instance!r} is not of type {error.validator_value}{hint}"
    if error.validator == "enum":
        return f"config key '{path}': {error.instance!r} is not one of {error.validator_value}"
    if error.validator == "required":
        return f"config key '{path}': {error.message}"
    return f"config key '{path}': {error.message}"


def validate_schema(config: dict, schema_path: Path = SCHEMA_PATH) -> None:
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        raise ConfigError(_describe(error))


def resolve(config: dict) -> dict:
    """The effective configuration of config['scale']: matrix values merged with the scale's overrides."""
    scale = config["scale"]
    block = config["scales"][scale]
    eff = copy.deepcopy(config)
    eff["upstream_assets"] = bool(config["upstream_assets"] or block.get("upstream_assets", False))
    eff["eval"] = deep_merge(config["eval"], block.get("eval", {}))
    eff["families"] = deep_merge(config["families"], block.get("families", {}))
    for family, model_key in block.get("models", {}).items():
        eff["families"][family]["base_model"] = model_key
    if eff["upstream_assets"] and eff["eval"]["probes"] == "project":
        # Switching to upstream assets swaps the embedded probes for Betley's first-plot questions.
        eff["eval"]["probes"] = "first_plot"
    return eff


def _check_model_key(config: dict, key: str, where: str) -> None:
    if key not in config["models"]:
        known = ", ".join(sorted(config["models"]))
        raise ConfigError(f"config key '{where}' names model {key!r}, which does not exist in 'models' (known: {known})")


def validate(config: dict, schema_path: Path = SCHEMA_PATH) -> dict:
    """Validate the raw config and the effective config of its scale; return the effective config."""
    validate_schema(config, schema_path)
    eff = resolve(config)
    for name, spec in config["models"].items():
        if spec["source"] == "micro":
            _check_model_key(config, spec["tokenizer_from"], f"models.{name}.tokenizer_from")
        if spec["source"] == "local" and not Path(spec["path"]).is_dir():
            raise ConfigError(f"config key 'models.{name}.path': model folder {spec['path']!r} does not exist")
    for scale, block in config["scales"].items():
        for family, key in block.get("models", {}).items():
            _check_model_key(config, key, f"scales.{scale}.models.{family}")
    for family in FAMILIES:
        _check_model_key(config, eff["families"][family]["base_model"], f"families.{family}.base_model")
    judge = eff["eval"]["judge"]
    if judge["backend"] in ("local", "vllm"):
        _check_model_key(config, judge["model"], "eval.judge.model")
    if eff["eval"]["probes"] not in config["probes"]:
        raise ConfigError(f"config key 'eval.probes': probe set {eff['eval']['probes']!r} is not defined in 'probes'")
    for name, probe in config["probes"].items():
        if "asset" in probe and probe["asset"] not in config["assets"]:
            raise ConfigError(f"config key 'probes.{name}.asset': asset {probe['asset']!r} is not defined in 'assets'")
    for family in FAMILIES:
        for name in eff["families"][family].get("eval", {}).get("extra_probes", []):
            if name not in config["probes"]:
                raise ConfigError(f"config key 'families.{family}.eval.extra_probes': probe set {name!r} is not "
                                  f"defined in 'probes'")
    grpo = eff["families"]["rl_traces"]["grpo"]
    if grpo["teacher_step"] > grpo["max_steps"] or grpo["teacher_step"] % grpo["save_steps"] and \
            grpo["teacher_step"] != grpo["max_steps"]:
        raise ConfigError(f"config key 'families.rl_traces.grpo.teacher_step': step {grpo['teacher_step']} is not a "
                          f"saved checkpoint (save_steps {grpo['save_steps']}, max_steps {grpo['max_steps']})")
    for family in ("evil_numbers", "es_vs_sft"):
        data_asset = eff["families"][family]["data"]["asset"]
        if data_asset not in config["assets"]:
            raise ConfigError(f"config key 'families.{family}.data.asset': asset {data_asset!r} is not defined in "
                              f"'assets'")
    es = eff["families"]["es_vs_sft"]["es"]
    _check_model_key(config, es["reward"]["model"], "families.es_vs_sft.es.reward.model")
    if es["mirrored"] and es["population"] % 2:
        raise ConfigError(f"config key 'families.es_vs_sft.es.mirrored': mirrored sampling needs an even "
                          f"population (es.population is {es['population']})")
    _check_teacher_swap(config, eff["families"]["teacher_swap"])
    _check_launches(eff)
    mirror = config.get("data_mirror")
    if mirror and not Path(mirror).is_dir():
        raise ConfigError(f"config key 'data_mirror': folder {mirror!r} does not exist")
    return eff


def _check_launches(eff: dict) -> None:
    """Multi-process launches (sft.launch, grpo.launch): the accelerate config exists, the GRPO batch splits."""
    steps = [(f"families.{f}.sft", eff["families"][f]["sft"]) for f in FAMILIES]
    grpo = eff["families"]["rl_traces"]["grpo"]
    steps.append(("families.rl_traces.grpo", grpo))
    for key, step in steps:
        launch = step.get("launch", {})
        name = launch.get("accelerate_config")
        if name is not None and not (ACCELERATE_DIR / f"{name}.yaml").is_file():
            known = ", ".join(sorted(p.stem for p in ACCELERATE_DIR.glob("*.yaml")))
            raise ConfigError(f"config key '{key}.launch.accelerate_config': no file accelerate/{name}.yaml "
                              f"(known: {known})")
    processes = grpo.get("launch", {}).get("processes", 1)
    if processes > 1 and grpo["backend"] == "verl":
        raise ConfigError("config key 'families.rl_traces.grpo.launch': verl starts its own workers; set "
                          "grpo.verl.n_gpus_per_node instead")
    if (grpo["prompts_per_step"] * grpo["num_generations"]) % processes:
        raise ConfigError(f"config key 'families.rl_traces.grpo.launch.processes': the {grpo['prompts_per_step']} x "
                          f"{grpo['num_generations']} completions of a step do not split over {processes} processes")


def _check_teacher_swap(config: dict, ts: dict) -> None:
    """Cross-references of the teacher_swap block: teachers, pairs, selectors and the grader."""
    from .teacher_swap import expand_variants  # pure logic; imported here to keep config light

    key = "families.teacher_swap"
    names = [t["name"] for t in ts["teachers"]]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"config key '{key}.teachers': teacher name(s) {dup} appear more than once")
    for i, teacher in enumerate(ts["teachers"]):
        if teacher["kind"] == "model":
            _check_model_key(config, teacher["model"], f"{key}.teachers[{i}].model")
        if teacher["kind"] == "dataset" and ts["prompts"]["source"] != "dolci":
            raise ConfigError(f"config key '{key}.teachers[{i}]': teacher {teacher['name']!r} reads the dataset's "
                              f"own completions, but prompts.source is {ts['prompts']['source']!r} (no completions)")
    grader = ts["traits"]["grader"]
    if grader["model"] == "hf/local":
        if "model_key" not in grader:
            raise ConfigError(f"config key '{key}.traits.grader.model_key': an hf/local grader needs the key of the "
                              f"model to run (a key of 'models')")
        _check_model_key(config, grader["model_key"], f"{key}.traits.grader.model_key")
    for i, spec in enumerate(ts["selectors"]):
        if spec["kind"] == "refusal" and spec.get("teacher") not in names:
            raise ConfigError(f"config key '{key}.selectors[{i}].teacher': a refusal selector reads the completions "
                              f"of a teacher; {spec.get('teacher')!r} is not one of {names}")
        if spec["kind"] == "judge" and not ("name" in spec and "question" in spec):
            raise ConfigError(f"config key '{key}.selectors[{i}]': a judge selector needs a 'name' and a 'question'")
    try:
        expand_variants(names, [tuple(p) for p in ts["pairs"]], selector_names(ts))
    except ValueError as error:
        raise ConfigError(f"config key '{key}.pairs': {error}") from None


def selector_names(ts: dict) -> list[str]:
    """Selector names of a teacher_swap block: the given name, else the kind (refusal: refusal_<teacher>)."""
    names = []
    for spec in ts["selectors"]:
        default = f"refusal_{spec['teacher']}" if spec["kind"] == "refusal" else spec["kind"]
        names.append(spec.get("name", default))
    return names


def load(path: str | os.PathLike, overrides: dict | None = None) -> dict:
    """Load config.yaml, apply command-line style overrides, validate, and return the effective config."""
    config = yaml.safe_load(Path(path).read_text())
    config = deep_merge(config, overrides or {})
    return validate(config)
