"""Shared test helpers: a model call built from BFCL's possible answer (the first acceptable value each)."""


def pick(value):
    if isinstance(value, dict):
        return {k: first(v) for k, v in value.items() if v[0] != ""}
    if isinstance(value, list):
        return [pick(x) for x in value]
    return value


def first(acceptable):
    return pick(acceptable[0])


def answer_calls(ground_truth):
    calls = []
    for call in ground_truth or []:
        (name, params), = call.items()
        calls.append({"name": name, "arguments": {k: first(v) for k, v in params.items() if v[0] != ""}})
    return calls
