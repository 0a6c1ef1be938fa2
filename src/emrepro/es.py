"""Evolution strategies for full-parameter fine-tuning (Qiu et al. 2025, arXiv 2509.24372, Algorithm 2).

One iteration: for each member n of a population of N, perturb every weight by sigma * eps_n, evaluate the
reward R_n (greedy generations on a batch of prompts, scored against references), restore the weights; then
standardise the rewards, z_n = (R_n - mean) / (std + 1e-8), and move theta += alpha * (1/N) * sum_n z_n eps_n
(1/sigma is folded into alpha, as in the paper).

What this engine guarantees:
- Noise is never stored: the noise of member n for tensor k is a pure function of (seed, iteration, n, k)
  (`tensor_seed`), generated again when needed. By default every tensor gets its own seed; the reference
  code's same-seed-for-every-tensor noise (correlated across tensors) is an option (`correlated_noise`).
- Weights live in an fp32 master copy (one flat vector over all unique tensors); the model's weights are
  always the master cast to the model dtype, so a restore is exact (bit-identical) and an update far below
  half a half-precision ulp still accumulates (the reference code adds it to fp16 weights, where it is lost).
- Members are evaluated across processes with torch.distributed (gloo on CPU, NCCL on GPU): each rank takes
  fixed chunks of members, rewards are combined with one all-reduce, and every rank applies the same update
  (noise regenerated in member order), so the weights do not depend on the number of processes.
- Several members can share one forward pass (`members_per_forward`): their perturbed weights are stacked
  along a member axis and every Linear / Embedding / RMSNorm runs them batched (bmm), which turns the
  reference's N small generate calls into one larger one.
- Resumable: a log line per iteration (rewards included) and, at every epoch end, an fp32 master state and a
  model checkpoint; a restarted run loads the last state and replays the logged updates after it (no
  generation needed), so it ends with the same weights as an uninterrupted run.
Options off by default to match the paper: mirrored (antithetic) sampling, centred-rank reward shaping.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import types
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data import write_jsonl
from .provenance import atomic_output, write_json_atomic


@dataclass(frozen=True)
class ESSettings:
    population: int
    sigma: float
    alpha: float
    seed: int = 42
    mirrored: bool = False
    centered_rank: bool = False
    correlated_noise: bool = False
    members_per_forward: int = 1

    def __post_init__(self):
        if self.population < 2:
            raise ValueError(f"es.population must be at least 2, got {self.population}")
        if self.mirrored and self.population % 2:
            raise ValueError(f"es.mirrored needs an even es.population, got {self.population}")
        if self.members_per_forward < 1:
            raise ValueError(f"es.members_per_forward must be at least 1, got {self.members_per_forward}")


def member_seed(seed: int, iteration: int, member: int) -> int:
    """Seed of a member's noise; mirrored pairs (2j, 2j+1) share the seed of j (see `ESEngine.sign`)."""
    return int(np.random.SeedSequence([seed, iteration, member]).generate_state(1, np.uint64)[0] >> 1)


def tensor_seed(base: int, tensor: int, correlated: bool) -> int:
    """Generator seed of one tensor's noise: its own (default) or the member's seed for every tensor (paper)."""
    if correlated:
        return base
    return int(np.random.SeedSequence([base, tensor]).generate_state(1, np.uint64)[0] >> 1)


def unique_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """Every parameter once (tied embeddings count once), in the model's own order."""
    seen, out = set(), []
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) not in seen:
            seen.add(id(param))
            out.append((name, param))
    return out


