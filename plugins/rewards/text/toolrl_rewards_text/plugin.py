"""The toolrl entry point of toolrl-rewards-text: registers its seven rewards."""

from toolrl import hookimpl

from toolrl_rewards_text.format import format_answer_tag, format_tool_call
from toolrl_rewards_text.model_based import bertscore_f1
from toolrl_rewards_text.overlap import bleu2, keyword_recall
from toolrl_rewards_text.shaping import length_penalty, reasoning_connectors

REWARDS = {
    "format_tool_call": format_tool_call,
    "format_answer_tag": format_answer_tag,
    "reasoning_connectors": reasoning_connectors,
    "length_penalty": length_penalty,
    "bleu2": bleu2,
    "keyword_recall": keyword_recall,
    "bertscore_f1": bertscore_f1,
}


@hookimpl
def register_rewards(register):
    for name, fn in REWARDS.items():
        register(name, fn)
