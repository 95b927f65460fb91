"""Tests for the settings table and how settings are loaded."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from hybrid_search.exceptions import ConfigError
from hybrid_search.settings import REPO_CONFIG, SETTINGS, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TOML = ROOT / "config" / "default.toml"


def write(path: Path, text: str) -> Path:
    """Write a text file and return its path."""
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, **kwargs: object) -> Settings:
    """Load settings isolated from the real environment and home directory."""
    kwargs.setdefault("env", {})
    kwargs.setdefault("data_dir", tmp_path / "data")
    return load_settings(**kwargs)  # type: ignore[arg-type]


# -- the table and config/default.toml ----------------------------------------------------


def test_repo_config_is_config_default_toml() -> None:
    assert REPO_CONFIG == DEFAULT_TOML
    assert DEFAULT_TOML.is_file()


def test_default_toml_matches_table() -> None:
    data = tomllib.loads(DEFAULT_TOML.read_text(encoding="utf-8"))
    names = [s.name for s in SETTINGS]
    assert len(names) == len(set(names))
    assert set(data) == set(names)
    for s in SETTINGS:
        assert data[s.name] == s.default, s.name
        assert type(data[s.name]) is type(s.default), s.name


def test_default_toml_documents_choices() -> None:
    text = DEFAULT_TOML.read_text(encoding="utf-8")
    for s in SETTINGS:
        if s.choices:
            assert f"One of: {', '.join(s.choices)}." in text, s.name


def test_table_defaults_satisfy_own_bounds() -> None:
    for s in SETTINGS:
        if s.choices:
            assert s.default in s.choices, s.name
        if s.minimum is not None:
            assert s.default >= s.minimum, s.name
        if s.maximum is not None:
            assert s.default <= s.maximum, s.name
        assert s.help.strip(), s.name


def test_loaded_defaults(tmp_path: Path) -> None:
    settings = load(tmp_path)
    for s in SETTINGS:
        if s.name == "data_dir":
            continue
        assert settings.get(s.name) == s.default
        assert type(settings.get(s.name)) is type(s.default)
    assert settings.sources["alpha"] == str(REPO_CONFIG)
    assert settings.alpha == 0.5
    assert settings.fusion == "linear"


def test_plain_settings_object_has_defaults() -> None:
    settings = Settings()
    assert settings.values == {s.name: s.default for s in SETTINGS}
    with pytest.raises(AttributeError):
        _ = settings.no_such_setting


# -- precedence ---------------------------------------------------------------------------


def test_env_overrides_default(tmp_path: Path) -> None:
    settings = load(tmp_path, env={"HYBRID_SEARCH_ALPHA": "0.3"})
    assert settings.alpha == 0.3
    assert isinstance(settings.alpha, float)
    assert settings.sources["alpha"] == "environment"


def test_env_ints_are_ints(tmp_path: Path) -> None:
    settings = load(tmp_path, env={"HYBRID_SEARCH_PORT": "8080", "HYBRID_SEARCH_RRF_K": "10"})
    assert settings.port == 8080 and type(settings.port) is int
    assert settings.rrf_k == 10


def test_user_config_overrides_defaults_and_env_overrides_it(tmp_path: Path) -> None:
    cfg = write(tmp_path / "user.toml", 'alpha = 0.2\nfusion = "rrf"\nport = 6000\n')
    settings = load(tmp_path, config_file=cfg)
    assert (settings.alpha, settings.fusion, settings.port) == (0.2, "rrf", 6000)
    assert settings.sources["alpha"] == str(cfg)

    settings = load(tmp_path, config_file=cfg, env={"HYBRID_SEARCH_ALPHA": "0.7"})
    assert settings.alpha == 0.7
    assert settings.fusion == "rrf"  # still from the file
    assert settings.sources["alpha"] == "environment"


def test_config_file_from_env_variable(tmp_path: Path) -> None:
    cfg = write(tmp_path / "elsewhere.toml", "limit = 25\n")
    settings = load(tmp_path, env={"HYBRID_SEARCH_CONFIG": str(cfg)})
    assert settings.limit == 25


def test_config_in_data_dir_is_found(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write(data / "config.toml", 'normalization = "zscore"\n')
    assert load(tmp_path, data_dir=data).normalization == "zscore"
    # The data directory may also come from the environment.
    settings = load_settings(env={"HYBRID_SEARCH_DATA_DIR": str(data)})
    assert settings.normalization == "zscore"
    assert settings.data_path == data.resolve()


def test_explicit_config_replaces_data_dir_config(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write(data / "config.toml", 'fusion = "rrf"\nalpha = 0.1\n')
    cfg = write(tmp_path / "user.toml", "alpha = 0.9\n")
    settings = load(tmp_path, data_dir=data, config_file=cfg)
    assert settings.alpha == 0.9
    assert settings.fusion == "linear"


def test_table_form_of_config(tmp_path: Path) -> None:
    cfg = write(tmp_path / "user.toml", '[hybrid_search]\nmetric = "euclidean"\n')
    assert load(tmp_path, config_file=cfg).metric == "euclidean"


def test_data_dir_argument_wins(tmp_path: Path) -> None:
    cfg = write(tmp_path / "user.toml", f'data_dir = "{(tmp_path / "from_file").as_posix()}"\n')
    chosen = tmp_path / "chosen"
    settings = load_settings(
        config_file=cfg,
        data_dir=chosen,
        env={"HYBRID_SEARCH_DATA_DIR": str(tmp_path / "from_env")},
    )
    assert settings.data_dir == str(chosen)
    assert settings.data_path == chosen.resolve()
    assert settings.sources["data_dir"] == "--data-dir"


def test_env_data_dir_beats_file(tmp_path: Path) -> None:
    cfg = write(tmp_path / "user.toml", f'data_dir = "{(tmp_path / "from_file").as_posix()}"\n')
    env_dir = tmp_path / "from_env"
    settings = load_settings(config_file=cfg, env={"HYBRID_SEARCH_DATA_DIR": str(env_dir)})
    assert settings.data_path == env_dir.resolve()


def test_overrides_win_and_none_is_ignored(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        env={"HYBRID_SEARCH_ALPHA": "0.3", "HYBRID_SEARCH_LIMIT": "20"},
        overrides={"alpha": 0.9, "limit": None},
    )
    assert settings.alpha == 0.9
    assert settings.sources["alpha"] == "command line"
    assert settings.limit == 20


def test_data_path_expands_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = Settings().replace(data_dir="~/photos")
    assert settings.data_path == (tmp_path / "photos").resolve()
    assert settings.data_path.is_absolute()


# -- bad values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("alpha", "2"),
        ("alpha", "-0.1"),
        ("alpha", "high"),
        ("fusion", "foo"),
        ("normalization", "l2"),
        ("metric", "manhattan"),
        ("device", "tpu"),
        ("port", "abc"),
        ("port", "yes"),
        ("port", "true"),
        ("port", "70000"),
        ("port", "5000.5"),
        ("rrf_k", "0"),
        ("limit", "1001"),
        ("thumbnail_size", "16"),
        ("threads", "-1"),
    ],
)
def test_bad_env_value_names_setting(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"\b{name}\b"):
        load(tmp_path, env={f"HYBRID_SEARCH_{name.upper()}": value})


@pytest.mark.parametrize(
    "line",
    [
        "alpha = 2",
        "alpha = true",
        'fusion = "foo"',
        "port = true",
        'port = "abc"',
        "port = 5000.5",
        "batch_size = 0",
        "boost_title = -1.0",
        "limit = false",
    ],
)
def test_bad_file_value_names_setting_and_file(tmp_path: Path, line: str) -> None:
    cfg = write(tmp_path / "bad.toml", line + "\n")
    name = line.split()[0]
    with pytest.raises(ConfigError, match=rf"\b{name}\b") as info:
        load(tmp_path, config_file=cfg)
    assert str(cfg) in str(info.value)


@pytest.mark.parametrize(
    ("name", "value"), [("alpha", "nan"), ("boost_title", "nan"), ("boost_tags", "inf")]
)
def test_non_finite_float_rejected(tmp_path: Path, name: str, value: str) -> None:
    # NaN passes both `value < minimum` and `value > maximum` (every comparison is False),
    # and a NaN alpha later makes fusion raise ValueError instead of a ConfigError.
    with pytest.raises(ConfigError, match=name):
        load(tmp_path, env={f"HYBRID_SEARCH_{name.upper()}": value})


def test_integral_float_accepted_for_int(tmp_path: Path) -> None:
    cfg = write(tmp_path / "user.toml", "port = 6000.0\n")
    settings = load(tmp_path, config_file=cfg)
    assert settings.port == 6000 and type(settings.port) is int


def test_unknown_setting_in_file(tmp_path: Path) -> None:
    cfg = write(tmp_path / "user.toml", "colour = 'red'\n")
    with pytest.raises(ConfigError, match="colour"):
        load(tmp_path, config_file=cfg)


def test_unknown_setting_in_env(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="aplha"):
        load(tmp_path, env={"HYBRID_SEARCH_APLHA": "0.3"})


def test_invalid_toml_names_file(tmp_path: Path) -> None:
    cfg = write(tmp_path / "broken.toml", "alpha = = 0.3\n")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load(tmp_path, config_file=cfg)
    assert str(cfg) in str(info.value)


def test_invalid_toml_in_data_dir_names_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    cfg = write(data / "config.toml", "[unclosed\n")
    with pytest.raises(ConfigError) as info:
        load(tmp_path, data_dir=data)
    assert str(cfg) in str(info.value)


def test_missing_config_file_names_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="cannot read") as info:
        load(tmp_path, config_file=missing)
    assert str(missing) in str(info.value)


# -- Settings.replace ---------------------------------------------------------------------


def test_replace_validates_and_copies(tmp_path: Path) -> None:
    base = load(tmp_path)
    changed = base.replace(alpha="0.25", fusion="rrf")
    assert changed.alpha == 0.25 and isinstance(changed.alpha, float)
    assert changed.fusion == "rrf"
    assert changed.sources["alpha"] == "override"
    assert base.alpha == 0.5 and base.fusion == "linear"  # original untouched
    with pytest.raises(ConfigError, match="alpha"):
        base.replace(alpha=2)
    with pytest.raises(ConfigError, match="fusion"):
        base.replace(fusion="foo")
    with pytest.raises(ConfigError, match="nonsense"):
        base.replace(nonsense=1)
    assert base.alpha == 0.5


# -- documentation ------------------------------------------------------------------------


def test_readme_mentions_every_setting() -> None:
    readme = ROOT / "README.md"
    if not readme.is_file():
        pytest.skip("README.md does not exist yet at the repository root")
    text = readme.read_text(encoding="utf-8")
    missing = [s.name for s in SETTINGS if not re.search(rf"\b{re.escape(s.name)}\b", text)]
    assert not missing, f"README.md does not mention: {missing}"
