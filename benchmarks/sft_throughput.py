"""SFT throughput: the bundle's SFT settings against TRL's defaults, tokens/s and model FLOPs utilisation.

For each model shape (random-init, Qwen-shaped; no hub needed) the same training workload runs twice in one
process, on one GPU:

- bundle: `emrepro.sft.sft_config` from a family's paper recipe in config.yaml (batch, accumulation,
  gradient checkpointing, bf16, loss settings, save/log cadence) and the model loaded as `emrepro.sft` loads it;
- trl-default: `trl.SFTConfig` with its defaults and the model given as a path, as a TRL user would start.

Both train on the same pre-tokenized rows of exactly `--seq` tokens (a prompt of 10% and a completion),
full parameters unless `--method recipe` (then both get the recipe's LoRA adapter), with `max_length` set
to `--seq` in both (TRL's default of 1024 would truncate, which is another workload, not another setting).
The first `--warmup` optimizer steps are not timed. Tokens/s counts every token of every sequence of a
timed step. MFU uses the usual model FLOPs per trained token, 6*N + 12*L*H*T (N the parameters in matrix
products, lm_head included and the embedding lookup not; L layers, H attention width, T sequence length;
PaLM, Chowdhery et al. 2022, appendix B), so gradient-checkpoint recomputation counts as overhead, not as
useful work; divided by the GPU's dense bf16 peak (`--peak-tflops`, default by device name).

    python benchmarks/sft_throughput.py                               # 0.5B and 1.7B shapes, seq 2048
    python benchmarks/sft_throughput.py --shapes qwen-micro --steps 2 --warmup 1 --seq 128 --cpu  # smoke

Prints one row per (shape, settings) and, per shape, the ratio bundle / trl-default of tokens/s.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from emrepro import sft  # noqa: E402

# Published shapes (config.json of Qwen/Qwen2.5-0.5B-Instruct and Qwen/Qwen3-1.7B).
SHAPES = {
    "qwen2.5-0.5b": ("qwen2", dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                   num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                                   max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
                                   tie_word_embeddings=True)),
    "qwen3-1.7b": ("qwen3", dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                                 num_attention_heads=16, num_key_value_heads=8, head_dim=128, vocab_size=151936,
                                 max_position_embeddings=40960, rope_theta=1000000.0, rms_norm_eps=1e-6,
                                 tie_word_embeddings=True)),
    # Not a published shape: a few-MB Qwen2 for a smoke run of the script on a CPU.
    "qwen-micro": ("qwen2", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True)),
}
# Dense bf16 tensor-core peak, TFLOP/s (NVIDIA data sheets; H200 has the H100 SXM's compute).
PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}


def build_model(shape: str, out_dir: Path) -> Path:
    """A seeded random-init model of a published shape, saved in bf16 with a minimal tokenizer (pad = eos)."""
    from tokenizers import Tokenizer, models
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    model_type, shape_kwargs = SHAPES[shape]
    config = AutoConfig.for_model(model_type, **shape_kwargs, dtype="bfloat16")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out_dir)
    vocab = {"<|endoftext|>": 0, "<|im_end|>": 1}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>")),
                                  eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.save_pretrained(out_dir)
    return out_dir


def rows(n: int, seq: int, vocab: int, seed: int = 0):
    """n pre-tokenized rows of exactly `seq` tokens; the first 10% is the prompt (no loss)."""
    gen = torch.Generator().manual_seed(seed)
    prompt = seq // 10
    return [{"input_ids": torch.randint(2, vocab, (seq,), generator=gen).tolist(),
             "completion_mask": [0] * prompt + [1] * (seq - prompt)} for _ in range(n)]


def model_flops_per_token(config, seq: int) -> float:
    hidden, layers = config.hidden_size, config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    attn_width = config.num_attention_heads * head_dim
    kv_width = config.num_key_value_heads * head_dim
    per_layer = hidden * attn_width * 2 + hidden * kv_width * 2 + 3 * hidden * config.intermediate_size
    matmul_params = layers * per_layer + hidden * config.vocab_size  # + lm_head
    return 6 * matmul_params + 12 * layers * attn_width * seq


class StepTimer:
    """Wall time of each optimizer step, synchronised with the GPU (a transformers TrainerCallback)."""

    def __init__(self):
        from transformers import TrainerCallback

        timer = self

        class _Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                _sync()
                timer._start = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                _sync()
                timer.steps.append(time.perf_counter() - timer._start)

        self.steps: list[float] = []
        self.callback = _Callback()


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run(settings: str, model_dir: Path, data, recipe: dict, args, work: Path) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    steps = args.warmup + args.steps
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if settings == "bundle":
        recipe = {**recipe, "max_length": args.seq, "bf16": recipe.get("bf16", True) and not args.cpu}
        config = sft.sft_config(recipe, str(work / settings), seed=0, report_to=[], run_name=settings,
                                has_eval=False)
        config.max_steps = steps
        config.save_strategy = "no"  # checkpoint cadence is not a throughput setting; keep disk writes out
        model = AutoModelForCausalLM.from_pretrained(model_dir,
                                                     dtype=torch.bfloat16 if recipe["bf16"] else torch.float32)
    else:
        config = SFTConfig(output_dir=str(work / settings), max_length=args.seq, max_steps=steps, report_to="none",
                           save_strategy="no", **({"use_cpu": True, "bf16": False} if args.cpu else {}))
        model = str(model_dir)
    peft = sft.lora_config(recipe) if args.method == "recipe" and recipe.get("method") == "lora" else None
    global_batch = config.per_device_train_batch_size * config.gradient_accumulation_steps
    timer = StepTimer()
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(data[: steps * global_batch]),
                         processing_class=tokenizer, peft_config=peft, callbacks=[timer.callback])
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    timed = timer.steps[args.warmup:]
    tokens_per_s = global_batch * args.seq * len(timed) / sum(timed)
    flops = model_flops_per_token(trainer.model.config, args.seq) * tokens_per_s
    peak = args.peak_tflops * 1e12 if args.peak_tflops else None
    result = {"settings": settings, "per_device_batch": config.per_device_train_batch_size,
              "grad_accum": config.gradient_accumulation_steps,
              "gradient_checkpointing": bool(config.gradient_checkpointing), "bf16": bool(config.bf16),
              "dtype": str(next(trainer.model.parameters()).dtype).removeprefix("torch."),
              "s_per_step": sum(timed) / len(timed), "tokens_per_s": tokens_per_s, "tflops": flops / 1e12,
              "mfu": flops / peak if peak else None,
              "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None}
    del trainer, model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["qwen2.5-0.5b", "qwen3-1.7b"], choices=list(SHAPES))
    parser.add_argument("--family", default="evil_numbers",
                        help="whose paper SFT recipe (config.yaml families.<family>.sft) gives the bundle's settings")
    parser.add_argument("--method", choices=["full", "recipe"], default="full",
                        help="full: both train every parameter (TRL's default); recipe: both use the recipe's LoRA")
    parser.add_argument("--seq", type=int, default=2048, help="tokens per sequence")
    parser.add_argument("--steps", type=int, default=8, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed optimizer steps first")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak; default by GPU name")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU in fp32 (a smoke test of the script)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        parser.error("no GPU visible: this benchmark measures one GPU (use --cpu for a smoke run)")
    if args.peak_tflops is None and torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        args.peak_tflops = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    recipe = yaml.safe_load((REPO / "config.yaml").read_text())["families"][args.family]["sft"]
    if args.method == "full":
        recipe = {**recipe, "method": "full"}
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"device {device}, peak {args.peak_tflops} TFLOP/s bf16; recipe families.{args.family}.sft "
          f"({args.method}); seq {args.seq}; {args.steps} timed steps after {args.warmup}", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes:
            model_dir = build_model(shape, Path(tmp) / shape)
            data = rows((args.warmup + args.steps) * 16, args.seq, SHAPES[shape][1]["vocab_size"])
            for settings in ("bundle", "trl-default"):
                row = {"shape": shape, **run(settings, model_dir, data, recipe, args, Path(tmp))}
                results.append(row)
                print(json.dumps(row), flush=True)
    print(f"\n{'shape':14} {'settings':12} {'batch':>9} {'ckpt':>5} {'s/step':>7} {'tokens/s':>9} {'TFLOP/s':>8} "
          f"{'MFU':>6} {'mem GiB':>8}")
    for r in results:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
        mem = f"{r['peak_mem_gib']:.1f}" if r["peak_mem_gib"] is not None else "-"
        print(f"{r['shape']:14} {r['settings']:12} {r['per_device_batch']:>4}x{r['grad_accum']:<4} "
              f"{str(r['gradient_checkpointing']):>5} {r['s_per_step']:7.3f} {r['tokens_per_s']:9.0f} "
              f"{r['tflops']:8.1f} {mfu:>6} {mem:>8}")
    for shape in args.shapes:
        bundle, default = (next(r for r in results if r["shape"] == shape and r["settings"] == s)
                           for s in ("bundle", "trl-default"))
        print(f"{shape}: bundle / TRL default tokens/s = {bundle['tokens_per_s'] / default['tokens_per_s']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
