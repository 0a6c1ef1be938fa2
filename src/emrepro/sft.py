"""Supervised fine-tuning with TRL's SFTTrainer (LoRA through PEFT, or full parameters).

Data arrive as chat rows. Single-reply rows are passed to TRL in its conversational prompt-completion
format, so the loss falls on the assistant's reply only (TRL's completion-only loss) without editing the
chat template. Multi-turn rows (recipe `assistant_only_loss: true`, e.g. game traces) use TRL's
assistant-only loss, which needs `{% generation %}` markers in the chat template: TRL's own training
template where it ships one (Qwen3.5, Llama 3, ...), else the project's marked form of the simple ChatML
loop that SmolLM2 uses. The saved model keeps its original template.
Training writes checkpoints into a work folder that survives a failed or killed job; a re-run resumes
from the last checkpoint. The final model folder appears only when complete (atomic rename).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .data import to_prompt_completion, write_jsonl
from .launch import load_whole_models
from .provenance import atomic_output, write_json_atomic

# Recipe keys passed to SFTConfig under the same name.
_SFT_ARGS = ("num_train_epochs", "learning_rate", "lr_scheduler_type", "weight_decay", "max_grad_norm",
             "per_device_train_batch_size", "gradient_accumulation_steps", "max_length", "logging_steps",
             "eval_steps", "save_steps", "bf16", "gradient_checkpointing")

# SmolLM2's (and the micro model's) ChatML turn, and the same turn with the assistant's reply and its
# end-of-turn token inside generation markers: both render exactly the same text.
_CHATML_TURN = "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
_CHATML_TURN_MARKED = (
    "{% if message['role'] == 'assistant' %}{{'<|im_start|>assistant\n'}}{% generation %}"
    "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{'\n'}}{% else %}" + _CHATML_TURN + "{% endif %}")


def training_chat_template(tokenizer) -> str:
    """A chat template with `{% generation %}` markers for assistant-only loss (see module docstring)."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    template = tokenizer.chat_template or ""
    if has_generation_markers(template):
        return template
    if _CHATML_TURN in template:
        return template.replace(_CHATML_TURN, _CHATML_TURN_MARKED)
    try:
        patched = get_training_chat_template(tokenizer)
    except ValueError as error:
        raise ValueError(f"assistant_only_loss: the chat template of {tokenizer.name_or_path!r} has no "
                         f"{{% generation %}} markers and TRL has no training template for it ({error})") from None
    return patched or template


def sft_config(recipe: dict, output_dir: str, seed: int, report_to: list[str], run_name: str, has_eval: bool):
    """Build TRL's SFTConfig from a recipe (config.yaml's `sft` block)."""
    import torch
    from trl import SFTConfig

    args = {k: recipe[k] for k in _SFT_ARGS if k in recipe}
    if args.get("bf16") and not torch.cuda.is_available():
        raise ValueError("sft.bf16 is true but no GPU is visible: set bf16: false for CPU runs")
    return SFTConfig(
        output_dir=output_dir,
        # transformers 5 takes a warmup ratio as a float below 1 in warmup_steps
        warmup_steps=float(recipe.get("warmup_ratio", 0.0)),
        per_device_eval_batch_size=recipe.get("per_device_train_batch_size", 8),
        eval_strategy="steps" if has_eval else "no",
        save_strategy="steps",
        save_total_limit=2,
        logging_first_step=True,
        packing=False,
        # prompt-completion rows: loss on the completion; multi-turn rows: loss on every assistant turn
        completion_only_loss=not recipe.get("assistant_only_loss", False),
        assistant_only_loss=bool(recipe.get("assistant_only_loss", False)),
        seed=seed,
        data_seed=seed,
        report_to=report_to,
        run_name=run_name,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        **args,
    )


def lora_config(recipe: dict):
    from peft import LoraConfig

    lora = recipe.get("lora", {})
    return LoraConfig(r=lora.get("r", 16), lora_alpha=lora.get("alpha", 16), lora_dropout=lora.get("dropout", 0.0),
                      target_modules=lora.get("target_modules", "all-linear"), task_type="CAUSAL_LM")


