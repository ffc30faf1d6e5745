"""reward_model on real checkpoints: SmolLM2-135M-Instruct (chat template, 1 label) and all-MiniLM-L6-v2
(text pair, 2 labels), each saved with a seeded head; in-process and in a real Ray actor."""

from __future__ import annotations

import asyncio
import inspect
import math
import os

import pytest

from toolrl.errors import RewardError
from toolrl.rewards import compute_rewards_sync, prepare_rewards
from toolrl_rewards_model import plugin
from toolrl_rewards_model import classifier as rm_module
from toolrl_rewards_model.classifier import reward_model

pytestmark = pytest.mark.integration

ROWS = [
    ("What is 2 + 2?", "4", None),
    ("What is 2 + 2?", "Two plus two equals four, because adding two to two gives four.", None),
    ("Name a colour.", "Blue.", None),
    ("Name a colour.", "I would rather talk about the weather in a very long and winding sentence today.", None),
    ("Say hi.", "", None),
]


def score(trajs, tasks, **args):
    return asyncio.run(reward_model(trajs, tasks=tasks, completions=[t.final_text for t in trajs], **args))


def test_batched_scores_equal_one_by_one(smollm2_rm, batch):
    trajs, tasks = batch(ROWS)
    batched = score(trajs, tasks, model=str(smollm2_rm), batch_size=3)
    single = [score([t], [k], model=str(smollm2_rm), batch_size=1)[0] for t, k in zip(trajs, tasks)]
    assert len(batched) == len(ROWS) and all(isinstance(v, float) for v in batched)
    assert batched == pytest.approx(single, abs=1e-4)
    assert len({round(v, 4) for v in batched}) == len(ROWS)  # the answers are told apart


