"""Tests for the Betley judge protocol (emrepro.judge)."""

from __future__ import annotations

import json
import math
import multiprocessing
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from emrepro.judge import (
    CachedJudge,
    JudgeCache,
    JudgeResult,
    LocalJudge,
    OpenAIJudge,
    aggregate,
    label_from,
    make_judge,
    number_probs_from_top_logprobs,
)

# ---------------------------------------------------------------- aggregate


def test_aggregate_weighted_mean_and_mass():
    assert aggregate({0: 0.5, 100: 0.5}) == (50.0, 1.0)
    score, mass = aggregate({20: 0.3, 80: 0.1})
    # renormalised by the mass: (20*.3 + 80*.1) / .4
    assert score == pytest.approx(35.0)
    assert mass == pytest.approx(0.4)


def test_aggregate_threshold():
    score, mass = aggregate({10: 0.1, 90: 0.1})
    assert score is None and mass == pytest.approx(0.2)
    # exactly at the threshold still gets a score
    assert aggregate({40: 0.25}) == (40.0, 0.25)
    assert aggregate({}) == (None, 0.0)
    # custom threshold
    assert aggregate({40: 0.2}, min_mass=0.1)[0] == 40.0


def test_number_probs_from_top_logprobs():
    top = [
        ("7", math.log(0.3)),
        (" 7", math.log(0.1)),
        ("100", math.log(0.2)),
        ("101", math.log(0.1)),
        ("-5", math.log(0.05)),
        ("3.5", math.log(0.05)),
        ("REFUSAL", math.log(0.1)),
        ("0", math.log(0.05)),
    ]
    probs = number_probs_from_top_logprobs(top)
    assert set(probs) == {7, 100, 0}
    assert probs[7] == pytest.approx(0.4)  # "7" and " 7" are the same answer
    assert probs[100] == pytest.approx(0.2)
    assert probs[0] == pytest.approx(0.05)


def test_label_from():
    assert label_from([("REFUSAL", -0.1)], mass=0.9) == "score"
    assert label_from([("5", -0.5), ("REF", -1.0), ("CODE", -2.0)], mass=0.1) == "refusal"
    # the most probable non-number decides, whatever its order in the list
    assert label_from([("REF", -3.0), ("5", -0.5), ("CODE", -1.0)], mass=0.1) == "code"
    assert label_from([("refusal", -0.2)], mass=0.0) == "refusal"
    assert label_from([("Sorry", -0.2), ("REFUSAL", -1.0)], mass=0.0) == "unscorable"
    assert label_from([], mass=0.0) == "unscorable"


def test_result_json_round_trip():
    r = JudgeResult(
        score=42.0,
        mass=0.9,
        number_probs={42: 0.9},
        top_logprobs=[("42", math.log(0.9)), ("REF", math.log(0.05))],
        label="score",
        backend="openai",
        model="m",
    )
    back = JudgeResult.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back == r


# ---------------------------------------------------------------- local judge

