"""Settings: one pydantic-settings model read from `TXGATE_*` variables and an optional TOML file."""

from txgate.config.settings import Settings, load_settings

__all__ = ["Settings", "load_settings"]