class ESEngine:
    """Perturb, restore and update over a flat fp32 master copy of a model's parameters."""

    def __init__(self, model: torch.nn.Module, settings: ESSettings, noise_cache_mb: float = 0):
        self.model, self.settings = model, settings
        named = unique_parameters(model)
        self.names = [name for name, _ in named]
        self.params = [param for _, param in named]
        for param in self.params:
            param.requires_grad_(False)
        self.numels = [p.numel() for p in self.params]
        self.offsets = np.concatenate([[0], np.cumsum(self.numels)]).tolist()
        self.device = self.params[0].device
        self.master = torch.cat([p.detach().reshape(-1).to(torch.float32) for p in self.params])
        # Buffers live across iterations: fresh multi-GB allocations cost more in page faults than the maths.
        self._eps = torch.empty_like(self.master)
        self._step = torch.empty_like(self.master)
        self._stacks: dict[int, list[torch.Tensor]] = {}
        # Noise of evaluated members kept for the update (instead of generating it again), within a budget.
        self._cache_slots = int(noise_cache_mb * 2**20 // (4 * self.master.numel()))
        self._cache_buffers: list[torch.Tensor] = []
        self._cached: dict[int, torch.Tensor] = {}
        self.iteration = 0

    # -- noise ---------------------------------------------------------------------------------------
    def sign(self, member: int) -> float:
        return -1.0 if self.settings.mirrored and member % 2 else 1.0

    def _member_base_seed(self, member: int) -> int:
        index = member // 2 if self.settings.mirrored else member
        return member_seed(self.settings.seed, self.iteration, index)

    def tensor_noise(self, member: int, k: int, out: torch.Tensor | None = None, base: int | None = None
                     ) -> torch.Tensor:
        """eps of `member` for tensor k at the current iteration (fp32, flat), sign included.
        `base` is the member's seed when the caller has it already."""
        base = self._member_base_seed(member) if base is None else base
        gen = torch.Generator(device=self.device).manual_seed(tensor_seed(base, k, self.settings.correlated_noise))
        if out is None:
            out = torch.empty(self.numels[k], dtype=torch.float32, device=self.device)
        torch.randn(self.numels[k], generator=gen, out=out, dtype=torch.float32, device=self.device)
        if self.sign(member) < 0:
            out.neg_()
        return out

    def noise(self, member: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """The member's noise over all tensors as one flat fp32 vector (into `out`, default a reused buffer)."""
        out = self._eps if out is None else out
        base = self._member_base_seed(member)
        for k in range(len(self.params)):
            self.tensor_noise(member, k, out=out[self.offsets[k]:self.offsets[k + 1]], base=base)
        return out

    def _evaluation_noise(self, member: int) -> torch.Tensor:
        """Noise for evaluating a member, kept for the update while cache slots last."""
        if member in self._cached:
            return self._cached[member]
        if len(self._cached) < self._cache_slots:
            if len(self._cache_buffers) <= len(self._cached):
                self._cache_buffers.append(torch.empty_like(self.master))
            self._cached[member] = self.noise(member, out=self._cache_buffers[len(self._cached)])
            return self._cached[member]
        return self.noise(member)

    # -- the four steps ------------------------------------------------------------------------------
    def _segment(self, flat: torch.Tensor, k: int) -> torch.Tensor:
        return flat[self.offsets[k]:self.offsets[k + 1]].view(self.params[k].shape)

    def _write(self, flat: torch.Tensor) -> None:
        with torch.no_grad():
            for k, param in enumerate(self.params):
                param.copy_(self._segment(flat, k))  # cast to the model dtype

    def perturb(self, member: int) -> None:
        """Model weights := master + sigma * eps_member (computed in fp32, stored in the model dtype)."""
        eps = self._evaluation_noise(member)
        with torch.no_grad():
            for k, param in enumerate(self.params):
                torch.add(self._segment(self.master, k), self._segment(eps, k), alpha=self.settings.sigma,
                          out=param.data)

    def restore(self) -> None:
        """Model weights := master (cast): bit-identical to the weights before `perturb`."""
        self._write(self.master)

    def perturbed_stack(self, members: list[int]) -> list[torch.Tensor]:
        """Per tensor, the perturbed weights of several members stacked on a leading axis (model dtype)."""
        if len(members) not in self._stacks:
            self._stacks[len(members)] = [torch.empty((len(members), *p.shape), dtype=p.dtype, device=self.device)
                                          for p in self.params]
        stacks = self._stacks[len(members)]
        with torch.no_grad():
            for i, member in enumerate(members):
                eps = self._evaluation_noise(member)
                for k, stack in enumerate(stacks):
                    torch.add(self._segment(self.master, k), self._segment(eps, k), alpha=self.settings.sigma,
                              out=stack[i])
        return stacks

    def shaped(self, rewards) -> torch.Tensor:
        """Rewards -> weights of the update: z-scores (paper) or centred ranks in [-0.5, 0.5]."""
        r = torch.as_tensor(np.asarray(rewards, dtype=np.float64))
        if self.settings.centered_rank:
            ranks = torch.empty_like(r)
            ranks[torch.argsort(r, stable=True)] = torch.arange(len(r), dtype=r.dtype)
            return ranks / (len(r) - 1) - 0.5
        return (r - r.mean()) / (r.std(unbiased=False) + 1e-8)

    def update(self, rewards) -> float:
        """theta += alpha / N * sum_n w_n eps_n, accumulated in fp32 in member order; returns the step's norm.

        The noise is the same whether it was kept from evaluation or generated again, so the result does not
        depend on which members this process evaluated."""
        weights = self.shaped(rewards).to(torch.float32).tolist()
        step = self._step.zero_()
        for member, w in enumerate(weights):
            if w != 0.0:
                step.add_(self._cached[member] if member in self._cached else self.noise(member), alpha=w)
        step.mul_(self.settings.alpha / len(weights))
        self.master.add_(step)
        self._write(self.master)
        self._cached.clear()
        self.iteration += 1
        return float(step.norm())

    def load_master(self, master: torch.Tensor, iteration: int) -> None:
        self.master.copy_(master.to(self.master.device, torch.float32))
        self.iteration = iteration
        self._cached.clear()
        self._write(self.master)


# -- several members in one forward pass ---------------------------------------------------------------

def _is_rms_norm(module) -> bool:
    return type(module).__name__.endswith("RMSNorm") and (
        hasattr(module, "variance_epsilon") or hasattr(module, "eps"))


def _batched_forward(module, members: int, weight: torch.Tensor, bias: torch.Tensor | None):
    """A forward for `module` whose input rows are member-major and use the member's own stacked weights."""
    if isinstance(module, torch.nn.Linear):
        def forward(x):
            flat = x.reshape(members, -1, x.shape[-1])
            out = torch.bmm(flat, weight.transpose(1, 2))
            if bias is not None:
                out = out + bias[:, None, :]
            return out.reshape(*x.shape[:-1], out.shape[-1])
    elif isinstance(module, torch.nn.Embedding):
        vocab = weight.shape[1]

        def forward(ids):
            shift = torch.arange(members, device=ids.device).repeat_interleave(ids.shape[0] // members) * vocab
            return F.embedding(ids + shift.view(-1, *([1] * (ids.dim() - 1))), weight.reshape(-1, weight.shape[-1]))
    elif _is_rms_norm(module):
        eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))

        def forward(h):  # the arithmetic of Llama/Qwen2 RMSNorm, with a weight per member
            x = h.to(torch.float32)
            x = (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)).to(h.dtype)
            return (weight[:, None, :] * x.reshape(members, -1, x.shape[-1])).reshape(h.shape)
    else:
        raise ValueError(f"batched ES evaluation does not support {type(module).__name__} modules with "
                         f"parameters: set es.members_per_forward: 1")
    return forward


