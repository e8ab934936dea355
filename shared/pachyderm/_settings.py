"""Settings from environment variables (prefix ``PACHYDERM_``) and ``.env`` files."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything a Pachyderm process reads from its environment.

    ``PACHYDERM_DATABASE_URL`` may carry a password, so it is a secret: it
    never appears in ``repr`` or logs.
    """

    model_config = SettingsConfigDict(env_prefix="PACHYDERM_", env_file=".env", extra="ignore")

    database_url: SecretStr = Field(
        SecretStr("sqlite:///pachyderm.db"),
        description="postgresql://user:password@host/db, or sqlite:///path for embedded mode",
    )
    namespace: str = Field(
        "pachyderm",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="isolates fleets sharing one database (the PostgreSQL schema)",
    )
    app: str | None = Field(None, description="the app to serve, as module or module:attribute")
    snapshot_every: int = Field(100, ge=0, description="snapshot every N events; 0 turns it off")
