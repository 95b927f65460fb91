"""The web layer's own options (sign-in, cookies, limits), resolved into Flask's config.

They are rows of the settings table (so `HYBRID_SEARCH_<NAME>` and config files set them);
`HYBRID_WEB_<NAME>` environment variables and `create_app`'s `test_config` (upper-case
names) override them. Each lands in `app.config` under its upper-case name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..exceptions import ConfigError
from ..settings import SETTINGS, Setting, Settings

__all__ = ["ENV_PREFIX", "WEB_OPTIONS", "resolve_options"]

ENV_PREFIX = "HYBRID_WEB_"

WEB_NAMES = (
    "admin_password", "secret_key", "require_login", "cookie_secure", "session_days",
    "login_attempts", "login_window_s", "query_image_ttl_s", "max_files_per_upload",
    "server_threads", "trusted_proxy",
)
WEB_OPTIONS: tuple[Setting, ...] = tuple(s for s in SETTINGS if s.name in WEB_NAMES)


def _coerce(option: Setting, raw: Any, source: str) -> Any:
    """Turn a raw value into the option's type, or raise ConfigError."""
    kind = option.type
    value: Any
    if kind is bool:
        if isinstance(raw, bool):
            value = raw
        elif isinstance(raw, str) and raw.lower() in {"1", "true", "yes", "on"}:
            value = True
        elif isinstance(raw, str) and raw.lower() in {"0", "false", "no", "off", ""}:
            value = False
        else:
            raise ConfigError(f"web option {option.name} from {source}: expected true or "
                              f"false, got {raw!r}")
    elif kind is int:
        try:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError(raw)
            value = int(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"web option {option.name} from {source}: expected a whole "
                              f"number, got {raw!r}") from None
    else:
        value = "" if raw is None else str(raw)
    if option.choices and value not in option.choices:
        raise ConfigError(f"web option {option.name} from {source}: {value!r} is not one of "
                          + ", ".join(option.choices))
    if option.minimum is not None and value < option.minimum:
        raise ConfigError(f"web option {option.name} from {source}: {value} < {option.minimum}")
    return value


def resolve_options(
    settings: Settings, env: Mapping[str, str], test_config: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Every web option's value, keyed by its upper-case name."""
    out: dict[str, Any] = {}
    for option in WEB_OPTIONS:
        key = option.name.upper()
        value = option.default
        if option.name in settings.values:
            value = _coerce(option, settings.values[option.name], "settings")
        if ENV_PREFIX + key in env:
            value = _coerce(option, env[ENV_PREFIX + key], "environment")
        if test_config is not None and key in test_config:
            value = _coerce(option, test_config[key], "test_config")
        out[key] = value
    return out
