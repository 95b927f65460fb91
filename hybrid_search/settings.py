"""The one table of settings, and loading them from defaults, config files and the environment.

Precedence, lowest first: the table's defaults, `config/default.toml`, a user config file
(`--config FILE`, `HYBRID_SEARCH_CONFIG`, or `config.toml` in the data directory), then
environment variables `HYBRID_SEARCH_<NAME>` (upper-case name).
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .exceptions import ConfigError

__all__ = ["ENV_PREFIX", "SETTINGS", "Setting", "Settings", "load_settings"]

ENV_PREFIX = "HYBRID_SEARCH_"
REPO_CONFIG = Path(__file__).resolve().parent.parent / "config" / "default.toml"


@dataclass(frozen=True)
class Setting:
    """One setting: its name, default, type, allowed values and help text."""

    name: str
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None

    @property
    def type(self) -> type:
        """The Python type values of this setting have."""
        return type(self.default)


SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", "~/.local/share/hybrid-search",
            "Directory holding the SQLite file, the Whoosh index and derived files."),
    Setting("model", "efficientnet-lite0",
            "Image embedding model: 'efficientnet-lite0' (bundled, offline) or "
            "'clip:<open_clip model name>'.",),
    Setting("clip_pretrained", "",
            "For a CLIP model: an open_clip pretrained tag or a path to a local checkpoint."),
    Setting("metric", "cosine", "Image distance: cosine similarity of L2-normalised vectors, "
            "or euclidean distance (scored as its negative).", choices=("cosine", "euclidean")),
    Setting("fusion", "linear", "How text and image scores become one ranking: 'linear' "
            "(weighted sum of normalised scores) or 'rrf' (reciprocal rank fusion).",
            choices=("linear", "rrf")),
    Setting("normalization", "minmax", "Score normalisation before linear fusion.",
            choices=("minmax", "zscore")),
    Setting("alpha", 0.5, "Weight of the image side in fusion (text gets 1 - alpha).",
            minimum=0.0, maximum=1.0),
    Setting("unannotated_prior", 0.5, "Linear min-max fusion only: the score a photo with no "
            "words gets from the keyword and meaning signals (0..1: a neutral 'unknown'), or -1 "
            "to leave those signals out of its weighted mean.", minimum=-1.0, maximum=1.0),
    Setting("rrf_k", 60, "The k in reciprocal rank fusion 1/(k + rank).", minimum=1),
    Setting("candidates", 100, "Candidates each signal returns before fusion (at least "
            "offset + limit).", minimum=1),
    Setting("limit", 10, "Results per page when a query names no limit.", minimum=1, maximum=1000),
    Setting("boost_title", 3.0, "BM25F weight of the title field.", minimum=0.0),
    Setting("boost_tags", 2.0, "BM25F weight of the tags field.", minimum=0.0),
    Setting("boost_description", 1.0, "BM25F weight of the description field.", minimum=0.0),
    Setting("boost_auto_tags", 0.5, "BM25F weight of machine-made tags (below manual tags).",
            minimum=0.0),
    Setting("auto_tags", True, "Tag new photos with the CNN's ImageNet labels (source 'auto').",),
    Setting("auto_tag_threshold", 0.3, "Smallest ImageNet probability that becomes an auto-tag.",
            minimum=0.0, maximum=1.0),
    Setting("auto_tag_max", 5, "Most auto-tags per photo.", minimum=0, maximum=50),
    Setting("zero_shot", True, "Let words find photos by what they show (ConSE with the bundled "
            "models, or CLIP's text tower when a CLIP model is active).",),
    Setting("semantic", True, "Match the meaning of the words against annotations (MiniLM "
            "sentence embeddings), so 'automobile' finds a photo annotated 'car'.",),
    Setting("weight_text", 1.0, "Share of the keyword (BM25F) signal within the text side.",
            minimum=0.0),
    Setting("weight_semantic", 0.5, "Share of the annotation-meaning signal within the text side.",
            minimum=0.0),
    Setting("weight_visual", 0.5, "Share of the words-to-pixels (zero-shot) signal within the "
            "text side.", minimum=0.0),
    Setting("synonyms_file", "", "Synonyms and abbreviations applied to queries (empty: the "
            "shipped config/synonyms.txt).",),
    Setting("autocorrect", True, "When words match nothing, search the closest known words "
            "instead and say so.",),
    Setting("max_image_pixels", 50_000_000, "Largest image (width x height) accepted; "
            "a guard against decompression bombs.", minimum=1),
    Setting("max_upload_bytes", 50 * 1024 * 1024, "Largest file accepted by ingest and upload.",
            minimum=1),
    Setting("batch_size", 32, "Images per forward pass of the embedding model.", minimum=1),
    Setting("device", "cpu", "Torch device for the embedding model: 'cpu', 'cuda' or 'auto'.",
            choices=("cpu", "cuda", "auto")),
    Setting("threads", 0, "Torch CPU threads for the model (0: torch's default).", minimum=0),
    Setting("thumbnail_size", 320, "Longer side, in pixels, of cached thumbnails.", minimum=32),

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
    Setting("host", "127.0.0.1", "Address `serve` listens on."),
    Setting("port", 5000, "Port `serve` listens on.", minimum=0, maximum=65535),
)

_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


@dataclass
class Settings:
    """Resolved settings, read by attribute (`settings.alpha`) or by name."""

    values: dict[str, Any] = field(default_factory=lambda: {s.name: s.default for s in SETTINGS})
    sources: dict[str, str] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def get(self, name: str) -> Any:
        """The value of one setting."""
        return self.values[name]

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed (validated)."""
        values = dict(self.values)
        for name, raw in changes.items():
            values[name] = _coerce(_setting(name), raw, "override")
        return Settings(values, {**self.sources, **{n: "override" for n in changes}})

    @property
    def data_path(self) -> Path:
        """The data directory as an absolute path."""
        return Path(os.path.expanduser(str(self.values["data_dir"]))).resolve()


