"""txgate's settings.

Sources, strongest first: keyword overrides (CLI options), `TXGATE_*` environment variables,
the TOML file named by `TXGATE_CONFIG` (or `<data dir>/txgate.toml` when present), defaults.
Nothing is read at import time: callers build a `Settings` with `load_settings()`.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from txgate.core.errors import InvalidParams


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TXGATE_", extra="ignore")

    data_dir: Path = Field(
        default=Path(".txgate"), description="Folder for the SQLite database, keys and demo.json"
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy async URL; default SQLite in the data folder"
    )

    # Chain access: one node URL per supported chain; chain ids are read from the nodes.
    rpc_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    confirmations: int = Field(default=1, ge=1, le=1000)
    poll_interval: float = Field(default=0.25, gt=0, le=60)

    # Custodian HTTP service.
    custodian_host: str = "127.0.0.1"
    custodian_port: int = Field(default=8545 + 1000, ge=0, le=65535)
    public_url: str | None = Field(
        default=None, description="Base URL the custodian is reached at (links, JWT issuer)"
    )
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    access_token_ttl: int = Field(default=600, ge=10, description="Seconds an access token lives")
    refresh_token_ttl: int | None = Field(
        default=None, ge=60, description="Seconds a refresh token lives; none = until revoked"
    )
    rotate_refresh_tokens: bool = False
    customer_proof_ttl: int = Field(default=300, ge=10)
    approval_ttl: int = Field(
        default=24 * 3600, ge=1, description="Seconds a request may wait for approval"
    )

    # Key vault: exactly one source of the key-encryption key.
    vault_passphrase: SecretStr | None = None
    vault_key_file: Path | None = None

    # Demo chain (anvil) for `txgate up`.
    anvil_port: int = Field(default=8545, ge=0, le=65535)

    log_level: str = "info"
    log_json: bool = False

    @field_validator("rpc_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.lstrip().startswith("["):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'txgate.db').resolve()}"

    @property
    def resolved_vault_key_file(self) -> Path | None:
        """The configured key file, else `<data dir>/vault.key` when `txgate up` made one."""
        if self.vault_key_file is not None:
            return self.vault_key_file
        default = self.data_dir / "vault.key"
        return default if self.vault_passphrase is None and default.exists() else None

    @property
    def custodian_url(self) -> str:
        return self.public_url or f"http://{self.custodian_host}:{self.custodian_port}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlSource(settings_cls))


class _TomlSource(PydanticBaseSettingsSource):
    """Values from the TOML file: `TXGATE_CONFIG`, else `<data dir>/txgate.toml` if it exists."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("TXGATE_CONFIG")
        if path is None:
            data_dir = Path(os.environ.get("TXGATE_DATA_DIR", ".txgate"))
            candidate = data_dir / "txgate.toml"
            if not candidate.exists():
                return {}
            path = str(candidate)
        with open(path, "rb") as handle:
            return tomllib.load(handle)


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment and config file, with CLI options (non-None) on top.

    Invalid values raise `InvalidParams` naming the setting, never a pydantic traceback."""
    try:
        return Settings(**{key: value for key, value in overrides.items() if value is not None})
    except ValidationError as error:
        first = error.errors()[0]
        name = ".".join(str(part) for part in first["loc"])
        raise InvalidParams(
            f"setting {name} (TXGATE_{name.upper()}): {first['msg']}", param=name
        ) from None
    except (SettingsError, OSError, tomllib.TOMLDecodeError) as error:
        raise InvalidParams(f"settings could not be read: {error}") from None
