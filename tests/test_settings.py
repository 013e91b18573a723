from pathlib import Path

import pytest
from pydantic import ValidationError

from config.settings import DEFAULT_MODEL, PROJECT_ROOT, Settings


def test_defaults_match_the_reference_deployment():
    s = Settings(_env_file=None)
    assert (s.host, s.port, s.queue_max_size) == ("0.0.0.0", 7860, 20)
    assert s.model == DEFAULT_MODEL and s.model_dir is None
    assert s.enable_vad and s.enable_punc and s.device == "auto"
    assert s.batch_max_files == 20


def test_environment_overrides_env_file(tmp_path, monkeypatch):
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=9000\nDEFAULT_HOTWORDS=科哥,Paraformer\nMODEL_DIR=\n", encoding="utf-8")
    assert Settings(_env_file=env_file).port == 9000
    monkeypatch.setenv("PORT", "9100")
    s = Settings(_env_file=env_file)
    assert s.port == 9100
    assert s.default_hotwords == "科哥,Paraformer"
    assert s.model_dir is None  # an empty value means "not set", not the current folder


def test_invalid_values_are_rejected_with_the_key_named():
    with pytest.raises(ValidationError, match="port"):
        Settings(_env_file=None, port=0)
    with pytest.raises(ValidationError, match="log_level"):
        Settings(_env_file=None, log_level="LOUD")


def _documented_keys() -> dict[str, str]:
    keys = {}
    for line in (PROJECT_ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            keys[key] = value
    return keys


def test_env_example_documents_every_setting_with_its_default():
    documented = _documented_keys()
    defaults = Settings(_env_file=None)
    for name, _field in Settings.model_fields.items():
        assert name.upper() in documented, f"{name.upper()} missing from .env.example"
        value = getattr(defaults, name)
        if value is None:
            assert documented[name.upper()] == ""
        elif isinstance(value, Path):
            assert PROJECT_ROOT / documented[name.upper()] == value
        elif isinstance(value, bool):
            assert documented[name.upper()] == str(value).lower()
        elif hasattr(value, "get_secret_value"):
            continue
        else:
            assert type(value)(documented[name.upper()]) == value, name


def test_env_example_loads_as_the_defaults():
    assert Settings(_env_file=PROJECT_ROOT / ".env.example") == Settings(_env_file=None)


def test_relative_paths_are_inside_the_project(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("MODEL_DIR=models/tiny-seaco\nLOG_DIR=/var/log/asr\n", encoding="utf-8")
    s = Settings(_env_file=env_file)
    assert s.model_dir == PROJECT_ROOT / "models" / "tiny-seaco"
    assert s.log_dir == Path("/var/log/asr")
