"""`toolrl doctor --model`: the template checks on the real tokenizers and on a broken template."""

import copy

from transformers import AutoTokenizer

from toolrl.chat.template_check import check_model_template, check_tokenizer


def test_both_real_models_pass(smollm2_path, qwen05_path):
    smol = check_model_template(str(smollm2_path))
    assert smol["ok"] and smol["append_only"] and smol["token_exact"], smol["detail"]
    assert smol["template_renders_tools"] is False and "system prompt" in smol["detail"]
    qwen = check_model_template(str(qwen05_path))
    assert qwen["ok"], qwen["detail"]
    assert qwen["template_renders_tools"] is True
    assert qwen["parsers"]["auto (template's own call format)"] == "ok"
    assert set(qwen["parsers"]) >= {"hermes", "json_block", "auto"}


def test_a_template_that_rewrites_history_fails_with_the_reason(smollm2_path):
    tok = copy.deepcopy(AutoTokenizer.from_pretrained(smollm2_path))
    # drops the content of earlier assistant turns (as reasoning templates do with <think>)
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\\n"
        "{% if m.role == 'assistant' and not loop.last %}[hidden]{% else %}{{ m.content }}{% endif %}"
        "<|im_end|>\\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\\n{% endif %}")
    report = check_tokenizer(tok)
    assert not report["ok"] and not report["append_only"] and not report["token_exact"]
    assert "changes the text before them" in report["detail"]


def test_doctor_reports_the_template(smollm2_path, monkeypatch):
    from toolrl import doctor

    monkeypatch.setattr(doctor, "_check_docker", lambda: {"ok": False, "detail": "skipped in this test"})
    report = doctor.run_checks(model=str(smollm2_path))
    assert report["template"]["ok"] is True and "append-only" in report["template"]["detail"]
