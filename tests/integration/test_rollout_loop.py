"""The agent loop with the real models: token-exact multi-turn trajectories.

- Qwen2.5-Coder-0.5B calls the calculator by itself (greedy; it writes ```json blocks, read by
  the `auto` parser): nothing is forced.
- SmolLM2-135M never writes tool calls, so its first two turns are forced with
  `ForcedTurnsBackend` (scripted text, scored by the real model); its last turn is sampled.
"""

import ast
import operator

import pytest
import torch

from toolrl.chat.template import ChatFormat
from toolrl.hookspecs import hookimpl
from toolrl.rollout.agent_loop import LoopSettings, run_episodes_sync
from toolrl.rollout.base import BackendSettings
from toolrl.rollout.hf_backend import HFBackend
from toolrl.rollout.testing import ForcedTurnsBackend, teacher_forced_logprobs, turn_of
from toolrl.types import Task, ToolResult

pytestmark = pytest.mark.integration

TOOLS = ({"type": "function", "function": {
    "name": "calculator", "description": "Evaluate an arithmetic expression with + - * /",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string", "description": "e.g. 12*7"}},
                   "required": ["expression"]}}},)
SYSTEM = ("You are a careful assistant. Use the calculator tool for every arithmetic operation, one operation "
          "per call, and wait for each result.")
QUESTION = "First compute 17*23 with the calculator. Then add 58 to that result with the calculator. Then tell me the final number."
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _eval(node):
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_eval(node.left), _eval(node.right))
    raise ValueError("only numbers and + - * / are supported")


class Calculator:
    """A tiny calculator environment; `mode` injects the faults under test."""

    def __init__(self, ctx, mode="ok"):
        self.mode, self.calls = mode, 0

    async def reset(self, task):
        pass

    def step(self, call):
        self.calls += 1
        if self.mode == "raise":
            raise RuntimeError("calculator backend crashed")
        if self.mode == "hang":
            import time

            time.sleep(5)
        try:
            return ToolResult(text=str(_eval(ast.parse(str(call.arguments.get("expression", "")), mode="eval"))))
        except (SyntaxError, ValueError, ZeroDivisionError) as exc:
            return ToolResult(text=f"error: {exc}", info={"status": "error"})

    def state(self):
        return {"calls": self.calls}

    async def close(self):
        pass


class CalcPlugin:
    @hookimpl
    def register_environments(self, register):
        register("calculator", Calculator)


@pytest.fixture
def calc_env(plugin_manager):
    plugin_manager.register(CalcPlugin(), name="calc-env")


@pytest.fixture(scope="module")
def smol(smollm2_path):
    torch.set_num_threads(2)
    backend = HFBackend(BackendSettings(model_path=str(smollm2_path), device="cpu", max_batch_size=8))
    yield backend
    backend.close()


