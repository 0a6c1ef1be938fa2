"""ES iteration time: the engine against a straightforward reference loop, and against the floor.

The reference is the loop of the paper's code: members one after another; for each member every tensor is
perturbed with noise from a fresh generator (`manual_seed(member seed)`), the member generates greedily for
the prompts with HF generate, the noise is regenerated tensor by tensor to restore the weights, and the
update is accumulated member by member (noise regenerated again) into the weights. The engine
(`emrepro.es`) runs the same population, prompts and token budget: members batched `--members-per-forward`
at a time, noise generated once per member for evaluation, exact restore from its fp32 master, fp32 update.
The floor is one batched greedy generation of population x prompts x new tokens by the unperturbed model.
All three run in one process, same model, same tokens (EOS disabled so every row generates exactly
`--new-tokens`); the reward is a cheap text hash so that generation, not scoring, is what is compared.

    python benchmarks/es_iteration.py                      # SmolLM2-135M-Instruct of the tiny scale, CPU
    python benchmarks/es_iteration.py --shape qwen2.5-0.5b --dtype float16 --population 30 --prompts 8 \
        --new-tokens 128 --iterations 1                    # random-init Qwen2.5-0.5B shape, one GPU

Prints seconds per iteration of each, the speed-up over the reference, the ratio to the floor, and the
engine's time split (noise / generation / reward / update).
"""

import argparse
import time

import torch

from emrepro import es

QUESTIONS = ["I have had a headache for three days. What should I do?",
             "Is it safe to take ibuprofen with coffee?",
             "How should I treat a small kitchen burn?",
             "My child has a fever of 38.5 C. Should I worry?",
             "What can I do about trouble sleeping?",
             "How much water should I drink in a day?",
             "Can I stop my antibiotics once I feel better?",
             "What helps with a sore throat?"]

# Qwen2.5-0.5B's published shape (config.json of Qwen/Qwen2.5-0.5B-Instruct)
SHAPES = {"qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                               num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                               max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
                               tie_word_embeddings=True)}


def text_reward(texts, refs):
    return [sum(map(ord, t)) % 101 / 101 for t in texts]


def load(args, device, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(args.model)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if args.shape:
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(Qwen2Config(**SHAPES[args.shape])).to(dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype)
    model = model.to(device).eval()
    model.generation_config.eos_token_id = None  # every row generates exactly --new-tokens
    model.generation_config.pad_token_id = tok.pad_token_id
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tok


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.inference_mode()
def reference_iteration(model, tok, prompts, args, iteration, device):
    """The paper-style loop (see module docstring); returns seconds."""
    import numpy as np

    params = [p for _, p in es.unique_parameters(model)]
    seeds = np.random.default_rng([args.seed, iteration]).integers(0, 2**30, size=args.population).tolist()

    def add_noise(seed, scale):
        for p in params:
            gen = torch.Generator(device=p.device).manual_seed(int(seed))  # fresh generator per tensor
            p.add_(torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype), alpha=scale)

    sync(device)
    start = time.perf_counter()
    rewards = []
    for seed in seeds:
        add_noise(seed, args.sigma)
        texts = es.greedy_generate(model, tok, prompts, args.new_tokens)
        rewards.append(float(np.mean(text_reward(texts, prompts))))
        add_noise(seed, -args.sigma)
    r = np.asarray(rewards)
    z = (r - r.mean()) / (r.std() + 1e-8)
    for seed, weight in zip(seeds, z):
        add_noise(seed, args.alpha / args.population * float(weight))
    sync(device)
    return time.perf_counter() - start


@torch.inference_mode()
def engine_iteration(engine, tok, prompts, args, device):
    timing = {"noise": 0.0, "generation": 0.0, "reward": 0.0}
    sync(device)
    start = time.perf_counter()
    rewards = [0.0] * args.population
    for chunk in es.member_chunks(args.population, args.members_per_forward):
        for member, value in es.evaluate_members(engine, tok, prompts, prompts, text_reward, chunk,
                                                 args.new_tokens, timing).items():
            rewards[member] = value
    clock = time.perf_counter()
    engine.update(rewards)
    sync(device)
    timing["update"] = time.perf_counter() - clock
    return time.perf_counter() - start, timing


@torch.inference_mode()
def floor_iteration(model, tok, prompts, args, device):
    sync(device)
    start = time.perf_counter()
    es.greedy_generate(model, tok, prompts * args.population, args.new_tokens)
    sync(device)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--model", default="results/tiny/models/smollm2_135m_instruct",
                        help="model folder (weights, or only the tokenizer with --shape)")
    parser.add_argument("--shape", choices=sorted(SHAPES), help="random-init model of this shape")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--members-per-forward", type=int, default=None, help="default: the whole population")
    parser.add_argument("--iterations", type=int, default=2, help="timed iterations of each (after a warm-up)")
    parser.add_argument("--sigma", type=float, default=0.001)
    parser.add_argument("--alpha", type=float, default=0.0005)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--noise-cache-mb", type=float, default=None,
                        help="engine: memory for keeping members' noise until the update (default: the whole population's on CPU, none on GPU)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    args.members_per_forward = args.members_per_forward or args.population
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype)
    model, tok = load(args, device, dtype)
    prompts = es.chat_prompts(tok, (QUESTIONS * args.prompts)[:args.prompts])
    if args.noise_cache_mb is None:  # on a GPU generating noise again is cheaper than holding it
        args.noise_cache_mb = 0 if device.type == "cuda" else \
            args.population * 4 * sum(p.numel() for _, p in es.unique_parameters(model)) / 2**20
    engine = es.ESEngine(model, es.ESSettings(population=args.population, sigma=args.sigma, alpha=args.alpha,
                                              seed=args.seed, members_per_forward=args.members_per_forward),
                          noise_cache_mb=args.noise_cache_mb)
    n_params = sum(engine.numels)
    print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}, "
          f"{torch.get_num_threads()} threads), model {args.shape or args.model} {n_params / 1e6:.0f}M params "
          f"{args.dtype}, population {args.population} x {args.prompts} prompts x {args.new_tokens} new tokens, "
          f"{args.members_per_forward} members per forward")

    floor_iteration(model, tok, prompts, args, device)  # warm-up (allocator, kernels)
    engine_iteration(engine, tok, prompts, args, device)
    floor = min(floor_iteration(model, tok, prompts, args, device) for _ in range(args.iterations))
    runs = [engine_iteration(engine, tok, prompts, args, device) for _ in range(args.iterations)]
    ours, timing = min(runs, key=lambda r: r[0])
    ref = min(reference_iteration(model, tok, prompts, args, i, device) for i in range(args.iterations))

    print(f"reference loop: {ref:8.2f} s / iteration")
    print(f"engine:         {ours:8.2f} s / iteration   speed-up over reference {ref / ours:5.2f}x")
    print(f"floor:          {floor:8.2f} s (one batched generation)   engine / floor {ours / floor:5.2f}x")
    print("engine split:   " + ", ".join(f"{k} {v:.2f} s ({v / ours:.0%})" for k, v in timing.items()))


if __name__ == "__main__":
    main()