def _setting(name: str, source: str = "") -> Setting:
    try:
        return _BY_NAME[name]
    except KeyError:
        where = f" (from {source})" if source else ""
        raise ConfigError(f"unknown setting {name!r}{where}") from None


def _coerce(setting: Setting, raw: Any, source: str) -> Any:
    """Turn a raw value (from TOML or an environment string) into the setting's type."""
    kind = setting.type
    try:
        if kind is bool:
            if isinstance(raw, str):
                if raw.lower() not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
                    raise ValueError(raw)
                value: Any = raw.lower() in {"1", "true", "yes", "on"}
            else:
                value = bool(raw)
        elif kind is int:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError(raw)
            value = int(raw)
        elif kind is float:
            if isinstance(raw, bool):
                raise ValueError(raw)
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError(raw)
        else:
            value = str(raw)
    except (TypeError, ValueError):
        raise ConfigError(
            f"setting {setting.name} from {source}: expected {kind.__name__}, got {raw!r}"
        ) from None
    if setting.choices and value not in setting.choices:
        raise ConfigError(
            f"setting {setting.name} from {source}: {value!r} is not one of "
            + ", ".join(setting.choices)
        )
    if setting.minimum is not None and value < setting.minimum:
        raise ConfigError(f"setting {setting.name} from {source}: {value} < {setting.minimum}")
    if setting.maximum is not None and value > setting.maximum:
        raise ConfigError(f"setting {setting.name} from {source}: {value} > {setting.maximum}")
    return value


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    # Accept either top-level keys or a [hybrid_search] table.
    return dict(data.get("hybrid_search", data))


def load_settings(
    config_file: Path | str | None = None,
    data_dir: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Resolve every setting from defaults, config files, the environment and overrides."""
    env = os.environ if env is None else env
    settings = Settings()

    def apply(values: Mapping[str, Any], source: str) -> None:
        for name, raw in values.items():
            settings.values[name] = _coerce(_setting(name, source), raw, source)
            settings.sources[name] = source

    if REPO_CONFIG.is_file():
        apply(_read_toml(REPO_CONFIG), str(REPO_CONFIG))
    env_values = {
        key[len(ENV_PREFIX):].lower(): value
        for key, value in env.items()
        if key.startswith(ENV_PREFIX) and key != ENV_PREFIX + "CONFIG"
    }
    # The data directory decides where the user config may live, so resolve it first.
    chosen_dir = data_dir if data_dir is not None else env_values.get("data_dir")
    if chosen_dir is not None:
        settings.values["data_dir"] = str(chosen_dir)
    user_file = config_file or env.get(ENV_PREFIX + "CONFIG")
    if user_file:
        apply(_read_toml(Path(user_file)), str(user_file))
    else:
        candidate = settings.data_path / "config.toml"
        if candidate.is_file():
            apply(_read_toml(candidate), str(candidate))
    apply(env_values, "environment")
    if data_dir is not None:
        apply({"data_dir": str(data_dir)}, "--data-dir")
    if overrides:
        apply({k: v for k, v in overrides.items() if v is not None}, "command line")
    return settings


def default_toml() -> str:
    """The text of config/default.toml: every setting with its help and default."""
    import textwrap

    lines = [
        "# Defaults for every hybrid-search setting. Copy this file to <data dir>/config.toml "
        "(or pass",
        "# --config FILE) and edit it; environment variables HYBRID_SEARCH_<NAME> override both.",
        "",
    ]
    for s in SETTINGS:
        lines += ["# " + line for line in textwrap.wrap(s.help, 96)]
        if s.choices:
            lines.append("# One of: " + ", ".join(s.choices) + ".")
        v = s.default
        value = ("true" if v else "false") if isinstance(v, bool) else (
            f'"{v}"' if isinstance(v, str) else repr(v))
        lines += [f"{s.name} = {value}", ""]
    return "\n".join(lines)


def settings_table() -> str:
    """The README's Markdown table of settings."""
    rows = ["| setting | default | what it does |", "|---|---|---|"]
    for s in SETTINGS:
        v = s.default
        shown = ("`true`" if v else "`false`") if isinstance(v, bool) else (
            f"`{v}`" if v != "" else "(empty)")
        extra = f" One of: {', '.join(s.choices)}." if s.choices else ""
        rows.append(f"| `{s.name}` | {shown} | {s.help}{extra} |")
    return "\n".join(rows)


if __name__ == "__main__":  # regenerate config/default.toml and the README's table
    root = Path(__file__).resolve().parent.parent
    (root / "config" / "default.toml").write_text(default_toml())
    readme = root / "README.md"
    text = readme.read_text()
    start = text.index("| setting | default | what it does |")
    end = text.index("\n\n", start)
    readme.write_text(text[:start] + settings_table() + text[end:])
