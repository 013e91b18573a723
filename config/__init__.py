"""The service's settings: one typed object read from the environment and `.env` (`config.settings`)."""

from .settings import DEFAULT_MODEL, DEFAULT_ONLINE_MODEL, PROJECT_ROOT, Settings, get_settings

__all__ = ["DEFAULT_MODEL", "DEFAULT_ONLINE_MODEL", "PROJECT_ROOT", "Settings", "get_settings"]