@contextlib.contextmanager
def population_forward(engine: ESEngine, stacks: list[torch.Tensor]):
    """Within the block, a batch of members x rows runs each member's weights (see `perturbed_stack`)."""
    members = stacks[0].shape[0]
    by_param = {id(p): stack for p, stack in zip(engine.params, stacks)}
    patched = []
    try:
        for module in engine.model.modules():
            own = dict(module.named_parameters(recurse=False))
            if not own:
                continue
            weight = by_param[id(own["weight"])] if "weight" in own else None
            bias = by_param[id(own["bias"])] if own.get("bias") is not None else None
            if weight is None or set(own) - {"weight", "bias"}:
                raise ValueError(f"batched ES evaluation: unsupported parameters {sorted(own)} in "
                                 f"{type(module).__name__}: set es.members_per_forward: 1")
            if _is_rms_norm(module):
                _check_norm(module, members)
            module.forward = types.MethodType(lambda self, *a, _f=_batched_forward(module, members, weight, bias),
                                              **kw: _f(*a, **kw), module)
            patched.append(module)
        yield
    finally:
        for module in patched:
            del module.forward


def _check_norm(module, members: int) -> None:
    """Refuse a norm whose arithmetic is not weight * normalised(x) (e.g. Gemma's (1 + weight))."""
    x = torch.randn(members, 3, module.weight.shape[-1], dtype=module.weight.dtype, device=module.weight.device)
    stacked = module.weight.detach().expand(members, -1)
    ours = _batched_forward(module, members, stacked, None)(x)
    if not torch.allclose(ours.float(), module(x).float(), rtol=1e-3, atol=1e-3):
        raise ValueError(f"batched ES evaluation: {type(module).__name__} does not compute weight * rmsnorm(x): "
                         f"set es.members_per_forward: 1")


