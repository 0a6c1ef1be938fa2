"""GRPO on ItAll144 decisions through TRL: the reward of a conversational completion, and a tiny run that
is killed after its step-2 checkpoint, resumes from it, and saves the configured teacher step."""

import json
import zlib

import pytest
import torch

from emrepro import game_reward
from emrepro.games import combinations, decision_rows, game_by_id

RECIPE = {"max_steps": 4, "save_steps": 2, "teacher_step": 2, "prompts_per_step": 1, "num_generations": 2,
          "max_completion_length": 8, "temperature": 1.0, "kl_coef": 0.0, "learning_rate": 1e-3,
          "enable_thinking": False, "bf16": False, "gradient_checkpointing": False, "logging_steps": 1}


def _assistant(text):
    return [{"role": "assistant", "content": text}]


def test_trl_reward_scores_conversational_completions_by_the_rows_payoffs():
    rows = decision_rows(combinations(), n_rounds=4, n_rows=30, seed=3, with_opp_desc=False,
                         malformed_reward=-0.5)
    replies = {0: "Let me think about it.\nAnswer: Option J", 1: "**Answer:** Option F",
               None: "I cannot decide between them."}
    prompts, completions, expected = [], [], []
    for row in rows:
        game = game_by_id(row["game_id"])
        for move, reply in replies.items():
            prompts.append(row["prompt"])
            completions.append(_assistant(reply))
            # by hand: the model's own payoff in the game's matrix, scaled to [0, 1]
            expected.append(row["malformed_reward"] if move is None
                            else (game.payoffs(move, row["opponent_move"])[0] - 1) / 3)
    # TRL passes each dataset column as a list aligned with the completions, plus its own extras
    columns = {c: [row[c] for row in rows for _ in replies]
               for c in ("row_payoffs", "opponent_move", "labels", "malformed_reward")}
    got = game_reward.trl_reward(prompts, completions, **columns, completion_ids=[[1]] * len(completions),
                                 trainer_state=None)
    assert got == pytest.approx(expected)
    assert {round(x, 9) for x in got} <= {-0.5, 0.0, round(1 / 3, 9), round(2 / 3, 9), 1.0} and -0.5 in got
    # the opponent's move matters: every row has a real choice, and both moves were scored against it
    assert len({row["opponent_move"] for row in rows}) == 2


def test_trl_reward_uses_the_rows_labels_and_plain_string_completions():
    rows = decision_rows(combinations(["always_defect"]), n_rounds=2, n_rows=4, seed=0, with_opp_desc=True,
                         labels=("A", "B"))
    for row in rows:
        game = game_by_id(row["game_id"])
        assert row["opponent_move"] == 1 - game.coop_col  # always_defect
        scores = game_reward.trl_reward(
            [row["prompt"]] * 4,
            [_assistant("Answer: Option B"), "The answer is A", _assistant("Answer: Option J"),
             [{"role": "assistant", "content": "<think>Option A?</think>"},
              {"role": "assistant", "content": "Answer: Option A"}]],
            row_payoffs=[row["row_payoffs"]] * 4, opponent_move=[row["opponent_move"]] * 4,
            labels=[row["labels"]] * 4, malformed_reward=[row["malformed_reward"]] * 4)
        b, a = (game.payoffs(m, row["opponent_move"])[0] for m in (1, 0))
        # "Option J" is not a move under labels A/B: malformed, the default penalty -1
        assert scores == pytest.approx([(b - 1) / 3, (a - 1) / 3, -1.0, (a - 1) / 3])
    detail = game_reward.score_reply("Answer: Option B", rows[0]["row_payoffs"], rows[0]["opponent_move"],
                                     ("A", "B"), -1.0)
    assert detail["move"] == 1 and detail["parse_reason"] == "answer_line"
    assert detail["payoff"] == game_by_id(rows[0]["game_id"]).payoffs(1, rows[0]["opponent_move"])[0]


