"""The test-scale DAG submitted through the SLURM executor to a real one-node SLURM cluster started on this
machine (scripts/slurm_local_cluster.sh): every job runs as a SLURM job, and the outputs are the local run's.

Needs root and apt-get (it installs Debian's slurm-wlm and munge when they are missing), or SLURM already
installed. The local run is conftest's session fixture `test_run`, shared with tests/test_workflow.py.
"""

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from conftest import REPO, copy_bundle, output_digests

CLUSTER = REPO / "scripts" / "slurm_local_cluster.sh"
SLURM_CONF = Path("/etc/slurm/slurm.conf")
TIMEOUT_S = 3600  # the whole DAG took 42 minutes on a heavily loaded 2-core machine (load average 9)

# Measured (a SLURM run against a local run, 2026-11-23): every data file, manifest, table, figure, answer and
# model weight is byte-identical. These differ between any two runs, local or not, so only their presence is
# compared:
VARYING = re.compile("|".join([
    r"(^|/)logs/",  # step logs and benchmark tables: times, pids, progress bars
    r"run\.json$|run_key\.json$",  # provenance: wall time, timestamps, absolute paths
    r"training_log\.jsonl$|trainer_state\.json$",  # per-step timings next to the (identical) losses
    r"figures/es_training\.png$",  # its third panel plots the seconds each ES iteration took
    r"adapter_config\.json$|/checkpoints/README\.md$",  # PEFT writes the base model's absolute path
    r"(^|/)hub/[^/]+/README\.md$",  # model cards quote wall time and digests of folders holding run.json
    r"(^|/)cache/[^/]+\.sqlite$",  # the judge cache: rows in the order the evaluation jobs happened to run
    r"(^|/)paper/manifest\.json$",  # digests of model folders (run.json inside) and of es_training.png
]))
# Files named after their run (a timestamp and a random id): compared by count per folder.
NAMED_BY_RUN = re.compile(r"/inspect/[^/]+\.eval$|/wandb/")


def skip_reason() -> str | None:
    installed = all(shutil.which(tool) for tool in ("sbatch", "slurmctld", "slurmd", "munged"))
    if not installed and (os.geteuid() != 0 or not shutil.which("apt-get")):
        return "SLURM is not installed and cannot be: installing slurm-wlm and munge needs root and apt-get"
    if installed and os.geteuid() != 0:
        return "starting slurmctld, slurmd and munged needs root"
    if SLURM_CONF.is_file() and "slurm_local_cluster.sh" not in SLURM_CONF.read_text():
        return f"{SLURM_CONF} belongs to a real cluster: the test starts its own one-node cluster"
    return None


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A one-node SLURM cluster, stopped (daemons, jobs, its slurm.conf) whatever the test's outcome."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    state = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "EMREPRO_SLURM_DIR": str(state)}
    try:
        start = subprocess.run(["bash", str(CLUSTER), "start"], env=env, capture_output=True, text=True, timeout=900,
                               check=False)
        if start.returncode != 0:
            pytest.fail(f"{CLUSTER.name} start failed:\n{start.stdout[-3000:]}\n{start.stderr[-3000:]}")
        yield state
    finally:
        subprocess.run(["bash", str(CLUSTER), "stop"], env=env, capture_output=True, text=True, timeout=120, check=False)


def local_cluster_profile(folder: Path) -> Path:
    """profiles/slurm adapted to the one-node cluster: the executor settings stay; the paper-scale sizing
    (24 cores, 256 GB, GPUs) and apptainer (Debian has none) go, so rules use the test scale's own threads
    and resources and run in this Python environment."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    for key in ("set-threads", "set-resources", "software-deployment-method", "apptainer-args"):
        profile.pop(key)
    profile.update({
        "cores": os.cpu_count(),  # `threads: workflow.cores` rules take the whole node
        "jobs": 4,
        "latency-wait": 5,  # one machine, one disk
        "retries": 0,  # a failure shows at once instead of being retried as a preemption would be
        "keep-going": False,
        "slurm-no-account": True,  # no accounting database, so no accounts
        "slurm-status-command": "squeue",  # sacct needs accounting; squeue keeps jobs MinJobAge=300 s
        "slurm-init-seconds-before-status-checks": 2,
    })
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return folder


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, tmp_path_factory):
    workdir = copy_bundle(tmp_path_factory.mktemp("slurm_bundle"))
    profile = local_cluster_profile(tmp_path_factory.mktemp("profile") / "slurm-local")
    try:
        result = subprocess.run([sys.executable, "-m", "snakemake", "--workflow-profile", str(profile),
                                 "--config", "scale=test"], cwd=workdir, capture_output=True, text=True,
                                timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:  # the cluster fixture's stop cancels the jobs left behind
        output = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        pytest.fail(f"the SLURM run took more than {TIMEOUT_S} s:\n{output[-4000:]}")
    log = result.stdout + result.stderr
    if result.returncode != 0:
        pytest.fail(f"snakemake --executor slurm failed:\n{log[-6000:]}\n"
                    f"(daemon logs in {slurm_cluster / 'log'}, job logs in {workdir / '.snakemake/slurm_logs'})")
    return workdir, log


def job_completions(state: Path) -> dict[str, dict[str, str]]:
    """slurmctld's job completion log (jobcomp/filetxt): one `Key=Value ...` line per finished job."""
    jobs = {}
    for line in (state / "jobcomp.log").read_text().splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        jobs[fields["JobId"]] = fields
    return jobs