# -- generation and rewards ------------------------------------------------------------------------------

def chat_prompts(tokenizer, questions: list[str]) -> list[str]:
    return [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                          add_generation_prompt=True) for q in questions]


@torch.inference_mode()
def greedy_generate(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Greedy continuations of already-templated prompts, in order (rows may hold several members)."""
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    # plain greedy: a model's generation_config may carry sampling defaults and a repetition penalty
    # (Qwen2.5-Instruct: 1.05); the seed decoded at temperature 0 without one
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None,
                         top_k=None, repetition_penalty=1.0, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def member_chunks(population: int, per_forward: int) -> list[list[int]]:
    """Members in fixed chunks (the same on any number of processes, so results do not depend on it)."""
    return [list(range(s, min(s + per_forward, population))) for s in range(0, population, per_forward)]


def evaluate_members(engine: ESEngine, tokenizer, prompts: list[str], references: list[str], reward_fn,
                     members: list[int], max_new_tokens: int, timing: dict) -> dict[int, float]:
    """Mean reward of each member over the prompts; adds seconds to timing[noise|generation|reward]."""
    clock = time.perf_counter()
    if len(members) == 1:
        engine.perturb(members[0])
        timing["noise"] += time.perf_counter() - clock
        clock = time.perf_counter()
        try:
            texts = greedy_generate(engine.model, tokenizer, prompts, max_new_tokens)
        finally:
            timing["generation"] += time.perf_counter() - clock
            clock = time.perf_counter()
            engine.restore()
            timing["noise"] += time.perf_counter() - clock
    else:
        stacks = engine.perturbed_stack(members)
        timing["noise"] += time.perf_counter() - clock
        clock = time.perf_counter()
        with population_forward(engine, stacks):
            texts = greedy_generate(engine.model, tokenizer, [p for _ in members for p in prompts], max_new_tokens)
        timing["generation"] += time.perf_counter() - clock
    clock = time.perf_counter()
    scores = reward_fn(texts, references * len(members))
    timing["reward"] += time.perf_counter() - clock
    per = len(prompts)
    return {m: float(np.mean(scores[i * per:(i + 1) * per])) for i, m in enumerate(members)}


# -- training ------------------------------------------------------------------------------------------

def epoch_order(n_rows: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n_rows)


def iteration_rows(n_rows: int, batch_size: int, seed: int, iteration: int) -> tuple[int, np.ndarray]:
    """(1-based epoch, row indices) of a 0-based global iteration: a seeded shuffle per epoch, batches in turn."""
    per_epoch = math.ceil(n_rows / batch_size)
    epoch, index = divmod(iteration, per_epoch)
    order = epoch_order(n_rows, seed, epoch)
    return epoch + 1, order[index * batch_size:(index + 1) * batch_size]


def read_log(path: Path) -> list[dict]:
    """Complete lines of the iteration log (a line cut by a kill is dropped, and so is the file's tail)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def _save_state(work: Path, engine: ESEngine) -> None:
    from safetensors.torch import save_file

    with atomic_output(work / "state.safetensors") as tmp:
        save_file({"master": engine.master.cpu()}, tmp, metadata={"iteration": str(engine.iteration)})


def _load_state(work: Path) -> tuple[torch.Tensor, int] | None:
    from safetensors import safe_open

    path = work / "state.safetensors"
    if not path.exists():
        return None
    with safe_open(str(path), "pt") as f:
        return f.get_tensor("master"), int(f.metadata()["iteration"])


def _save_checkpoint(engine: ESEngine, tokenizer, folder: Path, log_rows: list[dict], run_json: dict) -> None:
    with atomic_output(folder) as tmp:
        engine.model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_jsonl(Path(tmp) / "training_log.jsonl", log_rows)
        write_json_atomic(Path(tmp) / "run.json", run_json)


@dataclass
class ESRun:
    """Everything a worker process needs (plain data, so it pickles to spawned processes)."""
    model_dir: str
    rows: list[dict]              # {"prompt": str, "reference": str}
    work_dir: str
    settings: ESSettings
    epochs: int
    batch_size: int
    max_new_tokens: int
    dtype: str = "float32"
    reward_spec: dict | None = None
    reward_factory: object = None  # callable(spec) -> reward_fn; default rewards.build_reward
    workers: int = 1
    threads: int = 1
    noise_cache_mb: float = 0      # per process: keep evaluated members' noise for the update
    wandb: dict | None = None
    stop_after: int | None = None  # tests: stop (as if killed) once this many iterations are logged


def _device_for(rank: int) -> torch.device:
    return torch.device(f"cuda:{rank % torch.cuda.device_count()}") if torch.cuda.is_available() else \
        torch.device("cpu")


def _load(run: ESRun, device):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run.model_dir)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = getattr(torch, run.dtype)
    if device.type == "cpu" and dtype == torch.float16:
        raise ValueError("es.dtype float16 needs a GPU; use float32 or bfloat16 on CPU")
    model = AutoModelForCausalLM.from_pretrained(run.model_dir, dtype=dtype).to(device).eval()
    return model, tokenizer


def _wandb_run(run: ESRun):
    if not run.wandb or run.wandb.get("mode") == "disabled":
        return None
    import wandb

    return wandb.init(project=run.wandb["project"], mode=run.wandb["mode"], dir=run.work_dir,
                      name=run.wandb.get("name", "es"), config={"es": asdict(run.settings), "epochs": run.epochs,
                                                                 "batch_size": run.batch_size})


def train_worker(rank: int, run: ESRun) -> None:
    """One process of an ES run (rank 0 of 1 when not distributed); rank 0 writes logs and checkpoints."""
    import torch.distributed as dist

    from tqdm import tqdm

    torch.set_num_threads(max(1, run.threads))
    distributed = run.workers > 1
    device = _device_for(rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # "cuda" (e.g. the reward model's default) means this rank's GPU
    if distributed:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=run.workers)
    try:
        model, tokenizer = _load(run, device)
        engine = ESEngine(model, run.settings, run.noise_cache_mb)
        factory = run.reward_factory
        if factory is None:
            from .rewards import build_reward as factory
        reward_fn = factory(run.reward_spec)

        work = Path(run.work_dir)
        log_path = work / "training_log.jsonl"
        log_rows = read_log(log_path)
        state = _load_state(work)
        if state is not None:
            engine.load_master(*state)
        per_epoch = math.ceil(len(run.rows) / run.batch_size)
        total = per_epoch * run.epochs
        leader = rank == 0
        if distributed:
            dist.barrier()  # every rank has read the log before the leader may rewrite it

        def finish_iteration(row: dict) -> None:
            """After the update of iteration `engine.iteration`: epoch-end checkpoint and state (rank 0)."""
            if leader and engine.iteration % per_epoch == 0:
                epoch = engine.iteration // per_epoch
                info = dict(es_epoch=epoch, es_iteration=engine.iteration,
                            final_metrics={k: row[k] for k in ("reward_mean", "reward_std", "reward_max")})
                _save_checkpoint(engine, tokenizer, work / f"epoch_{epoch}", log_rows[:engine.iteration], info)
                _save_state(work, engine)

        # replay logged iterations after the saved state: the same updates, without generating
        for row in log_rows[engine.iteration:total]:
            engine.update(row["rewards"])
            if not (work / f"epoch_{engine.iteration // per_epoch}").exists():  # killed before its checkpoint
                finish_iteration(row)
        log_rows = log_rows[:engine.iteration]
        if leader:
            write_jsonl(log_path, log_rows)  # drops a cut line and anything beyond `total`

        tracker = _wandb_run(run) if leader else None
        prompts = chat_prompts(tokenizer, [r["prompt"] for r in run.rows])
        chunks = member_chunks(run.settings.population, run.settings.members_per_forward)
        mine = [c for i, c in enumerate(chunks) if i % run.workers == rank]
        bar = tqdm(total=total, initial=engine.iteration, desc="ES iterations", disable=not leader)
        while engine.iteration < total:
            if run.stop_after is not None and engine.iteration >= run.stop_after:
                return
            started = time.perf_counter()
            epoch, batch = iteration_rows(len(run.rows), run.batch_size, run.settings.seed, engine.iteration)
            batch_prompts = [prompts[i] for i in batch]
            references = [run.rows[i]["reference"] for i in batch]
            timing = {"noise": 0.0, "generation": 0.0, "reward": 0.0}
            rewards = torch.zeros(run.settings.population, dtype=torch.float64, device=device)
            for chunk in mine:
                for member, value in evaluate_members(engine, tokenizer, batch_prompts, references, reward_fn, chunk,
                                                      run.max_new_tokens, timing).items():
                    rewards[member] = value
            if distributed:
                dist.all_reduce(rewards)  # each entry has one non-zero contributor: the sum is exact
            rewards = rewards.cpu().tolist()
            clock = time.perf_counter()
            update_norm = engine.update(rewards)
            timing["update"] = time.perf_counter() - clock
            row = {"iteration": engine.iteration, "step": engine.iteration, "epoch": epoch,
                   "reward_mean": float(np.mean(rewards)), "reward_std": float(np.std(rewards)),
                   "reward_max": float(np.max(rewards)), "reward_min": float(np.min(rewards)),
                   "update_norm": update_norm, **{f"time_{k}_s": v for k, v in timing.items()},
                   "time_total_s": time.perf_counter() - started, "rewards": rewards}
            if leader:
                log_rows.append(row)
                with open(log_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
                if tracker is not None:
                    tracker.log({k: v for k, v in row.items() if k != "rewards"}, step=engine.iteration)
                finish_iteration(row)
                bar.update(1)
                bar.set_postfix(epoch=epoch, reward=f"{row['reward_mean']:.3f}")
            if distributed:
                dist.barrier()
        bar.close()
        if tracker is not None:
            tracker.finish()
    finally:
        if distributed:
            dist.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_key(run: ESRun) -> dict:
    """What decides the trajectory: a work folder is resumed only by a run with the same key."""
    import hashlib

    rows = hashlib.sha256(json.dumps(run.rows, sort_keys=True).encode()).hexdigest()
    return {"settings": asdict(run.settings), "batch_size": run.batch_size, "max_new_tokens": run.max_new_tokens,
            "dtype": run.dtype, "model_dir": str(Path(run.model_dir).resolve()), "rows_sha256": rows,
            "reward_spec": run.reward_spec}


def _claim_work_dir(run: ESRun) -> None:
    """Resume only a run with the same key; a stale work folder is moved aside (kept), not resumed."""
    work = Path(run.work_dir)
    key_file = work / "run_key.json"
    key = json.loads(json.dumps(run_key(run)))
    if work.exists() and any(work.iterdir()):
        old = json.loads(key_file.read_text()) if key_file.exists() else None
        if old == key:
            return
        aside = work.with_name(f"{work.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
        changed = sorted(k for k in key if old is None or old.get(k) != key.get(k))
        print(f"ES: {work} holds a run with other settings ({', '.join(changed)}); moved to {aside}", flush=True)
        os.replace(work, aside)
    work.mkdir(parents=True, exist_ok=True)
    write_json_atomic(key_file, key)


def train(run: ESRun) -> list[Path]:
    """Run (or resume) ES; returns the epoch checkpoint folders, in order. Several workers are spawned."""
    _claim_work_dir(run)
    if run.workers > 1:
        import torch.multiprocessing as mp

        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ["MASTER_PORT"] = str(_free_port())
        mp.start_processes(train_worker, args=(run,), nprocs=run.workers, start_method="spawn")
    else:
        train_worker(0, run)
    return [Path(run.work_dir) / f"epoch_{e}" for e in range(1, run.epochs + 1)]
