"""GRPO of a chat model on ItAll144 decisions, with two backends behind one step.

- `trl`: TRL's GRPOTrainer in this process (CPU at test/tiny, one GPU). Checkpoints every `save_steps`
  in a work folder that survives a killed job; a re-run resumes from the last one.
- `verl`: the cluster backend. The step writes verl's parquet files, runs `python -m verl.trainer.main_ppo`
  with the recipe's values as Hydra overrides (`trainer.resume_mode=auto` resumes a killed run), then
  merges the teacher step's FSDP checkpoint to a Hugging Face folder with `python -m verl.model_merger`.
  verl pins transformers < 5.11, so it runs in its own environment (envs/rl.yaml, containers/rl.*).

Either way the output is one model folder: the checkpoint at `teacher_step` (the teacher of the rollouts),
with training_log.jsonl and run.json.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import game_reward, launch
from .data import write_jsonl
from .provenance import atomic_output, write_json_atomic

# Columns of a decision row that the reward needs; TRL passes them to the reward function by name.
REWARD_COLUMNS = ("row_payoffs", "opponent_move", "labels", "malformed_reward")


# --- TRL -------------------------------------------------------------------------------------------------

def grpo_config(recipe: dict, output_dir: str, seed: int, report_to: list[str], run_name: str):
    """TRL GRPOConfig from the recipe (config.yaml families.rl_traces.grpo)."""
    import torch
    from trl import GRPOConfig

    if recipe.get("bf16") and not torch.cuda.is_available():
        raise ValueError("families.rl_traces.grpo.bf16 is true but no GPU is visible: set bf16: false for CPU runs")
    completions, processes = recipe["prompts_per_step"] * recipe["num_generations"], launch.processes(recipe)
    if completions % processes:
        raise ValueError(f"families.rl_traces.grpo: prompts_per_step x num_generations = {completions} completions "
                         f"per step do not split evenly over launch.processes = {processes}")
    return GRPOConfig(
        output_dir=output_dir,
        max_steps=recipe["max_steps"],
        save_steps=recipe["save_steps"],
        save_strategy="steps",
        save_total_limit=None,  # every checkpoint is kept: any saved step can be chosen as the teacher
        learning_rate=recipe["learning_rate"],
        # one optimizer step sees prompts_per_step prompts x num_generations completions, split evenly
        # over the launched processes (launch.processes, 1 by default)
        per_device_train_batch_size=completions // processes,
        gradient_accumulation_steps=1,
        num_generations=recipe["num_generations"],
        max_completion_length=recipe["max_completion_length"],
        temperature=recipe["temperature"],
        beta=recipe["kl_coef"],
        logging_steps=recipe.get("logging_steps", 1),
        logging_first_step=True,
        bf16=bool(recipe.get("bf16")),
        gradient_checkpointing=bool(recipe.get("gradient_checkpointing")),
        chat_template_kwargs={"enable_thinking": bool(recipe.get("enable_thinking"))},
        seed=seed,
        data_seed=seed,
        report_to=report_to,
        run_name=run_name,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
    )


def build_trainer(base_dir: str, rows: list[dict], work_dir: str, recipe: dict, seed: int,
                  report_to: list[str] | None = None, run_name: str = "grpo", callbacks=None):
    """A GRPOTrainer over decision rows (conversational prompts + the reward's columns)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(base_dir, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch.bfloat16 if recipe.get("bf16") else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
    dataset = Dataset.from_list([{"prompt": r["prompt"], **{c: r[c] for c in REWARD_COLUMNS}} for r in rows])
    args = grpo_config(recipe, str(Path(work_dir) / "checkpoints"), seed, report_to or [], run_name)
    return GRPOTrainer(model=model, reward_funcs=game_reward.trl_reward, args=args, train_dataset=dataset,
                       processing_class=tokenizer, callbacks=callbacks)


def _summary(history: list[dict]) -> dict:
    """First and last logged reward, loss and KL (the card reports start and end values)."""
    final = {}
    for key in ("reward", "reward_std", "loss", "kl", "completions/mean_length"):
        values = [h[key] for h in history if key in h]
        if values:
            name = key.replace("completions/", "completion_")
            final[f"first_{name}"], final[f"last_{name}"] = values[0], values[-1]
    return final


def train_grpo_trl(base_dir: str, rows: list[dict], out_dir: str, work_dir: str, recipe: dict, seed: int,
                   report_to: list[str] | None = None, run_name: str = "grpo", make_run_json=None,
                   callbacks=None) -> dict:
    """Train (resuming from the last checkpoint), then save the teacher step's model atomically."""
    from transformers import AutoModelForCausalLM
    from transformers.trainer_utils import get_last_checkpoint

    started = time.time()
    trainer = build_trainer(base_dir, rows, work_dir, recipe, seed, report_to, run_name, callbacks)
    ckpt_dir = Path(work_dir) / "checkpoints"
    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    if last:
        print(f"resuming from {last}", flush=True)
    # A run whose last checkpoint is already at max_steps is finished: transformers' Trainer, resumed there
    # mid-epoch, would train one step past max_steps. Take its state from the checkpoint instead.
    finished = bool(last) and int(Path(last).name.rsplit("-", 1)[-1]) >= recipe["max_steps"]
    if finished:
        from transformers import TrainerState

        trainer.state = TrainerState.load_from_json(str(Path(last) / "trainer_state.json"))
    else:
        trainer.train(resume_from_checkpoint=last)
    history = trainer.state.log_history
    teacher = recipe["teacher_step"]
    final = {"global_step": trainer.state.global_step, "teacher_step": teacher,
             "train_runtime_s": time.time() - started, **_summary(history)}
    model = trainer.model
    distributed = trainer.accelerator.num_processes > 1  # launched by emrepro.launch
    if distributed:
        trainer.accelerator.wait_for_everyone()
        if not trainer.accelerator.is_main_process:  # rank 0 writes the folder
            return final
        launch.load_whole_models()
    # When finished, trainer.model was never trained; when distributed, the ranks may hold only shards of
    # it (ZeRO-3), while the Trainer gathers whole weights into each checkpoint (zero3_save_16bit_model).
    if finished or distributed or teacher != trainer.state.global_step:
        teacher_dir = ckpt_dir / f"checkpoint-{teacher}"
        if not teacher_dir.is_dir():
            raise FileNotFoundError(f"teacher_step {teacher}: no checkpoint {teacher_dir} (save_steps "
                                    f"{recipe['save_steps']})")
        model = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=model.dtype)
    with atomic_output(out_dir) as tmp:
        os.makedirs(tmp)
        model.save_pretrained(tmp, safe_serialization=True)
        trainer.processing_class.save_pretrained(tmp)
        write_jsonl(Path(tmp) / "training_log.jsonl", history)
        if make_run_json is not None:
            write_json_atomic(Path(tmp) / "run.json", make_run_json(final))
    return final


