"""`toolrl doctor --model M`: can the agent loop use this model's chat template?

Checks, on a reference multi-turn tool conversation (system, user, a call,
its result, two calls, their results, a final answer):

1. append-only text: rendering messages[:k+1] starts with the rendering of
   messages[:k], for every k;
2. token-exact increments: prompt ids + each assistant turn's ids + the ids the
   loop appends for tool messages (`ChatFormat.tool_suffix_ids`) equal the
   tokenization of the whole conversation rendered at once (this is what
   makes trajectories equal the template's rendering);
3. every registered tool parser reads back the calls it renders, and the
   `auto` parser reads the calls the template itself writes (when it writes any).
"""

from __future__ import annotations

import json
from typing import Any

from toolrl.types import ToolCall

TOOLS = [{"type": "function", "function": {
    "name": "calculator", "description": "Evaluate an arithmetic expression",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}}]


def _conversation(parser: Any) -> list[dict[str, Any]]:
    one = [ToolCall("calculator", {"expression": "17*23"})]
    two = [ToolCall("calculator", {"expression": "391+58"}), ToolCall("calculator", {"expression": "2*3"})]
    return [
        {"role": "system", "content": "You are a careful assistant."},
        {"role": "user", "content": "What is 17*23+58, and 2*3?"},
        {"role": "assistant", "content": parser.render(one)},
        {"role": "tool", "content": "391", "tool_call_id": "call_1_0"},
        {"role": "assistant", "content": "Next:\n" + parser.render(two)},
        {"role": "tool", "content": "449", "tool_call_id": "call_2_0"},
        {"role": "tool", "content": "6", "tool_call_id": "call_2_1"},
        {"role": "assistant", "content": "17*23+58 = 449 and 2*3 = 6."},
    ]


