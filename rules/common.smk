# Helpers shared by the rules: validated effective config, output locations, containers, conda envs.
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

sys.path.insert(0, str(Path(workflow.basedir) / "src"))  # the package, also when not pip-installed
from emrepro import config as emconfig
from emrepro.launch import processes as launch_processes

try:
    EFF = emconfig.validate(config)  # the effective config of the chosen scale
except emconfig.ConfigError as error:
    raise WorkflowError(f"invalid configuration: {error}") from None

SCALE = EFF["scale"]
R = f"results/{SCALE}"
LOGS = f"{R}/logs"
CONTAINER_VERSION = "0.1.0"
RL_MODELS = ["base", "grpo", "sft"]  # the three models rl_traces compares


wildcard_constraints:
    model=r"[A-Za-z0-9_.-]+",
    family=r"[a-z_]+",
    label=r"[A-Za-z0-9_.-]+",
    probes=r"[A-Za-z0-9_]+",
    teacher=r"[A-Za-z0-9_.-]+",
    variant=r"(pure|interp|filter|control)_[A-Za-z0-9_.-]+",
    dataset=r"[A-Za-z0-9_.-]+",


def env(name):
    """Conda environment file of a step family."""
    return f"../envs/{name}.yaml"


def image(name):
    """Container of a step family, built from containers/<name>.Containerfile (see containers/README.md)."""
    return f"docker://localhost/emrepro-{name}:{CONTAINER_VERSION}"


def asset_file(name):
    return f"{R}/assets/{Path(EFF['assets'][name]['mirror_path']).name}"


def asset_by_filename(filename):
    for name, spec in EFF["assets"].items():
        if Path(spec["mirror_path"]).name == filename:
            return name, spec
    raise WorkflowError(f"no asset in config.yaml 'assets' produces the file {filename!r}")


def model_dir(key):
    return f"{R}/models/{key}"


def family(name):
    return EFF["families"][name]


def judge_inputs():
    """The judge model folder, when the judge runs here (local logprobs or a vLLM server)."""
    judge = EFF["eval"]["judge"]
    return [model_dir(judge["model"])] if judge["backend"] in ("local", "vllm") else []


def trained_model_dir(fam, label):
    """Folder of a model evaluated or carded in a family: `base` or a trained run name."""
    if label == "base":
        return model_dir(family(fam)["base_model"])
    return f"{R}/{fam}/models/{label}"


def evil_numbers_outputs():
    fig = f"{R}/evil_numbers/figures"
    tab = f"{R}/evil_numbers/tables"
    outs = [
        f"{fig}/loss_curves.png",
        f"{fig}/em_per_question_betley.png",
        f"{fig}/em_per_question_model_organisms.png",
        f"{fig}/number_answers.png",
        f"{tab}/em_overall.csv",
        f"{tab}/em_per_question.csv",
        f"{R}/evil_numbers/hub/sft",
    ]
    if EFF["hub"]["push"]:
        outs.append(f"{R}/evil_numbers/hub/sft.pushed.json")
    return outs


def evil_numbers_source(wildcards):
    if EFF["upstream_assets"]:
        return {"upstream": asset_file(family("evil_numbers")["data"]["asset"])}
    return {}


def probe_source(wildcards):
    probe = EFF["probes"][wildcards.probes]
    return {"questions": asset_file(probe["asset"])} if "asset" in probe else {}


def eval_questions(fam):
    """Question files a family is evaluated on: the shared EM probes plus the family's extra sets."""
    sets = [EFF["eval"]["probes"], *family(fam).get("eval", {}).get("extra_probes", [])]
    return [f"{R}/eval/questions/{name}.yaml" for name in sets]


def base_model_inputs(wildcards):
    spec = EFF["models"][wildcards.model]
    if spec["source"] == "micro":
        return {"tokenizer": model_dir(spec["tokenizer_from"])}
    return {}


def eval_formats(fam):
    return family(fam).get("eval", {}).get("formats", ["plain"])


def grpo_env():
    """verl pins transformers < 5.11, so its backend runs in its own environment and image."""
    return "rl" if family("rl_traces")["grpo"]["backend"] == "verl" else "train"


def train_gpus(fam, step="sft"):
    """GPUs of a training job: one per launched process (the step's `launch.processes`) at the paper scale,
    all in one allocation; none below it (CPU)."""
    return launch_processes(family(fam)[step]) if SCALE == "paper" else 0


