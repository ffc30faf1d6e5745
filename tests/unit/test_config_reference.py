"""docs/config.md is generated from the config types and must stay in sync."""

from pathlib import Path

from toolrl.config import Config
from toolrl.config_reference import render_reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def test_config_reference_is_current():
    assert DOC.read_text() == render_reference(), (
        "docs/config.md is out of date: run `toolrl config reference --out docs/config.md`")


def test_every_field_has_a_description():
    def walk(model, prefix):
        for name, field in model.model_fields.items():
            key = f"{prefix}.{name}" if prefix else name
            ann = field.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                walk(ann, key)
            else:
                assert field.description, f"config key {key} has no description"

    walk(Config, "")
