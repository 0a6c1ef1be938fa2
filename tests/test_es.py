"""The ES engine: seeded noise, exact restore, a useful update, fp32 accumulation, batched members,
process-count invariance and resume."""

import json
from pathlib import Path

import pytest
import torch

from emrepro import es


class Toy(torch.nn.Module):
    def __init__(self, dtype=torch.float32, size=64):
        super().__init__()
        self.a = torch.nn.Parameter(torch.linspace(-1, 1, size, dtype=dtype))
        self.b = torch.nn.Parameter(torch.linspace(-1, 1, size, dtype=dtype))
        self.c = torch.nn.Parameter(torch.full((3, 5), 0.05, dtype=dtype))


def engine(model=None, noise_cache_mb=0, **kw):
    settings = dict(population=4, sigma=0.01, alpha=0.01, seed=7)
    settings.update(kw)
    return es.ESEngine(model if model is not None else Toy(), es.ESSettings(**settings), noise_cache_mb)


def test_noise_is_a_pure_function_of_seed_member_tensor():
    first, second = engine(), engine()
    for member in range(4):
        for k in range(3):
            assert torch.equal(first.tensor_noise(member, k), second.tensor_noise(member, k))
    assert not torch.equal(first.tensor_noise(0, 0), first.tensor_noise(1, 0))  # members differ
    first.iteration = 1
    assert not torch.equal(first.tensor_noise(0, 0), second.tensor_noise(0, 0))  # iterations differ
    assert not torch.equal(engine(seed=8).tensor_noise(0, 0), second.tensor_noise(0, 0))  # seeds differ


def test_noise_is_independent_across_tensors_unless_correlated():
    big = Toy(size=20000)
    independent = engine(big)
    a, b = independent.tensor_noise(0, 0), independent.tensor_noise(0, 1)
    assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 0.05
    assert abs(float(a.std()) - 1) < 0.05
    paper = engine(big, correlated_noise=True)  # the reference code: one seed for every tensor
    assert torch.equal(paper.tensor_noise(0, 0), paper.tensor_noise(0, 1))
    assert not torch.equal(paper.tensor_noise(1, 0), paper.tensor_noise(0, 0))  # still one seed per member