def rule_blocks() -> dict[str, str]:
    """The text of every rule in the Snakefile and rules/*.smk, by rule name."""
    files = [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]
    text = "\n".join(p.read_text() for p in files)
    return {m.group(1): m.group(2) for m in re.finditer(r"^rule (\w+):\n(.*?)(?=^\S|\Z)", text, re.M | re.S)}


def local_by_design() -> set[str]:
    """Rules that run in Snakemake's main process on purpose: those declared `localrule: True` (copies of
    tables and the manifest, seconds each, not worth a queue wait) and target rules without code (all,
    paper, the families' targets)."""
    code = re.compile(r"^\s+(script|shell|run|wrapper|notebook):", re.M)
    return {name for name, body in rule_blocks().items() if "localrule: True" in body or not code.search(body)}


def test_slurm_profile_sizes_existing_rules_and_every_all_cores_rule():
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    rules = rule_blocks()
    assert set(profile["set-threads"]) <= set(rules) and set(profile["set-resources"]) <= set(rules)
    # `threads: workflow.cores` means the --cores total on a cluster: each such rule needs its own number
    all_cores = {name for name, body in rules.items() if "threads: workflow.cores" in body}
    assert all_cores and all_cores <= set(profile["set-threads"]), all_cores - set(profile["set-threads"])
    assert profile["executor"] == "slurm" and profile["software-deployment-method"] == "apptainer"


@pytest.mark.slow
def test_every_job_ran_as_a_completed_slurm_job(slurm_cluster, slurm_run, test_run):
    workdir, log = slurm_run
    # Snakemake prints each job as `rule NAME:` (submitted to the executor) or `localrule NAME:` (run by the
    # main process); only rules local by design may be local.
    local = re.findall(r"^localrule (\w+):", log, re.M)
    assert "all" in local and set(local) <= local_by_design(), f"jobs run outside SLURM: {set(local) - local_by_design()}"
    rules = re.findall(r"^rule (\w+):", log, re.M)
    submitted = re.findall(r"^Job \d+ has been submitted with SLURM jobid (\d+) \(log: (.+)\)\.$", log, re.M)
    local_steps = int(re.search(r"^(\d+) of \d+ steps \(100%\) done", test_run.result.stdout + test_run.result.stderr,
                                re.M).group(1))
    assert len(rules) == len(submitted) == local_steps - len(local), \
        (len(rules), len(submitted), local_steps)
    # SLURM's own record: each submitted job finished COMPLETED with exit code 0 under this run's job name
    done = job_completions(slurm_cluster)
    run_names = set()
    for job_id, slurm_log in submitted:
        assert job_id in done, f"SLURM job {job_id} is not in the job completion log"
        assert (done[job_id]["JobState"], done[job_id]["ExitCode"]) == ("COMPLETED", "0:0"), done[job_id]
        run_names.add(done[job_id]["Name"])
        # the plugin's per-job log: the job's own Snakemake started inside the allocation by the jobstep executor
        assert "--executor slurm-jobstep" in Path(slurm_log).read_text(), slurm_log
    assert len(run_names) == 1  # the plugin names every job of a run by the run's id


@pytest.mark.slow
def test_outputs_match_the_local_run(slurm_run, test_run):
    workdir, _ = slurm_run
    slurm = output_digests(workdir / "results" / "test")
    local = test_run.digests

    def by_name(digests):
        return {rel for rel in digests if not NAMED_BY_RUN.search(rel)}

    def run_named_per_folder(digests):
        return Counter(str(Path(rel).parent) if "/inspect/" in rel else rel.split("/wandb/")[0]
                       for rel in digests if NAMED_BY_RUN.search(rel))

    assert by_name(slurm) == by_name(local), (sorted(by_name(local) - by_name(slurm)),
                                              sorted(by_name(slurm) - by_name(local)))
    assert run_named_per_folder(slurm) == run_named_per_folder(local)
    compared = [rel for rel in by_name(local) if not VARYING.search(rel)]
    differ = sorted(rel for rel in compared if slurm[rel] != local[rel])
    assert not differ, f"outputs that differ from the local run: {differ}"
    # the comparison covers the models: the trained weights are deterministic on CPU with the same threads
    assert sum(rel.endswith(".safetensors") for rel in compared) >= 20 and len(compared) > len(local) // 2