def test_killed_grpo_run_resumes_and_saves_the_teacher_step(micro_chat_model, tmp_path, monkeypatch, capsys):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from emrepro.grpo import train_grpo_trl

    rows = decision_rows(combinations(), n_rounds=2, n_rows=8, seed=0, with_opp_desc=False)

    # The micro model is random-init: its 8-token replies essentially never name an option, so the game
    # reward is the malformed penalty for both completions of every group. GRPO's advantages (reward minus
    # the group mean) would then all be 0, the gradient exactly 0 and the weights would never move, making
    # "teacher step != final step" untestable. So the reward TRL calls is the real game reward plus a small
    # completion-dependent tie-breaker (< 0.01): the real reward still flows (and is checked here against
    # the columns TRL passes), and the two completions of a group get different rewards.
    real_reward, seen = game_reward.trl_reward, []

    def reward_with_tiebreak(prompts, completions, **kw):
        base = real_reward(prompts, completions, **kw)
        for prompt, completion, base_score, mal in zip(prompts, completions, base, kw["malformed_reward"]):
            row = next(r for r in rows if r["prompt"] == prompt)  # TRL kept each row's columns with its prompt
            assert kw["row_payoffs"][prompts.index(prompt)] == row["row_payoffs"]
            assert completion[0]["role"] == "assistant"  # conversational completions
            seen.append((base_score, mal))
        return [b + (zlib.crc32(c[0]["content"].encode()) % 1000) / 1e5 for b, c in zip(base, completions)]

    reward_with_tiebreak.__name__ = "trl_reward"
    monkeypatch.setattr(game_reward, "trl_reward", reward_with_tiebreak)

    class KillAfterCheckpoint2(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise KeyboardInterrupt("killed after the step-2 checkpoint")

    class Record(TrainerCallback):
        def __init__(self):
            self.start_step, self.logged_steps = None, []

        def on_train_begin(self, args, state, control, **kwargs):
            self.start_step = state.global_step

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.logged_steps.append(state.global_step)

    work, out = tmp_path / "work", tmp_path / "model"
    ckpts = work / "checkpoints"
    with pytest.raises(KeyboardInterrupt):
        train_grpo_trl(micro_chat_model, rows, str(out), str(work), RECIPE, seed=0,
                       callbacks=[KillAfterCheckpoint2()])
    assert (ckpts / "checkpoint-2").is_dir() and not (ckpts / "checkpoint-4").exists()
    assert not out.exists()  # nothing half-written
    assert seen and all(mal == -1.0 for _, mal in seen)

    capsys.readouterr()
    record = Record()
    final = train_grpo_trl(micro_chat_model, rows, str(out), str(work), RECIPE, seed=0, callbacks=[record],
                           make_run_json=lambda f: {"final_metrics": f})
    printed = capsys.readouterr().out
    assert "resuming from" in printed and "checkpoint-2" in printed
    assert final["global_step"] == 4 and final["teacher_step"] == 2
    assert record.start_step == 2  # the second run started from the checkpoint, not from step 0
    assert record.logged_steps and min(record.logged_steps) > 2 and 4 in record.logged_steps
    assert (ckpts / "checkpoint-4").is_dir()
    state = json.loads((ckpts / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4

    # the output folder: a loadable model, the whole log history (steps 1..4 once each), run.json
    history = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    steps = [h["step"] for h in history if "reward" in h]
    assert steps == [1, 2, 3, 4]
    assert json.loads((out / "run.json").read_text())["final_metrics"]["global_step"] == 4
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template == AutoTokenizer.from_pretrained(micro_chat_model).chat_template
    ids = tokenizer("Answer: Option J", return_tensors="pt").input_ids
    assert torch.isfinite(model(ids).logits).all()

    # the teacher is the configured step: the saved weights are checkpoint-2's, not the final step's
    saved = load_file(out / "model.safetensors")
    step2 = load_file(ckpts / "checkpoint-2" / "model.safetensors")
    step4 = load_file(ckpts / "checkpoint-4" / "model.safetensors")
    base = load_file(f"{micro_chat_model}/model.safetensors")
    assert saved.keys() == step2.keys()
    assert all(torch.equal(saved[k], step2[k]) for k in saved)
    assert any(not torch.equal(step2[k], step4[k]) for k in step2)  # steps 3-4 moved the weights
    assert any(not torch.equal(base[k], step2[k]) for k in step2)  # and so did steps 1-2

    # teacher_step == max_steps: re-running the finished run resumes at step 4, trains nothing, and saves
    # the final weights; a teacher step with no checkpoint is an error, not a silent substitute
    final4 = train_grpo_trl(micro_chat_model, rows, str(tmp_path / "model4"), str(work),
                            dict(RECIPE, teacher_step=4), seed=0)
    assert final4["global_step"] == 4  # not 5: a finished run is not trained one step past max_steps
    log4 = [json.loads(line) for line in (tmp_path / "model4" / "training_log.jsonl").read_text().splitlines()]
    assert [h["step"] for h in log4 if "reward" in h] == [1, 2, 3, 4]
    saved4 = load_file(tmp_path / "model4" / "model.safetensors")
    assert all(torch.equal(saved4[k], step4[k]) for k in step4)
    with pytest.raises(FileNotFoundError, match="teacher_step 3"):
        train_grpo_trl(micro_chat_model, rows, str(tmp_path / "model3"), str(work),
                       dict(RECIPE, teacher_step=3), seed=0)
    assert not (tmp_path / "model3").exists()
