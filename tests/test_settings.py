"""Settings: environment, secret files, and the README table that documents them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import SecretStr

from pachyderm import Settings, load_settings

README = Path(__file__).resolve().parents[1] / "README.md"


def test_environment_variables_with_the_prefix_configure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACHYDERM_PARTITIONS", "32")
    monkeypatch.setenv("PACHYDERM_NAMESPACE", "team_a")
    settings = load_settings()
    assert (settings.partitions, settings.namespace) == (32, "team_a")


def test_secret_files_are_read_and_never_shown(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "PACHYDERM_DATABASE_URL").write_text("postgresql://app:hunter2@db/prod")
    monkeypatch.setenv("PACHYDERM_SECRETS_DIR", str(tmp_path))
    settings = load_settings()
    assert settings.database_url.get_secret_value() == "postgresql://app:hunter2@db/prod"
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.model_dump())


def test_invalid_settings_are_refused_with_the_field_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PACHYDERM_NAMESPACE", "Bad Name")
    with pytest.raises(ValueError, match="namespace"):
        load_settings()


def test_every_setting_is_in_the_readme_table_with_its_default() -> None:
    rows = dict(re.findall(r"^\| `PACHYDERM_(\w+)` \| ([^|]+) \|", README.read_text(), re.M))
    for name, field in Settings.model_fields.items():
        assert name.upper() in rows, f"PACHYDERM_{name.upper()} is missing from README.md"
        default = field.default
        if isinstance(default, SecretStr):
            default = default.get_secret_value()
        shown = "none" if default in (None, "") else f"`{default}`"
        assert rows[name.upper()].strip() == shown, f"README shows the wrong default of {name}"
    assert set(rows) == {name.upper() for name in Settings.model_fields}