def test_score_is_the_head_logit_on_the_chat_template(smollm2_rm, batch):
    """The same number as a plain transformers forward pass over the chat-templated conversation."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    trajs, tasks = batch(ROWS[1:2])
    tok = AutoTokenizer.from_pretrained(smollm2_rm)
    model = AutoModelForSequenceClassification.from_pretrained(smollm2_rm, dtype=torch.float32).eval()
    text = tok.apply_chat_template([{"role": "user", "content": ROWS[1][0]}, {"role": "assistant", "content": ROWS[1][1]}],
                                   tokenize=False)
    with torch.inference_mode():
        expected = model(**tok(text, add_special_tokens=False, return_tensors="pt")).logits[0, 0].item()
    assert score(trajs, tasks, model=str(smollm2_rm)) == [pytest.approx(expected, abs=1e-4)]
    assert score(trajs, tasks, model=str(smollm2_rm), normalize="sigmoid") == [
        pytest.approx(1 / (1 + math.exp(-expected)), abs=1e-5)]


def test_loaded_once_per_process_and_reused(smollm2_rm, batch):
    trajs, tasks = batch(ROWS[:2])
    score(trajs, tasks, model=str(smollm2_rm))
    key = (str(smollm2_rm.resolve()), "cpu", "float32")
    first = rm_module._SCORERS[key]
    score(trajs, tasks, model=str(smollm2_rm), batch_size=1, normalize="sigmoid")
    assert rm_module._SCORERS[key] is first
    assert [k for k in rm_module._SCORERS if k[0] == key[0]] == [key]


def test_cross_encoder_pair_format_softmax_and_labels(minilm_rm, batch):
    trajs, tasks = batch(ROWS)
    p1 = score(trajs, tasks, model=str(minilm_rm), normalize="softmax", label=1, batch_size=2)
    p0 = score(trajs, tasks, model=str(minilm_rm), normalize="softmax", label=0, batch_size=5)
    assert all(0.0 < v < 1.0 for v in p1)
    assert [a + b for a, b in zip(p0, p1)] == pytest.approx([1.0] * len(ROWS), abs=1e-5)
    single = [score([t], [k], model=str(minilm_rm), normalize="softmax", label=1)[0] for t, k in zip(trajs, tasks)]
    assert p1 == pytest.approx(single, abs=1e-5)
    # auto = pair here (no chat template): the question and the answer as a text pair
    assert score(trajs, tasks, model=str(minilm_rm), input_format="pair") == pytest.approx(
        score(trajs, tasks, model=str(minilm_rm)), abs=1e-6)
    with pytest.raises(RewardError, match="has no chat template") as info:
        score(trajs, tasks, model=str(minilm_rm), input_format="chat")
    assert "input_format: pair" in info.value.fix


def test_bad_paths_say_what_where_and_how_to_fix(tmp_path, batch, smollm2_path):
    trajs, tasks = batch(ROWS[:1])
    with pytest.raises(RewardError, match="no checkpoint folder at") as info:
        score(trajs, tasks, model=str(tmp_path / "missing"))
    assert info.value.where == "rewards[name=reward_model].args.model" and "save_pretrained" in info.value.fix
    (tmp_path / "empty").mkdir()
    with pytest.raises(RewardError, match="has no config.json"):
        score(trajs, tasks, model=str(tmp_path / "empty"))
    # a causal LM is not a reward model: its head would be random
    with pytest.raises(RewardError, match=r"no trained classification head \(missing \['score.weight'\]\)") as info:
        score(trajs, tasks, model=str(smollm2_path))
    assert "allow_untrained_head" in info.value.fix
    from toolrl.models import resolve_embedding_model  # a plain encoder (base model prefix "bert") likewise

    with pytest.raises(RewardError, match=r"missing \['classifier.bias', 'classifier.weight'\]"):
        score(trajs, tasks, model=str(resolve_embedding_model("all-minilm-l6-v2")))


def test_bad_arguments_are_reward_errors(smollm2_rm, minilm_rm, batch):
    import torch

    trajs, tasks = batch(ROWS[:1])
    cases = [({"model": str(smollm2_rm), "label": 3}, "label 3 does not exist"),
             ({"model": str(smollm2_rm), "normalize": "softmax"}, "needs a model with at least 2 labels"),
             ({"model": str(smollm2_rm), "dtype": "float8"}, "unknown dtype"),
             ({"model": str(smollm2_rm), "input_format": "xml"}, "unknown input_format"),
             ({"model": str(smollm2_rm), "device": "tpu"}, "unknown device")]
    if not torch.cuda.is_available():
        cases.append(({"model": str(minilm_rm), "device": "cuda"}, "torch sees no CUDA device"))
    for args, message in cases:
        with pytest.raises(RewardError, match=message) as info:
            score(trajs, tasks, **args)
        assert info.value.where and info.value.fix


def test_episode_conversation_reads_tool_turns(smollm2_rm, batch):
    from toolrl.types import Trajectory

    trajs, tasks = batch(ROWS[:1])
    t = trajs[0]
    longer = Trajectory(task_id=t.task_id, sample_index=1, prompt_ids=(1,), response_ids=(2,), loss_mask=(1,),
                        logprobs=(0.0,), num_prompt_messages=1,
                        messages=(t.messages[0], {"role": "assistant", "content": "Let me compute 2 + 2 with a tool."},
                                  {"role": "tool", "content": "4"}, {"role": "assistant", "content": "4"}))
    final = score([t, longer], tasks * 2, model=str(smollm2_rm))
    episode = score([t, longer], tasks * 2, model=str(smollm2_rm), conversation="episode")
    assert final[0] == pytest.approx(final[1], abs=1e-5)  # same prompt and final answer
    assert episode[0] == pytest.approx(final[0], abs=1e-5)  # nothing in between
    assert abs(episode[1] - final[1]) > 1e-4  # the tool turns are read


def test_through_the_composition_and_documented(plugin_manager, smollm2_rm, batch):
    plugin_manager.register(plugin, name="rewards_model")
    trajs, tasks = batch(ROWS[:3])
    direct = score(trajs, tasks, model=str(smollm2_rm), normalize="sigmoid")
    results, metrics = compute_rewards_sync(trajs, tasks, [{"name": "reward_model", "weight": 2.0,
                                                            "args": {"model": str(smollm2_rm), "normalize": "sigmoid"}}])
    assert [r.total for r in results] == pytest.approx([2 * v for v in direct], abs=1e-6)
    assert metrics["reward/excluded"] == 0.0
    with pytest.raises(RewardError, match=r"does not accept the argument\(s\) \['modle'\]"):
        prepare_rewards([{"name": "reward_model", "args": {"modle": "x"}}])
    doc = inspect.getdoc(reward_model)
    for p in inspect.signature(reward_model).parameters:
        assert f"    {p}:" in doc or p == "trajectories", p


@pytest.fixture
def local_ray():
    """A local Ray instance (reward_model would start one itself; started here with retries, because Ray
    gives a raylet only 30 s to register and a loaded 2-core machine can miss that)."""
    ray = pytest.importorskip("ray")
    for attempt in range(3):
        try:
            ray.init(num_cpus=2, include_dashboard=False)
            break
        except Exception:  # noqa: BLE001 - "The current node timed out during startup"
            ray.shutdown()
            if attempt == 2:
                raise
    yield ray

    for actor in rm_module._ACTORS.values():
        ray.kill(actor)
    rm_module._ACTORS.clear()
    if ray.is_initialized():
        ray.shutdown()


def test_ray_actor_scores_like_in_process(smollm2_rm, batch, local_ray):
    ray = local_ray
    trajs, tasks = batch(ROWS)
    local = score(trajs, tasks, model=str(smollm2_rm), batch_size=2)
    remote = score(trajs, tasks, model=str(smollm2_rm), batch_size=2, ray_actor=True, num_cpus=1)
    assert remote == pytest.approx(local, abs=1e-5)
    (actor,) = rm_module._ACTORS.values()
    assert ray.get(actor.ready.remote()) != os.getpid()  # the model lives in another process
    score(trajs[:1], tasks[:1], model=str(smollm2_rm), ray_actor=True, num_cpus=1)
    assert list(rm_module._ACTORS.values()) == [actor]  # reused, not restarted
    with pytest.raises(RewardError, match=r"the actor asks for 64 CPU\(s\)") as info:
        score(trajs[:1], tasks[:1], model=str(smollm2_rm), ray_actor=True, num_cpus=64)
    assert "num_cpus" in info.value.where
    with pytest.raises(RewardError, match="label 5 does not exist"):  # an error inside the actor keeps its message
        score(trajs[:1], tasks[:1], model=str(smollm2_rm), ray_actor=True, num_cpus=1, label=5)