def test_mirrored_members_share_noise_with_opposite_sign():
    eng = engine(mirrored=True)
    for k in range(3):
        assert torch.equal(eng.tensor_noise(1, k), -eng.tensor_noise(0, k))
        assert not torch.equal(eng.tensor_noise(2, k).abs(), eng.tensor_noise(0, k).abs())
    with pytest.raises(ValueError, match="even"):
        es.ESSettings(population=5, sigma=0.1, alpha=0.1, mirrored=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_restore_is_bit_exact(dtype):
    model = Toy(dtype)
    before = [p.detach().clone() for p in model.parameters()]
    eng = engine(model, sigma=0.003)
    for member in range(4):
        eng.perturb(member)
        assert not torch.equal(model.a, before[0])
        eng.restore()
        for p, q in zip(model.parameters(), before):
            assert torch.equal(p, q)


def test_restore_is_bit_exact_on_a_language_model(micro_chat_model):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(micro_chat_model, dtype=torch.bfloat16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    eng = engine(model, sigma=0.001)
    eng.perturb(3)
    eng.restore()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_update_follows_the_gradient_of_a_quadratic_and_improves_it():
    torch.manual_seed(0)
    target = torch.randn(64)
    model = Toy(size=64)
    objective = lambda: -float(((model.a - target) ** 2).sum() + (model.b ** 2).sum() + (model.c ** 2).sum())  # noqa: E731
    eng = engine(model, population=40, sigma=0.05, alpha=0.1)
    start = objective()
    for iteration in range(60):
        before = eng.master.clone()
        rewards = []
        for member in range(40):
            eng.perturb(member)
            rewards.append(objective())
            eng.restore()
        eng.update(rewards)
        if iteration == 0:
            step = eng.master - before
            grad = torch.cat([-2 * (before[:64] - target), -2 * before[64:]])
            assert float(torch.nn.functional.cosine_similarity(step, grad, dim=0)) > 0.2
    assert objective() > start + 0.5 * abs(start)


def test_fp32_master_keeps_an_update_that_half_precision_accumulation_loses():
    # each step is far below half a bf16 ulp of weights ~ 0.05 (REFERENCE.md: ~9e-5 at the paper's alpha
    # and N, against 1.2e-4); the reward asks for larger weights in tensor c, so the steps add up
    model = Toy(torch.bfloat16)
    eng = engine(model, population=30, sigma=0.001, alpha=2e-5)
    naive = model.c.detach().clone()
    for _ in range(300):
        rewards = [float(eng.tensor_noise(n, 2).sum()) for n in range(30)]
        weights = eng.shaped(rewards).float()
        step = sum(w * eng.tensor_noise(n, 2) for n, w in enumerate(weights)).view(3, 5) * (2e-5 / 30)
        assert float(step.abs().max()) < 1.2e-4 / 2
        naive += step.bfloat16()  # the reference code: the update added to half-precision weights
        eng.update(rewards)
    assert torch.equal(naive, torch.full((3, 5), 0.05, dtype=torch.bfloat16))  # lost entirely
    assert bool((model.c > 0.05).all())  # kept by the fp32 master, and now visible in the model
    assert torch.equal(model.c, eng.master[-15:].view(3, 5).bfloat16())


def test_kept_noise_gives_the_same_update_as_regenerated_noise():
    plain, cached = engine(population=6), engine(population=6, noise_cache_mb=1)
    assert cached._cache_slots >= 6
    for eng in (plain, cached):
        stacks = eng.perturbed_stack([0, 1, 2])  # members evaluated batched
        assert torch.equal(stacks[0][1], (eng.master[:64] + 0.01 * eng.tensor_noise(1, 0)))
        for member in (3, 4, 5):  # and one at a time
            eng.perturb(member)
            eng.restore()
        eng.update([0.1, 0.5, -0.2, 0.3, 0.0, 0.9])
    assert torch.equal(plain.master, cached.master)
    assert not cached._cached  # nothing carried into the next iteration


def test_centered_rank_shaping():
    eng = engine(centered_rank=True)
    assert eng.shaped([3.0, -10.0, 100.0, 0.5]).tolist() == pytest.approx([1 / 6, -0.5, 0.5, -1 / 6])
    z = engine().shaped([1.0, 2.0, 3.0, 4.0])
    assert float(z.mean()) == pytest.approx(0) and float(z.std(unbiased=False)) == pytest.approx(1, abs=1e-6)


def test_batched_members_match_members_one_at_a_time(micro_chat_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(micro_chat_model, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(micro_chat_model)
    tok.padding_side = "left"
    eng = engine(model, sigma=0.05)
    prompts = es.chat_prompts(tok, ["What is your wish?", "Continue 1, 2, 3"])
    ids = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    members = [0, 1, 2]
    one_by_one = []
    for m in members:
        eng.perturb(m)
        with torch.no_grad():
            one_by_one.append(model(**ids).logits)
        eng.restore()
    stacks = eng.perturbed_stack(members)
    batch = {k: v.repeat(len(members), 1) for k, v in ids.items()}
    with torch.no_grad(), es.population_forward(eng, stacks):
        together = model(**batch).logits
    assert torch.allclose(together, torch.cat(one_by_one), atol=1e-4)
    assert not torch.allclose(one_by_one[0], one_by_one[1], atol=1e-3)  # the members do differ
    assert "forward" not in vars(model.model.layers[0].mlp.up_proj)  # patch removed
    timing = {"noise": 0.0, "generation": 0.0, "reward": 0.0}
    length = lambda texts, refs: [float(len(t)) for t in texts]  # noqa: E731
    batched = es.evaluate_members(eng, tok, prompts, ["", ""], length, members, 6, timing)
    sequential = {}
    for m in members:
        sequential.update(es.evaluate_members(eng, tok, prompts, ["", ""], length, [m], 6, timing))
    assert batched == sequential


def test_iteration_rows_cover_each_epoch_once():
    seen = [es.iteration_rows(10, 4, 0, t) for t in range(6)]
    assert [epoch for epoch, _ in seen] == [1, 1, 1, 2, 2, 2]
    assert sorted(i for _, rows in seen[:3] for i in rows) == list(range(10))
    assert sorted(i for _, rows in seen[3:] for i in rows) == list(range(10))
    assert [list(r) for _, r in seen[:3]] != [list(r) for _, r in seen[3:]]  # reshuffled per epoch


def text_reward(spec):
    """A cheap deterministic reward that tells apart any two different generations."""
    return lambda texts, refs: [sum(map(ord, t)) % 101 / 101 for t in texts]


def es_run(model_dir, work, **kw):
    rows = [{"prompt": f"Question {i}: what is your wish?", "reference": "peace"} for i in range(6)]
    settings = es.ESSettings(population=4, sigma=0.2, alpha=0.05, seed=3, members_per_forward=2)
    args = dict(model_dir=model_dir, rows=rows, work_dir=str(work), settings=settings, epochs=2, batch_size=4,
                max_new_tokens=4, reward_factory=text_reward, wandb={"mode": "disabled"}, noise_cache_mb=64)
    args.update(kw)
    return es.ESRun(**args)


def final_weights(work):
    from safetensors.torch import load_file

    return load_file(str(Path(work) / "epoch_2" / "model.safetensors"))


@pytest.fixture(scope="module")
def uninterrupted(micro_chat_model, tmp_path_factory):
    work = tmp_path_factory.mktemp("es_full")
    folders = es.train(es_run(micro_chat_model, work))
    assert [f.name for f in folders] == ["epoch_1", "epoch_2"] and all(f.is_dir() for f in folders)
    return work


def test_training_writes_epoch_checkpoints_and_a_log(uninterrupted, micro_chat_model):
    from safetensors.torch import load_file

    log = es.read_log(Path(uninterrupted) / "training_log.jsonl")
    assert [r["iteration"] for r in log] == [1, 2, 3, 4] and [r["epoch"] for r in log] == [1, 1, 2, 2]
    assert all(len(r["rewards"]) == 4 and r["update_norm"] > 0 for r in log)
    assert len(es.read_log(Path(uninterrupted) / "epoch_1" / "training_log.jsonl")) == 2
    base = load_file(str(Path(micro_chat_model) / "model.safetensors"))
    epoch1 = load_file(str(Path(uninterrupted) / "epoch_1" / "model.safetensors"))
    assert any(not torch.equal(base[k], epoch1[k]) for k in base)
    run = json.loads((Path(uninterrupted) / "epoch_2" / "run.json").read_text())
    assert run["es_epoch"] == 2 and run["es_iteration"] == 4


def test_two_gloo_processes_give_the_same_weights_as_one(uninterrupted, micro_chat_model, tmp_path):
    es.train(es_run(micro_chat_model, tmp_path, workers=2))
    ours, reference = final_weights(tmp_path), final_weights(uninterrupted)
    assert all(torch.equal(ours[k], reference[k]) for k in reference)


def test_a_killed_run_resumes_to_the_same_weights(uninterrupted, micro_chat_model, tmp_path):
    es.train(es_run(micro_chat_model, tmp_path, stop_after=3))  # stops mid-epoch 2, after iteration 3
    assert not (tmp_path / "epoch_2").exists()
    with open(tmp_path / "training_log.jsonl", "a") as f:
        f.write('{"iteration": 4, "rewa')  # a line cut by the kill
    es.train(es_run(micro_chat_model, tmp_path))
    ours, reference = final_weights(tmp_path), final_weights(uninterrupted)
    assert all(torch.equal(ours[k], reference[k]) for k in reference)
    assert [r["iteration"] for r in es.read_log(tmp_path / "training_log.jsonl")] == [1, 2, 3, 4]


KILLED_RUN = """
import sys, time
sys.path.insert(0, {tests!r})
import test_es
from emrepro import es

def slow_reward(spec):
    fast = test_es.text_reward(spec)
    return lambda texts, refs: (time.sleep(1.0), fast(texts, refs))[1]

es.train(test_es.es_run({model!r}, {work!r}, reward_factory=slow_reward))
"""


def test_a_run_killed_with_sigkill_resumes_to_the_same_weights(uninterrupted, micro_chat_model, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    work = tmp_path / "es"
    script = tmp_path / "run.py"
    script.write_text(KILLED_RUN.format(tests=str(Path(__file__).parent), model=micro_chat_model, work=str(work)))
    output = tmp_path / "run.log"
    with open(output, "w") as log:
        proc = subprocess.Popen([sys.executable, str(script)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while len(es.read_log(work / "training_log.jsonl")) < 3:  # iteration 3 is in epoch 2 (of 2 x 2)
        assert proc.poll() is None and time.time() < deadline, output.read_text()[-2000:]
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (work / "epoch_2").exists() and (work / "epoch_1").exists()
    es.train(es_run(micro_chat_model, work))
    ours, reference = final_weights(work), final_weights(uninterrupted)
    assert all(torch.equal(ours[k], reference[k]) for k in reference)


def test_a_run_with_other_settings_does_not_resume_a_stale_work_folder(micro_chat_model, tmp_path):
    work = tmp_path / "es"
    es.train(es_run(micro_chat_model, work, stop_after=1))
    changed = es_run(micro_chat_model, work, stop_after=1)
    changed.settings = es.ESSettings(population=4, sigma=0.1, alpha=0.05, seed=3, members_per_forward=2)
    es.train(changed)
    stale = [p for p in tmp_path.iterdir() if p.name.startswith("es.stale-")]
    assert len(stale) == 1 and len(es.read_log(stale[0] / "training_log.jsonl")) == 1  # kept, not resumed
    assert json.loads((work / "run_key.json").read_text())["settings"]["sigma"] == 0.1
    assert len(es.read_log(work / "training_log.jsonl")) == 1
