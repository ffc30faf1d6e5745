"""Auth, settings, error rendering and the import boundary (no model, no server)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from fastapi.security import HTTPAuthorizationCredentials

from toolrl.errors import ToolrlError
from toolrl_serving.auth import check_credentials, key_matches
from toolrl_serving.errors import APIError, _loc_to_param, validation_message
from toolrl_serving.settings import Limits, ServerSettings, api_keys_from_env


def test_key_matches_constant_time_over_all_keys(monkeypatch):
    import hmac

    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    assert key_matches("k2", ("k1", "k2", "k3"))
    assert len(calls) == 3  # no early exit: every key is compared
    assert not key_matches("k", ("k1", "k2"))
    assert not key_matches("", ("k1",))
    assert key_matches("é-key", ("é-key",))


def test_check_credentials():
    check_credentials(None, ())  # no keys configured: open
    with pytest.raises(APIError) as e:
        check_credentials(None, ("a",))
    assert e.value.status == 401 and e.value.code == "missing_api_key"
    with pytest.raises(APIError) as e:
        check_credentials(HTTPAuthorizationCredentials(scheme="Bearer", credentials="b"), ("a",))
    assert e.value.code == "invalid_api_key"
    check_credentials(HTTPAuthorizationCredentials(scheme="Bearer", credentials="a"), ("a",))


def test_api_keys_from_env(monkeypatch):
    assert api_keys_from_env(None) == ()
    monkeypatch.setenv("K", " a , b ,,")
    assert api_keys_from_env("K") == ("a", "b")
    monkeypatch.setenv("K", "")
    with pytest.raises(ToolrlError) as e:
        api_keys_from_env("K")
    assert "K" in str(e.value) and "export" in str(e.value)
    monkeypatch.delenv("K")
    with pytest.raises(ToolrlError):
        api_keys_from_env("K")


def test_settings_model_name_and_validation(tmp_path):
    assert ServerSettings(model="smollm2-135m-instruct").model_name == "smollm2-135m-instruct"
    assert ServerSettings(model=str(tmp_path)).model_name == tmp_path.name
    assert ServerSettings(model="x", served_model_name="mine").model_name == "mine"
    with pytest.raises(ValueError):
        ServerSettings(model="x", api_keys=("ok", " "))
    with pytest.raises(ValueError):
        Limits(max_n=0)


def test_validation_messages_name_the_field():
    assert _loc_to_param(("body", "messages", 0, "content")) == "messages[0].content"
    assert _loc_to_param(("body", "stop", "list[str]", 2)) == "stop[2]"
    assert _loc_to_param(("body",)) is None
    msg, param = validation_message([{"type": "json_invalid", "loc": ("body", 10), "msg": "x",
                                      "ctx": {"error": "Expecting value"}}])
    assert "not valid JSON" in msg and param is None
    msg, param = validation_message([{"type": "missing", "loc": ("body", "model"), "msg": "Field required"}])
    assert param == "model" and "model: Field required" in msg


def test_build_settings_from_cli_options(monkeypatch):
    from toolrl_serving.cli import build_settings

    monkeypatch.setenv("KEYS", "one,two")
    s = build_settings(model="m", api_key_env="KEYS", max_tokens=64, max_n=None, max_queue=3)
    assert s.api_keys == ("one", "two") and s.limits.max_tokens == 64 and s.limits.max_n == Limits().max_n
    assert s.max_queue == 3


def test_importing_the_app_stays_light():
    """No Ray, no training code, not even torch: the app module imports in a bare interpreter."""
    code = ("import sys, json, toolrl_serving.app, toolrl_serving.cli; "
            "print(json.dumps([m for m in ('ray', 'toolrl.trainer', 'torch', 'transformers') if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_toolrl_serve_fails_fast_on_unknown_model():
    """`toolrl serve` (the main CLI) hands over to toolrl_serving; a bad model name is one clear error, exit 2."""
    import shutil

    toolrl = shutil.which("toolrl", path=str(__import__("pathlib").Path(sys.executable).parent))
    out = subprocess.run([toolrl, "serve", "no-such-model-xyz"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out
    assert "unknown model 'no-such-model-xyz'" in out.stderr and "Fix:" in out.stderr
    assert "Traceback" not in out.stderr