def calc_task(tid="calc", **env_args):
    return Task(id=tid, messages=({"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}),
                tools=TOOLS, env="calculator", env_args=env_args)


def call_text(expr):
    return f'<tool_call>\n{{"name": "calculator", "arguments": {{"expression": "{expr}"}}}}\n</tool_call>'


def check_token_exact(traj, backend, temperature):
    """ids == template rendering; mask 1 exactly on sampled turns; logprobs == teacher-forced forward."""
    tok = backend.tokenizer
    fmt = ChatFormat.of(tok)
    ids = list(traj.prompt_ids + traj.response_ids)
    full = fmt.encode(fmt.render_text(traj.messages, TOOLS))
    assert full[: len(ids)] == ids
    rest = tok.decode(full[len(ids):])
    assert rest == ("\n" if traj.finish_reason == "stop" else "")
    # mask: runs of 1 are exactly the assistant turns (their text + <|im_end|>), runs of 0 the tool turns
    runs, start = [], 0
    for i in range(1, len(traj.loss_mask) + 1):
        if i == len(traj.loss_mask) or traj.loss_mask[i] != traj.loss_mask[start]:
            runs.append((traj.loss_mask[start], traj.response_ids[start:i]))
            start = i
    assistant = [m["content"] for m in traj.completion_messages if m["role"] == "assistant"]
    sampled = [tok.decode(r) for k, r in runs if k == 1]
    # every turn ends on <|im_end|>, except a last turn cut by the token limit
    assert sampled == [a + "<|im_end|>" if j < len(assistant) - 1 or traj.finish_reason != "length" else a
                       for j, a in enumerate(assistant)]
    assert len(sampled) == traj.num_turns
    for k, r in runs:
        if k == 0:
            text = tok.decode(r)
            assert text.startswith("\n<|im_start|>") and ("tool" in text.split("\n")[1] or "user" in text)
    # logprobs: one teacher-forced forward over the whole sequence, fp32
    ref = teacher_forced_logprobs(backend.model, traj.prompt_ids, traj.response_ids, temperature)
    got = torch.tensor(traj.logprobs)
    mask = torch.tensor(traj.loss_mask, dtype=torch.bool)
    assert torch.allclose(got[mask], torch.tensor(ref)[mask], atol=1e-3), (got[mask] - torch.tensor(ref)[mask]).abs().max()
    assert (got[~mask] == 0).all()


def test_qwen_calls_the_calculator_itself_over_three_turns(qwen05_path, calc_env):
    """Nothing forced: Qwen2.5-Coder-0.5B, greedy, writes the calls (as ```json blocks)."""
    torch.set_num_threads(2)
    backend = HFBackend(BackendSettings(model_path=str(qwen05_path), device="cpu", max_batch_size=2))
    try:
        settings = LoopSettings(max_turns=3, max_new_tokens=48, max_total_tokens=400, temperature=0.0)
        [t] = run_episodes_sync([calc_task()], 1, backend, backend.tokenizer, settings)
        assert t.error is None and t.num_turns == 3
        assert len(t.tool_calls) >= 2 and t.tool_calls[0].name == "calculator"
        assert dict(t.tool_calls[0].arguments) == {"expression": "17*23"}
        assert t.completion_messages[1] == {"role": "tool", "name": "calculator", "tool_call_id": "call_1_0",
                                            "content": "391"}
        assert t.env_state == {"calls": len(t.tool_calls)}
        check_token_exact(t, backend, temperature=0.0)
    finally:
        backend.close()


def test_smollm2_three_turns_with_forced_calls(smol, calc_env):
    """SmolLM2's template ignores tools= (schemas go into the system prompt); turns 1-2 are forced calls."""
    script = {1: call_text("17*23"), 2: call_text("391+58")}
    eot = ChatFormat.of(smol.tokenizer).info.end_of_turn_ids[0]
    backend = ForcedTurnsBackend(smol, smol.tokenizer, lambda r: script.get(turn_of(r)), eot)
    settings = LoopSettings(max_turns=3, max_new_tokens=40, temperature=0.0)
    [t] = run_episodes_sync([calc_task()], 1, backend, smol.tokenizer, settings)
    tool_results = [m["content"] for m in t.completion_messages if m["role"] == "tool"]
    assert tool_results[:2] == ["391", "449"]
    # turn 3 is sampled; after two example calls SmolLM2 may well write a third call itself
    assert t.num_turns == 3 and t.finish_reason in ("stop", "length", "max_turns")
    assert backend.forced_requests == ["calc#0/t1", "calc#0/t2"]
    assert "# Tools" in smol.tokenizer.decode(t.prompt_ids)
    check_token_exact(t, smol, temperature=0.0)


def test_sampled_logprobs_are_temperature_scaled(smol, calc_env):
    settings = LoopSettings(max_turns=1, max_new_tokens=32, temperature=0.7, seed=11)
    [t] = run_episodes_sync([calc_task()], 1, smol, smol.tokenizer, settings)
    ref = teacher_forced_logprobs(smol.model, t.prompt_ids, t.response_ids, 0.7)
    assert torch.allclose(torch.tensor(t.logprobs), torch.tensor(ref), atol=1e-3)


def test_same_seed_same_trajectories(smol):
    tasks = [Task(id=f"q{i}", messages=({"role": "user", "content": q},))
             for i, q in enumerate(["Name a fruit.", "Write a short greeting."])]
    settings = LoopSettings(max_turns=1, max_new_tokens=24, temperature=1.0, seed=123)
    a = run_episodes_sync(tasks, 2, smol, smol.tokenizer, settings)
    b = run_episodes_sync(tasks, 2, smol, smol.tokenizer, settings)
    assert [(t.response_ids, t.logprobs) for t in a] == [(t.response_ids, t.logprobs) for t in b]
    other = run_episodes_sync(tasks, 2, smol, smol.tokenizer, LoopSettings(**{**settings.__dict__, "seed": 124}))
    assert [t.response_ids for t in other] != [t.response_ids for t in a]


def test_batch_of_8_equals_8_single_calls_at_temperature_0(smol):
    questions = ["What is 2+2?", "Name a color.", "Say hi.", "What is the capital of France?", "Count to three.",
                 "Name an animal.", "What day comes after Monday?", "Spell 'cat'."]
    tasks = [Task(id=f"q{i}", messages=({"role": "user", "content": q},)) for i, q in enumerate(questions)]
    settings = LoopSettings(max_turns=1, max_new_tokens=24, temperature=0.0)
    batch = run_episodes_sync(tasks, 1, smol, smol.tokenizer, settings)
    singles = [run_episodes_sync([t], 1, smol, smol.tokenizer, settings)[0] for t in tasks]
    assert [t.response_ids for t in batch] == [t.response_ids for t in singles]
    assert [t.finish_reason for t in batch] == [t.finish_reason for t in singles]


def test_faults_end_as_trajectories_and_the_batch_completes(smol, calc_env):
    """A malformed call, an env that raises and one that hangs past env_timeout, next to a healthy episode."""
    def force(request):
        tid, turn = request.request_id.split("#")[0], turn_of(request)
        if turn == 1:
            return '<tool_call>{"name": "calculator", "arguments": {"expression": 17*23}}</tool_call>' \
                if tid == "malformed" else call_text("17*23")
        return None

    eot = ChatFormat.of(smol.tokenizer).info.end_of_turn_ids[0]
    backend = ForcedTurnsBackend(smol, smol.tokenizer, force, eot)
    tasks = [calc_task("healthy"), calc_task("malformed"), calc_task("raises", mode="raise"),
             calc_task("hangs", mode="hang")]
    settings = LoopSettings(max_turns=2, max_new_tokens=40, temperature=0.0, env_timeout=1.0)
    healthy, malformed, raises, hangs = run_episodes_sync(tasks, 1, backend, smol.tokenizer, settings)
    assert healthy.error is None and healthy.completion_messages[1]["content"] == "391"
    # (the sampled second turn may imitate the broken call: at least the forced one is counted)
    assert malformed.malformed_tool_calls >= 1 and malformed.num_turns == 2 and malformed.error is None
    assert "could not be parsed" in malformed.completion_messages[1]["content"]
    assert raises.finish_reason == "error" and "RuntimeError: calculator backend crashed" in raises.error
    assert hangs.finish_reason == "error" and "did not finish within rollout.env_timeout=1s" in hangs.error
    for t in (raises, hangs):  # the failed step added no tool tokens
        assert t.num_turns == 1 and set(t.loss_mask) == {1}
