"""Streaming text assembly with the real SmolLM2 tokenizer: deltas add up to the non-streamed text."""

from __future__ import annotations

import random

import pytest

from toolrl_serving.textstream import TextStream, cut_at_stop, final_text


@pytest.fixture(scope="module")
def tok(smollm2_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2_path))


TEXTS = [
    "Hello, world! Ça va? 日本語のテキスト and emoji 🎉🎉 done.",
    "Line one\nLine two\n\n<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>",
    "   leading spaces and trailing   ",
]


def _stream(tok, ids, chunk, **kw):
    ts = TextStream(tok, **kw)
    out = [ts.push(ids[i:i + chunk]) for i in range(0, len(ids), chunk)]
    full = ts.finish()
    out.append(ts.rest(full))
    return "".join(out), full, ts


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("chunk", [1, 3])
def test_deltas_add_up(tok, text, chunk):
    ids = tok.encode(text, add_special_tokens=False)
    joined, full, _ = _stream(tok, ids, chunk)
    assert joined == full == tok.decode(ids)


def test_no_partial_utf8_is_sent(tok):
    ids = tok.encode("🎉", add_special_tokens=False)
    assert len(ids) > 1  # byte-level pieces
    ts = TextStream(tok)
    sent = [ts.push([i]) for i in ids]
    assert all("\ufffd" not in s for s in sent)
    assert "".join(sent) == "🎉"


def test_stop_string_cut_and_held_back(tok):
    text = "The answer is 42. STOP here and more text"
    ids = tok.encode(text, add_special_tokens=False)
    ts = TextStream(tok, stop=["STOP"])
    sent = ""
    for i in ids:
        sent += ts.push([i])
        assert "ST" not in sent or sent.endswith("The answer is 42. ") is False
        if ts.stopped:
            break
    assert ts.stopped
    full = ts.finish()
    sent += ts.rest(full)
    assert sent == full == "The answer is 42. "
    assert "S" not in sent


def test_random_stop_strings_match_non_streaming(tok):
    rng = random.Random(0)
    text = TEXTS[0] * 3
    ids = tok.encode(text, add_special_tokens=False)
    decoded = tok.decode(ids)
    for _ in range(30):
        a = rng.randrange(0, len(decoded) - 3)
        stop = decoded[a:a + rng.randint(1, 3)]
        joined, full, _ = _stream(tok, ids, rng.randint(1, 4), stop=[stop])
        assert full == final_text(tok, ids, [stop])[0] == decoded[: decoded.index(stop)]
        assert joined == full


def test_tool_call_markup_is_held(tok):
    text = 'Sure.\n<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>'
    ids = tok.encode(text, add_special_tokens=False)
    ts = TextStream(tok, hold_markers=("<tool_call>",))
    sent = "".join(ts.push([i]) for i in ids)
    assert sent == "Sure.\n" and ts.holding
    assert "<" not in sent


def test_leading_json_is_held(tok):
    ids = tok.encode('  {"name": "f", "arguments": {}}', add_special_tokens=False)
    ts = TextStream(tok, hold_leading=("{", "["))
    assert "".join(ts.push([i]) for i in ids) == ""
    ids = tok.encode("Plain answer {with braces}", add_special_tokens=False)
    ts = TextStream(tok, hold_leading=("{", "["))
    assert "".join(ts.push([i]) for i in ids) == "Plain answer {with braces}"


def test_cut_at_stop_earliest():
    assert cut_at_stop("abcXdefY", ["Y", "X"]) == ("abc", True)
    assert cut_at_stop("abc", ["Z"]) == ("abc", False)
