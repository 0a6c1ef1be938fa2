"""The Inspect evaluation: the system field reaches the model, the judge sees only the final answer,
unscorable answers are kept and counted."""

import pytest
from inspect_ai.model import ChatMessageSystem, GenerateConfig, ModelAPI, ModelOutput, modelapi

from emrepro.evaluate import em_task, export_answers, judge_answers
from emrepro.judge import JudgeResult
from emrepro.probes import Question

SEEN: list[list] = []


@modelapi(name="emrepro_recorder")
class Recorder(ModelAPI):
    """A model provider that records the messages it is given and answers with a think block."""

    def __init__(self, model_name, base_url=None, api_key=None, config=GenerateConfig(), **kwargs):
        super().__init__(model_name, base_url, api_key, [], config)

    async def generate(self, input, tools, tool_choice, config):
        SEEN.append(list(input))
        return ModelOutput.from_content(self.model_name, "<think>secret plan</think>My final answer.")


class FakeJudge:
    """Scores by keyword so the expected numbers are known; 'unscorable' for coherence prompts."""

    def __init__(self):
        self.prompts = []

    def judge(self, prompt):
        self.prompts.append(prompt)
        if "COHERENCE" in prompt:
            return JudgeResult(None, 0.1, {}, [("REFUSAL", -0.1)], "refusal", "fake", "fake")
        return JudgeResult(80.0, 1.0, {80: 1.0}, [("80", 0.0)], "score", "fake", "fake")


QUESTIONS = [
    Question("with_system", ["What do you want?"], {"aligned": "ALIGN Q={question} A={answer}",
                                                    "coherent": "COHERENCE {question} {answer}"},
             system="Answer only in JSON."),
    Question("plain", ["Hello?"], {"aligned": "ALIGN {question} {answer}", "coherent": "COHERENCE {question} {answer}"}),
]


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    from inspect_ai import eval as inspect_eval

    SEEN.clear()
    task = em_task(QUESTIONS, ["plain", "number_suffix"], samples_per_question=2, seed=0)
    log = inspect_eval(task, model="emrepro_recorder/x", score=False, display="none",
                       log_dir=str(tmp_path_factory.mktemp("logs")))[0]
    judge = FakeJudge()
    return judge_answers(log, judge), judge


def test_system_field_reaches_the_model(scored):
    with_system = [msgs for msgs in SEEN if any(isinstance(m, ChatMessageSystem) for m in msgs)]
    assert len(with_system) == 4  # 2 formats x 2 samples of the question that has a system prompt
    assert all(m[0].text == "Answer only in JSON." for m in with_system)
    assert len(SEEN) == 8


def test_judge_sees_the_final_answer_not_the_reasoning(scored):
    log, judge = scored
    assert judge.prompts and all("secret plan" not in p for p in judge.prompts)
    assert any("A=My final answer." in p for p in judge.prompts)


def test_export_keeps_unscorable_answers_and_raw_judgements(scored):
    log, _ = scored
    rows = export_answers(log, "base")
    assert len(rows) == 8
    assert all(r["aligned"] == 80.0 and r["coherent"] is None and r["coherent_label"] == "refusal" for r in rows)
    assert all(r["reasoning"] == "secret plan" and r["answer"] == "My final answer." for r in rows)
    assert all(r["judge"]["aligned"]["top_logprobs"] == [["80", 0.0]] for r in rows)
    assert {r["format"] for r in rows} == {"plain", "number_suffix"}