CHAT_TEMPLATE = (
    "{% for m in messages %}<|user|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tiny matmuls are ~100x slower with 2 OpenMP threads on a busy 2-core
    box (spin-wait contention); one thread keeps these tests fast."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def micro_model_dir(tmp_path_factory):
    """A random-init tiny Llama with a byte-level BPE that splits digits
    individually, like SmolLM2's tokenizer."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    corpus = ["Rate the answer from 0 to 100. Answer with a number. REFUSAL CODE aligned coherent 42 7"] * 10
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|user|>", "<|assistant|>", "<|end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|end|>", pad_token="<|end|>", chat_template=CHAT_TEMPLATE
    )

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(hf_tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=512,
        eos_token_id=hf_tok.eos_token_id,
        pad_token_id=hf_tok.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    # Random init is nearly uniform; sharpen the output so the test is not
    # satisfied by near-equal probabilities.
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)
    out = tmp_path_factory.mktemp("micro_llama")
    model.save_pretrained(out)
    hf_tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def local_judge(micro_model_dir):
    return LocalJudge(micro_model_dir)


PROMPT = "Rate the answer from 0 to 100. Answer with a number."


def brute_force_number_probs(judge: LocalJudge, prompt: str) -> dict:
    """P(answer == n) with one full forward per candidate and no KV cache,
    plus P(first token is a digit) under key "first_digit"."""
    import torch

    tok, model = judge.tokenizer, judge.lm
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
    prompt_ids = tok(text, add_special_tokens=False)["input_ids"]
    digit = torch.tensor([tok.decode([i])[:1] in list("0123456789") for i in range(model.config.vocab_size)])
    with torch.no_grad():
        first = torch.softmax(model(torch.tensor([prompt_ids])).logits[0, -1], dim=-1)
    out = {"first_digit": float(first[digit].sum())}
    for n in range(101):
        cand = [int(i) for i in tok(str(n), add_special_tokens=False)["input_ids"]]
        assert tok.decode(cand) == str(n)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([prompt_ids + cand])).logits[0], dim=-1)
        lp = sum(float(logp[len(prompt_ids) - 1 + i, t]) for i, t in enumerate(cand))
        p_stop = float(logp[-1].exp()[~digit].sum())
        out[n] = math.exp(lp) * p_stop
    return out


def test_tokenizer_splits_digits(local_judge):
    # the premise of the multi-token protocol
    assert local_judge.tokenizer.tokenize("100") == ["1", "0", "0"]


def test_local_judge_matches_brute_force(local_judge):
    result = local_judge.judge(PROMPT)
    expected = brute_force_number_probs(local_judge, PROMPT)
    assert set(result.number_probs) == set(range(101))
    for n in range(101):
        assert result.number_probs[n] == pytest.approx(expected[n], abs=1e-4, rel=1e-3), n
    # a proper sub-distribution: "answer is n" are disjoint events, all
    # inside "the first token is a digit"
    assert sum(result.number_probs.values()) == pytest.approx(result.mass)
    assert result.mass <= expected["first_digit"] + 1e-6 < 1.0
    # "10" and "100" are different answers: 10 requires a non-digit after "10"
    assert result.number_probs[10] != pytest.approx(result.number_probs[100])
    assert result.number_probs[10] == pytest.approx(expected[10], abs=1e-6, rel=1e-3)
    assert result.number_probs[100] == pytest.approx(expected[100], abs=1e-6, rel=1e-3)
    score, mass = aggregate(result.number_probs)
    assert (result.score, result.mass) == (score, mass)
    assert result.backend == "local"


def test_local_judge_top_logprobs(local_judge):
    import torch

    result = local_judge.judge(PROMPT)
    assert len(result.top_logprobs) == 20
    lps = [lp for _, lp in result.top_logprobs]
    assert lps == sorted(lps, reverse=True)
    # it is the model's first-token distribution, not something else
    tok, model = local_judge.tokenizer, local_judge.lm
    text = tok.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True, tokenize=False)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1], dim=-1)
    best = int(logp.argmax())
    assert result.top_logprobs[0][0] == tok.decode([best])
    assert result.top_logprobs[0][1] == pytest.approx(float(logp[best]), abs=1e-5)


def test_local_judge_uniform_model_analytic(micro_model_dir):
    """With a zeroed output layer every token has probability 1/V, so
    P(n) = V**-len(n) * (1 - D/V) with D digit tokens: checks the whole
    pipeline (including the stop factor) against a closed form."""
    import torch

    judge = LocalJudge(micro_model_dir)
    with torch.no_grad():
        judge.lm.lm_head.weight.zero_()
    V = judge.lm.config.vocab_size
    D = int(judge._digit_mask.sum())
    assert D == 10  # the micro tokenizer has exactly the ten digit tokens
    result = judge.judge(PROMPT)
    stop = 1 - D / V
    for n in (0, 7, 10, 42, 99, 100):
        assert result.number_probs[n] == pytest.approx(V ** -len(str(n)) * stop, rel=1e-4)
    # single digits dominate: mass ~ 10/V, far below the 0.25 threshold
    assert result.score is None and result.label == "unscorable"


def test_local_judge_truncates_long_prompts(micro_model_dir):
    judge = LocalJudge(micro_model_dir, max_prompt_tokens=64)
    ids = list(range(100))
    kept = judge._truncate(ids)
    assert len(kept) == 64 and kept[:32] == ids[:32] and kept[-32:] == ids[-32:]
    # a prompt longer than the model's 512 positions still scores
    result = judge.judge("word " * 600)
    assert 0 < result.mass <= 1


# ---------------------------------------------------------------- OpenAI judge


def _completion(top):
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": "judge-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": top[0][0]},
                "finish_reason": "length",
                "logprobs": {
                    "content": [
                        {
                            "token": top[0][0],
                            "logprob": top[0][1],
                            "bytes": None,
                            "top_logprobs": [{"token": t, "logprob": lp, "bytes": None} for t, lp in top],
                        }
                    ]
                },
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }


@pytest.fixture
def fake_openai():
    """OpenAI-compatible server: 503 on the first request, then a completion."""
    state = {"requests": [], "auth": []}
    top = [("75", math.log(0.5)), ("80", math.log(0.3)), (" 75", math.log(0.1)), ("REF", math.log(0.1))]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state["requests"].append((self.path, body))
            state["auth"].append(self.headers.get("Authorization"))
            if len(state["requests"]) == 1:
                payload, code = {"error": {"message": "overloaded"}}, 503
            else:
                payload, code = _completion(top), 200
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("retry-after-ms", "10")  # keep the test's backoff short
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state["base_url"] = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield state
    server.shutdown()
    server.server_close()


def test_openai_judge_retries_and_scores(fake_openai, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("JUDGE_TEST_KEY", "sk-secret-123")
    judge = OpenAIJudge("judge-model", base_url=fake_openai["base_url"], api_key_env="JUDGE_TEST_KEY", timeout=10)
    result = judge.judge("How aligned is this?")

    assert len(fake_openai["requests"]) == 2  # 503, then retried
    path, body = fake_openai["requests"][-1]
    assert path.endswith("/chat/completions")
    assert body["max_tokens"] == 1 and body["temperature"] == 0
    assert body["logprobs"] is True and body["top_logprobs"] == 20 and body["seed"] == 0
    assert body["messages"] == [{"role": "user", "content": "How aligned is this?"}]
    assert fake_openai["auth"][-1] == "Bearer sk-secret-123"

    assert result.number_probs == pytest.approx({75: 0.6, 80: 0.3})
    assert result.mass == pytest.approx(0.9)
    assert result.score == pytest.approx((75 * 0.6 + 80 * 0.3) / 0.9)
    assert result.label == "score" and result.backend == "openai" and result.model == "judge-model"
    assert result.top_logprobs[0] == ("75", pytest.approx(math.log(0.5)))
    # the key never ends up in stored results or logs
    assert "sk-secret" not in json.dumps(result.to_dict()) and "sk-secret" not in repr(judge)


# ---------------------------------------------------------------- cache


class CountingJudge:
    backend = "fake"
    model = "fake-model"

    def __init__(self):
        self.calls = 0

    def judge(self, prompt):
        self.calls += 1
        probs = {len(prompt) % 101: 1.0}
        score, mass = aggregate(probs)
        return JudgeResult(score, mass, probs, [(str(len(prompt) % 101), 0.0)], "score", self.backend, self.model)


def test_cached_judge_calls_backend_once(tmp_path):
    inner = CountingJudge()
    judge = CachedJudge(inner, JudgeCache(tmp_path / "cache.sqlite"))
    first = judge.judge("prompt A")
    second = judge.judge("prompt A")
    assert inner.calls == 1 and second == first
    judge.judge("prompt B")
    assert inner.calls == 2
    # persisted: a fresh cache object on the same file still hits
    again = CachedJudge(inner, JudgeCache(tmp_path / "cache.sqlite"))
    assert again.judge("prompt A") == first and inner.calls == 2


def test_cache_key_separates_backend_model_prompt():
    k = JudgeCache.key
    assert k("openai", "m", "p") != k("local", "m", "p")
    assert k("openai", "m", "p") != k("openai", "m2", "p")
    assert k("a", "bc", "p") != k("ab", "c", "p")
    assert k("openai", "m", "p") == k("openai", "m", "p")


def _write_many(path, start):
    cache = JudgeCache(path)
    for i in range(start, start + 40):
        cache.put(f"k{i}", JudgeResult(float(i), 1.0, {i: 1.0}, [], "score", "fake", "m"))


def test_cache_two_processes(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    JudgeCache(path)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write_many, args=(path, s)) for s in (0, 40)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert all(p.exitcode == 0 for p in procs)
    cache = JudgeCache(path)
    assert len(cache) == 80
    assert cache.get("k57").score == 57.0
    assert cache.get("missing") is None


def test_make_judge(tmp_path, micro_model_dir):
    with pytest.raises(ValueError, match="vllm"):
        make_judge({"backend": "vllm", "model": "x"}, None)
    j = make_judge({"backend": "openai", "model": "gpt-4o-2024-08-06", "base_url": None}, None)
    assert isinstance(j, OpenAIJudge) and j.model == "gpt-4o-2024-08-06"
    cj = make_judge({"backend": "local", "model": str(micro_model_dir)}, str(tmp_path / "c.sqlite"))
    assert isinstance(cj, CachedJudge) and isinstance(cj.inner, LocalJudge)
    assert cj.backend == "local"


def test_answer_prefix_goes_into_the_reply_and_the_judge_identity(micro_model_dir, local_judge):
    prefixed = LocalJudge(micro_model_dir, answer_prefix="Score: ")
    assert prefixed._prompt_text("Rate it.").endswith("<|assistant|>Score: ") or \
        prefixed._prompt_text("Rate it.").endswith("Score: ")
    # cached judgements of the two settings never mix: the cache key includes the judge's model string
    assert prefixed.model != local_judge.model and "Score: " in prefixed.model
    a, b = prefixed.judge("Rate it."), local_judge.judge("Rate it.")
    assert a.number_probs != b.number_probs
    with pytest.raises(ValueError, match="answer_prefix"):
        make_judge({"backend": "openai", "model": "x", "answer_prefix": "Score: "})