def check_tokenizer(tokenizer: Any) -> dict[str, Any]:
    """The checks on a loaded tokenizer; returns {ok, detail, append_only, token_exact, ...}."""
    from toolrl import plugins
    from toolrl.chat.parsers import get_parser
    from toolrl.chat.template import ChatFormat, TemplateError

    report: dict[str, Any] = {}
    problems: list[str] = []
    try:
        fmt = ChatFormat.of(tokenizer)
    except TemplateError as exc:
        return {"ok": False, "detail": str(exc)}
    info = fmt.info
    eot = info.end_of_turn_ids[0]
    report.update(template_renders_tools=info.uses_tools, tool_role=info.tool_role,
                  end_of_turn=tokenizer.convert_ids_to_tokens(eot), turn_close=info.turn_close)
    msgs = _conversation(get_parser("hermes"))

    # 1. append-only text, at the boundaries the loop appends at: after each assistant turn and
    #    after each group of tool results (templates such as Qwen's merge consecutive tool messages)
    append_only = True
    cuts = [2] + [k for k in range(3, len(msgs) + 1) if msgs[k - 1]["role"] == "assistant"
                  or (msgs[k - 1]["role"] == "tool" and (k == len(msgs) or msgs[k]["role"] != "tool"))]
    for a_end, b_end in zip(cuts, cuts[1:]):
        a, b = fmt.render_text(msgs[:a_end], TOOLS), fmt.render_text(msgs[:b_end], TOOLS)
        if not b.startswith(a):
            append_only = False
            problems.append(f"adding messages {a_end}..{b_end - 1} ({msgs[a_end]['role']}) changes the text before them")
            break
    report["append_only"] = append_only

    # 2. token-exact increments, the way the agent loop builds a trajectory
    try:
        ids = fmt.prompt_ids(msgs[:2], TOOLS)
        i = 2
        while i < len(msgs):
            sampled = fmt.encode(msgs[i]["content"]) + [eot]
            ids += sampled
            j = i + 1
            while j < len(msgs) and msgs[j]["role"] == "tool":
                j += 1
            if j > i + 1:
                ids += fmt.tool_suffix_ids(sampled, msgs[i + 1 : j], TOOLS)
            i = j
        full = fmt.encode(fmt.render_text(msgs, TOOLS))
        rest = fmt.encode(fmt.turn_close_remainder([eot]))
        token_exact = full == ids + rest
        if not token_exact:
            at = next((n for n, (x, y) in enumerate(zip(full, ids)) if x != y), min(len(full), len(ids)))
            problems.append(
                f"incremental ids differ from the one-shot rendering at token {at}: "
                f"{tokenizer.decode(ids[max(0, at - 8): at + 8])!r} vs {tokenizer.decode(full[max(0, at - 8): at + 8])!r}")
    except TemplateError as exc:
        token_exact = False
        problems.append(str(exc))
    report["token_exact"] = token_exact

    # 3. parsers: each reads back what it renders; auto reads the template's own call rendering
    parsers: dict[str, str] = {}
    calls = [ToolCall("calculator", {"expression": "2*(3+4)", "note": "é"})]
    for name in plugins.registry("tool_parsers").names():
        try:
            p = get_parser(name)
            got = p.parse(p.render(calls)).tool_calls
            same = [(c.name, dict(c.arguments)) for c in got] == [(c.name, dict(c.arguments)) for c in calls]
            parsers[name] = "ok" if same else f"read back {[(c.name, dict(c.arguments)) for c in got]}"
        except Exception as exc:
            parsers[name] = f"{type(exc).__name__}: {exc}"
        if parsers[name] != "ok":
            problems.append(f"parser {name}: {parsers[name]}")
    native = _template_call_text(fmt)
    if native is not None:
        got = get_parser("auto").parse(native).tool_calls
        ok = [(c.name, dict(c.arguments)) for c in got] == [("calculator", {"expression": "17*23"})]
        parsers["auto (template's own call format)"] = "ok" if ok else f"cannot read {native!r}"
        if not ok:
            problems.append(f"the auto parser cannot read the template's own tool-call format: {native!r}")
    report["parsers"] = parsers

    report["ok"] = not problems
    tools_note = ("renders tools= itself" if info.uses_tools
                  else "ignores tools= (toolrl writes the tool schemas into the system prompt)")
    if problems:
        report["detail"] = "; ".join(problems)
    else:
        report["detail"] = (f"append-only and token-exact; template {tools_note}; end of turn "
                            f"{report['end_of_turn']!r}; parsers: {', '.join(f'{k} {v}' for k, v in parsers.items())}")
    report["problems"] = problems
    return report


def _template_call_text(fmt: Any) -> str | None:
    """How the template itself writes an assistant tool call (None if it ignores tool_calls)."""
    user = [{"role": "user", "content": "x"}]
    call = {"id": "c1", "type": "function", "function": {"name": "calculator", "arguments": {"expression": "17*23"}}}
    try:
        prefix = fmt.render_text(user, add_generation_prompt=True)
        base = fmt.render_text([*user, {"role": "assistant", "content": ""}])
        with_call = fmt.render_text([*user, {"role": "assistant", "content": "", "tool_calls": [call]}])
    except Exception:
        return None
    if with_call == base or "calculator" not in with_call:
        return None
    if with_call.startswith(prefix):
        text = with_call[len(prefix):]
    else:  # cut after the last line break both renderings share
        common = 0
        while common < min(len(base), len(with_call)) and base[common] == with_call[common]:
            common += 1
        text = with_call[with_call.rfind("\n", 0, common) + 1 :]
    close = fmt.info.turn_close
    return text[: -len(close)] if close and text.endswith(close) else text


def check_model_template(model: str) -> dict[str, Any]:
    """Resolve `model` (a registry name or a local folder), load its tokenizer, run the checks."""
    from transformers import AutoTokenizer

    from toolrl import models

    path = models.resolve(model, progress=False)
    report = check_tokenizer(AutoTokenizer.from_pretrained(str(path)))
    report["model_path"] = str(path)
    return report


if __name__ == "__main__":  # python -m toolrl.chat.template_check MODEL
    import sys

    print(json.dumps(check_model_template(sys.argv[1]), indent=2))