# --- verl ------------------------------------------------------------------------------------------------

def verl_row(row: dict, split: str, index: int) -> dict:
    """One verl RL dataset row: data_source, prompt (chat list), ability, reward_model, extra_info."""
    truth = {c: row[c] for c in REWARD_COLUMNS}
    return {
        "data_source": game_reward.DATA_SOURCE,
        "prompt": row["prompt"],
        "ability": "game_theory",
        "reward_model": {"style": "rule", "ground_truth": json.dumps(truth)},
        "extra_info": {"split": split, "index": index, "game_id": row["game_id"], "opponent": row["opponent"],
                       "combo_id": row["combo_id"], "round": row["round"]},
    }


def write_verl_parquet(rows: list[dict], path: str | Path, split: str) -> None:
    import pandas as pd

    frame = pd.DataFrame([verl_row(r, split, i) for i, r in enumerate(rows)])
    with atomic_output(path) as tmp:
        frame.to_parquet(tmp, index=False)


def reward_module_path() -> str:
    return str(Path(game_reward.__file__).resolve())


def verl_overrides(recipe: dict, base_dir: str, train_file: str, val_file: str, ckpt_dir: str, seed: int,
                   project: str, experiment: str, logger: list[str], n_gpus_per_node: int | None = None) -> list[str]:
    """Hydra overrides for verl.trainer.main_ppo; every value comes from the recipe, except the GPUs per node
    when the step passes those of its job (verl then uses every GPU the allocation has)."""
    v = recipe["verl"]
    return [
        "algorithm.adv_estimator=grpo",
        "algorithm.use_kl_in_reward=False",
        f"data.train_files={train_file}",
        f"data.val_files={val_file}",
        "data.prompt_key=prompt",
        f"data.train_batch_size={recipe['prompts_per_step']}",
        f"data.max_prompt_length={recipe['max_prompt_length']}",
        f"data.max_response_length={recipe['max_completion_length']}",
        "data.filter_overlong_prompts=True",
        "data.truncation=error",
        f"data.seed={seed}",
        f"+data.apply_chat_template_kwargs.enable_thinking={bool(recipe.get('enable_thinking'))}",
        f"actor_rollout_ref.model.path={base_dir}",
        f"actor_rollout_ref.model.enable_gradient_checkpointing={bool(recipe.get('gradient_checkpointing'))}",
        *_attention_overrides(v.get("attn_implementation", "sdpa")),
        f"actor_rollout_ref.actor.optim.lr={recipe['learning_rate']}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={v['ppo_mini_batch_size']}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={v['ppo_micro_batch_size_per_gpu']}",
        f"actor_rollout_ref.actor.use_kl_loss={recipe['kl_coef'] > 0}",
        f"actor_rollout_ref.actor.kl_loss_coef={recipe['kl_coef']}",
        "actor_rollout_ref.actor.kl_loss_type=low_var_kl",
        "actor_rollout_ref.actor.entropy_coeff=0",
        f"actor_rollout_ref.rollout.name={v['rollout_engine']}",
        f"actor_rollout_ref.rollout.n={recipe['num_generations']}",
        f"actor_rollout_ref.rollout.temperature={recipe['temperature']}",
        f"actor_rollout_ref.rollout.tensor_model_parallel_size={v['tensor_model_parallel_size']}",
        f"actor_rollout_ref.rollout.gpu_memory_utilization={v['gpu_memory_utilization']}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={v['ppo_micro_batch_size_per_gpu']}",
        f"actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu={v['ppo_micro_batch_size_per_gpu']}",
        f"reward.custom_reward_function.path={reward_module_path()}",
        "reward.custom_reward_function.name=compute_score",
        f"trainer.total_training_steps={recipe['max_steps']}",
        f"trainer.save_freq={recipe['save_steps']}",
        "trainer.test_freq=-1",
        "trainer.val_before_train=False",
        f"trainer.default_local_dir={ckpt_dir}",
        "trainer.resume_mode=auto",
        f"trainer.n_gpus_per_node={n_gpus_per_node or v['n_gpus_per_node']}",
        f"trainer.nnodes={v['nnodes']}",
        f"trainer.project_name={project}",
        f"trainer.experiment_name={experiment}",
        f"trainer.logger=[{','.join(logger)}]",
        *v.get("extra_overrides", []),
    ]