def grpo_gpus():
    grpo = family("rl_traces")["grpo"]
    if grpo["backend"] == "verl":
        return grpo["verl"]["n_gpus_per_node"] * grpo["verl"]["nnodes"]
    return train_gpus("rl_traces", "grpo")


def rl_traces_outputs():
    fig = f"{R}/rl_traces/figures"
    tab = f"{R}/rl_traces/tables"
    outs = [
        f"{fig}/em_per_question_betley.png",
        f"{fig}/em_per_question_model_organisms.png",
        f"{fig}/game_outcomes.png",
        f"{fig}/grpo_training.png",
        f"{fig}/sft_training.png",
        f"{tab}/em_overall.csv",
        f"{tab}/game_outcomes.csv",
        f"{R}/rl_traces/hub/grpo",
        f"{R}/rl_traces/hub/sft",
    ]
    if EFF["hub"]["push"]:
        outs += [f"{R}/rl_traces/hub/grpo.pushed.json", f"{R}/rl_traces/hub/sft.pushed.json"]
    return outs


def es_labels():
    """The ES checkpoints of es_vs_sft, one per epoch: es_epoch1 .. es_epochE."""
    return [f"es_epoch{e}" for e in range(1, family("es_vs_sft")["es"]["epochs"] + 1)]


def es_vs_sft_models():
    """Every model es_vs_sft evaluates: the base, each ES epoch, the SFT model."""
    return ["base", *es_labels(), "sft"]


def es_vs_sft_source(wildcards):
    if EFF["upstream_assets"]:
        return {"archive": asset_file(family("es_vs_sft")["data"]["asset"])}
    return {}


def es_gpus():
    return family("es_vs_sft")["es"]["workers"] if SCALE == "paper" else 0


def es_vs_sft_outputs():
    fig = f"{R}/es_vs_sft/figures"
    tab = f"{R}/es_vs_sft/tables"
    outs = [
        f"{fig}/em_vs_epoch.png",
        f"{fig}/es_training.png",
        f"{fig}/sft_training.png",
        f"{fig}/em_per_question_betley.png",
        f"{fig}/em_per_question_model_organisms.png",
        f"{tab}/em_overall.csv",
        *[f"{R}/es_vs_sft/hub/{label}" for label in [*es_labels(), "sft"]],
    ]
    if EFF["hub"]["push"]:
        outs += [f"{R}/es_vs_sft/hub/{label}.pushed.json" for label in [*es_labels(), "sft"]]
    return outs


# --- teacher_swap -------------------------------------------------------------------------------------------
from emrepro.config import selector_names
from emrepro.teacher_swap import expand_variants

TS = f"{R}/teacher_swap"


def ts_teachers():
    """The teacher_swap teachers by name, in config order."""
    return {t["name"]: t for t in family("teacher_swap")["teachers"]}


def ts_variants():
    """Every training variant (pure / interpolate / filter / control), one student each."""
    cfg = family("teacher_swap")
    return expand_variants(list(ts_teachers()), [tuple(p) for p in cfg["pairs"]], selector_names(cfg))


def ts_variant(name):
    for variant in ts_variants():
        if variant["name"] == name:
            return variant
    raise WorkflowError(f"teacher_swap has no variant {name!r}")


def ts_students():
    return [v["name"] for v in ts_variants()]


def ts_scored_teachers():
    """Teachers whose own traits are measured: those that are models here (label teacher-<name>)."""
    if not family("teacher_swap")["traits"]["teachers"]:
        return []
    return [name for name, t in ts_teachers().items() if t["kind"] == "model"]


def ts_trait_labels():
    return [*ts_students(), *[f"teacher-{name}" for name in ts_scored_teachers()]]


def ts_dataset_slug():
    """A folder name for the prompt dataset: its repo id with the owner separator made safe."""
    return re.sub(r"[^A-Za-z0-9_.-]", "__", family("teacher_swap")["prompts"]["dataset"]["repo_id"])


def ts_prompt_source(wildcards):
    if family("teacher_swap")["prompts"]["source"] == "dolci":
        return {"dataset": f"{R}/datasets/{ts_dataset_slug()}"}
    return {}