def build_trainer(base_dir: str, train_rows: list[dict], val_rows: list[dict], work_dir: str, recipe: dict,
                  seed: int, report_to: list[str] | None = None, run_name: str = "sft"):
    """An SFTTrainer ready to train; separate from `train_sft` so tests can inspect its batches."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch.bfloat16 if recipe.get("bf16") else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
    if recipe.get("assistant_only_loss"):
        tokenizer.chat_template = training_chat_template(tokenizer)
        as_rows = lambda rows: [{"messages": r["messages"]} for r in rows]  # noqa: E731
    else:
        as_rows = lambda rows: [to_prompt_completion(r) for r in rows]  # noqa: E731
    train = Dataset.from_list(as_rows(train_rows))
    val = Dataset.from_list(as_rows(val_rows)) if val_rows else None
    args = sft_config(recipe, str(Path(work_dir) / "checkpoints"), seed, report_to or [], run_name, val is not None)
    peft = lora_config(recipe) if recipe.get("method", "lora") == "lora" else None
    return SFTTrainer(model=model, args=args, train_dataset=train, eval_dataset=val, processing_class=tokenizer,
                      peft_config=peft)


def _model_from_checkpoint(base_dir: str, checkpoint: str, recipe: dict, dtype):
    """The trained model as the Trainer saved it at the last step. Under ZeRO-3 the ranks hold only shards
    of the weights; the Trainer gathers them into every checkpoint (zero3_save_16bit_model), so rank 0
    reads the final checkpoint instead of its own partial copy (the same path for DDP and ZeRO-2)."""
    from transformers import AutoModelForCausalLM

    if recipe.get("method", "lora") == "lora":  # the checkpoint holds the adapter alone
        from peft import PeftModel

        return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype), checkpoint)
    return AutoModelForCausalLM.from_pretrained(checkpoint, dtype=dtype)


def train_sft(base_dir: str, train_rows: list[dict], val_rows: list[dict], out_dir: str, work_dir: str,
              recipe: dict, seed: int, report_to: list[str] | None = None, run_name: str = "sft",
              make_run_json=None) -> dict:
    """Train, resume if a checkpoint exists, save the (merged) model atomically; return final metrics.

    `make_run_json(final_metrics) -> dict` gives the provenance written as run.json inside the folder
    before it appears."""
    from transformers.trainer_utils import get_last_checkpoint

    from transformers import AutoTokenizer

    started = time.time()
    trainer = build_trainer(base_dir, train_rows, val_rows, work_dir, recipe, seed, report_to, run_name)
    ckpt_dir = Path(work_dir) / "checkpoints"
    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    if last:
        print(f"resuming from {last}", flush=True)
    result = trainer.train(resume_from_checkpoint=last)
    final = {"train_loss": result.training_loss, "global_step": trainer.state.global_step,
             "train_runtime_s": time.time() - started}
    if val_rows:
        final["eval_loss"] = trainer.evaluate()["eval_loss"]
    history = trainer.state.log_history
    train_losses = [h["loss"] for h in history if "loss" in h]
    if train_losses:
        final["first_logged_loss"], final["last_logged_loss"] = train_losses[0], train_losses[-1]
    for key in ("mean_token_accuracy", "grad_norm"):
        values = [h[key] for h in history if key in h and "eval_loss" not in h]
        if values:
            final[f"first_{key}"], final[f"last_{key}"] = values[0], values[-1]

    model = trainer.model
    if trainer.accelerator.num_processes > 1:  # launched by emrepro.launch: rank 0 writes the folder
        trainer.accelerator.wait_for_everyone()
        if not trainer.accelerator.is_main_process:
            return final
        load_whole_models()
        model = _model_from_checkpoint(base_dir, get_last_checkpoint(str(ckpt_dir)), recipe, model.dtype)
    with atomic_output(out_dir) as tmp:
        os.makedirs(tmp)
        if recipe.get("method", "lora") == "lora":
            model.save_pretrained(Path(tmp) / "adapter")  # the LoRA adapter alone, small
            model = model.merge_and_unload()  # the merged model is what evaluation and the hub use
        model.save_pretrained(tmp, safe_serialization=True)
        # the base's own tokenizer and chat template (training may have used a marked template)
        AutoTokenizer.from_pretrained(base_dir).save_pretrained(tmp)
        write_jsonl(Path(tmp) / "training_log.jsonl", history)
        if make_run_json is not None:
            write_json_atomic(Path(tmp) / "run.json", make_run_json(final))
    return final
