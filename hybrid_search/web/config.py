"""The web layer's own options (sign-in, cookies, limits), resolved into Flask's config.

They are written as `Setting` rows so they can move into the settings table unchanged. Until
then they are read, lowest first, from: these defaults, the settings table (once it has a row
of the same name), environment variables `HYBRID_WEB_<NAME>`, then `create_app`'s
`test_config` (upper-case names). Each lands in `app.config` under its upper-case name.

The prefix is not `HYBRID_SEARCH_WEB_`: `load_settings` refuses every `HYBRID_SEARCH_*`
variable that is not in its table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..exceptions import ConfigError
from ..settings import Setting, Settings

__all__ = ["ENV_PREFIX", "WEB_OPTIONS", "resolve_options"]

ENV_PREFIX = "HYBRID_WEB_"

WEB_OPTIONS: tuple[Setting, ...] = (
    Setting("admin_password", "", "Password of the admin account that may add, edit and delete "
            "photos. Empty: one is generated on the first `serve` and printed once. Kept only "
            "as a hash in <data_dir>/web/admin.json."),
    Setting("secret_key", "", "Key that signs session cookies. Empty: a random key kept in "
            "<data_dir>/web/secret_key (created on first run)."),
    Setting("require_login", False, "Require sign-in to search and view photos too, not only "
            "to change them."),
    Setting("cookie_secure", "auto", "Secure flag of the session cookie: 'auto' (set when the "
            "request came over https), 'always' or 'never'.",
            choices=("auto", "always", "never")),
    Setting("session_days", 14, "How long a sign-in lasts, in days.", minimum=1),
    Setting("login_attempts", 5, "Failed sign-ins allowed per client address within "
            "login_window_s seconds.", minimum=1),
    Setting("login_window_s", 300, "Window, in seconds, of the sign-in rate limit.", minimum=1),
    Setting("query_image_ttl_s", 3600, "Seconds an uploaded query image is kept in "
            "<data_dir>/queries/ after its last use.", minimum=60),
    Setting("max_files_per_upload", 20, "Most photos one upload request may carry.", minimum=1),
    Setting("server_threads", 8, "Worker threads of the waitress server.", minimum=1),
    Setting("trusted_proxy", "", "Address of a reverse proxy whose X-Forwarded-For and "
            "X-Forwarded-Proto headers waitress may trust ('' trusts none)."),
)


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