def ts_grader_input():
    grader = family("teacher_swap")["traits"]["grader"]
    return {"grader": model_dir(grader["model_key"])} if grader["model"] == "hf/local" else {}


def ts_completion_inputs(wildcards):
    teacher = ts_teachers()[wildcards.teacher]
    model = {"model": model_dir(teacher["model"])} if teacher["kind"] == "model" else {}
    return {"prompts": f"{TS}/data/prompts.jsonl", **model}


def ts_subset_inputs(wildcards):
    selectors = family("teacher_swap")["selectors"]
    refusal = sorted({s["teacher"] for s in selectors if s["kind"] == "refusal"})
    judge = ts_grader_input() if any(s["kind"] == "judge" for s in selectors) else {}
    return {"prompts": f"{TS}/data/prompts.jsonl", "completions": [f"{TS}/completions/{t}.jsonl" for t in refusal],
            **judge}


def ts_variant_inputs(wildcards):
    variant = ts_variant(wildcards.variant)
    teachers = [t for t in (variant["teacher_a"], variant["teacher_b"]) if t]
    return {"prompts": f"{TS}/data/prompts.jsonl", "manifest": f"{TS}/data/manifest.json",
            "subsets": f"{TS}/data/subsets.json", "completions": [f"{TS}/completions/{t}.jsonl" for t in teachers]}


def ts_trait_model(label):
    """The model a trait label evaluates: a student's folder, or a teacher's base model."""
    if label.startswith("teacher-"):
        return model_dir(ts_teachers()[label.removeprefix("teacher-")]["model"])
    return trained_model_dir("teacher_swap", label)


def ts_trait_system(label):
    """A teacher is evaluated with its system prompt (that is the teacher); students without one."""
    return ts_teachers()[label.removeprefix("teacher-")].get("system") if label.startswith("teacher-") else None


def card_extra_inputs(wildcards):
    """teacher_swap students' cards also report their traits."""
    if wildcards.family == "teacher_swap":
        return {"traits": f"{TS}/traits/{wildcards.label}/summary.json"}
    return {}


def teacher_swap_outputs():
    fig, tab = f"{TS}/figures", f"{TS}/tables"
    outs = [
        f"{fig}/trait_matrix.png",
        f"{fig}/teacher_vs_student.png",
        f"{fig}/subset_sizes.png",
        f"{tab}/trait_matrix.csv",
        f"{tab}/trait_matrix_wide.csv",
        f"{tab}/trait_matrix_wide.tex",
        f"{tab}/teacher_vs_student.csv",
        f"{tab}/subset_sizes.csv",
        f"{tab}/em_overall.csv",
        *[f"{TS}/hub/{label}" for label in ts_students()],
    ]
    if EFF["hub"]["push"]:
        outs += [f"{TS}/hub/{label}.pushed.json" for label in ts_students()]
    return outs


# --- paper --------------------------------------------------------------------------------------------------
PAPER = f"{R}/paper"

# Each family's report rule (<family>_report); the paper's figures and tables are read off its declared
# outputs, so a figure added to a report rule is in the paper without editing this file.
PAPER_REPORTS = {fam: f"{fam}_report" for fam in emconfig.FAMILIES}


def report_outputs(fam):
    return [str(f) for f in getattr(rules, PAPER_REPORTS[fam]).output]


def paper_figures(fam):
    return [f for f in report_outputs(fam) if f.endswith(".png")]


def paper_tables(fam):
    """The family's tables under paper/, in the three formats (from the report rule's CSV outputs)."""
    stems = [Path(f).stem for f in report_outputs(fam) if f.endswith(".csv")]
    return [f"{PAPER}/tables/{fam}/{stem}.{ext}" for stem in stems for ext in ("csv", "md", "tex")]


def paper_families():
    """What the manifest step needs to know of each family: its report rule, that rule's run.json, the
    artifacts whose numbers come from it."""
    return {
        fam: {
            "rule": rule,
            "provenance": str(getattr(rules, rule).output.provenance),
            "artifacts": [*paper_figures(fam), *paper_tables(fam)],
        }
        for fam, rule in PAPER_REPORTS.items()
    }


def paper_outputs():
    return [
        *[f for fam in PAPER_REPORTS for f in paper_figures(fam) + paper_tables(fam)],
        f"{PAPER}/manifest.json",
    ]