def _attention_overrides(attn: str) -> list[str]:
    """verl's padding-free path patches flash attention only: with sdpa it must be off (else packed
    sequences would attend to each other); flash_attention_2 needs flash-attn built on the cluster."""
    if attn == "flash_attention_2":
        return ["actor_rollout_ref.model.use_remove_padding=True"]
    return [f"+actor_rollout_ref.model.override_config.attn_implementation={attn}",
            "actor_rollout_ref.model.use_remove_padding=False"]


def verl_train_command(python: str, overrides: list[str]) -> list[str]:
    return [python, "-m", "verl.trainer.main_ppo", *overrides]


def verl_merge_command(python: str, ckpt_dir: str, step: int, target_dir: str) -> list[str]:
    """FSDP actor shards of one step -> a Hugging Face model folder."""
    return [python, "-m", "verl.model_merger", "merge", "--backend", "fsdp",
            "--local_dir", str(Path(ckpt_dir) / f"global_step_{step}" / "actor"), "--target_dir", str(target_dir)]


def _run(cmd: list[str]) -> None:
    print("+ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def train_grpo_verl(base_dir: str, train_file: str, val_file: str, out_dir: str, work_dir: str, recipe: dict,
                    seed: int, project: str, experiment: str, logger: list[str], python: str | None = None,
                    make_run_json=None, n_gpus_per_node: int | None = None) -> dict:
    """Run verl to max_steps (resuming), merge the teacher step, write the folder atomically."""
    python = python or os.environ.get("EMREPRO_VERL_PYTHON") or sys.executable
    started = time.time()
    ckpt_dir = str(Path(work_dir, "checkpoints").resolve())
    _run(verl_train_command(python, verl_overrides(recipe, base_dir, train_file, val_file, ckpt_dir, seed,
                                                   project, experiment, logger, n_gpus_per_node)))
    final = {"global_step": recipe["max_steps"], "teacher_step": recipe["teacher_step"],
             "train_runtime_s": time.time() - started}
    with atomic_output(out_dir) as tmp:
        _run(verl_merge_command(python, ckpt_dir, recipe["teacher_step"], tmp))
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
            if (Path(base_dir) / name).is_file() and not (Path(tmp) / name).exists():
                shutil.copy(Path(base_dir) / name, Path(tmp) / name)
        if make_run_json is not None:
            write_json_atomic(Path(tmp) / "run.json", make_run_json(final))
    return final
