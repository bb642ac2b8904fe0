"""Shared helpers for service settings: typed reads of MOVA_* environment variables and flags.

Each service declares one frozen dataclass in services/<name>/settings.py, filled once at startup: the gateway's
with these helpers, the stage services' through movakit.runtime.stage_settings.StageSettings, which parses and
redacts with them too. Errors name the variable or flag.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping


class SettingsError(ValueError):
    """A setting has a bad value; the message starts with the variable or flag name."""

    def __init__(self, name: str, message: str):
        super().__init__(f"{name}: {message}")
        self.name = name


def _raw(env: Mapping[str, str] | None, name: str) -> str | None:
    source = os.environ if env is None else env
    value = source.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def env_str(name: str, default: str, *, env: Mapping[str, str] | None = None) -> str:
    """The variable's value, or `default` when unset or empty."""
    value = _raw(env, name)
    return default if value is None else value


def env_int(
    name: str, default: int, *, minimum: int | None = None, maximum: int | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """An integer variable, checked against [minimum, maximum]."""
    value = _raw(env, name)
    if value is None:
        return default
    return check_range(name, parse_int(name, value), minimum, maximum)


def env_float(
    name: str, default: float, *, minimum: float | None = None, maximum: float | None = None,
    env: Mapping[str, str] | None = None,
) -> float:
    """A float variable, checked against [minimum, maximum]."""
    value = _raw(env, name)
    if value is None:
        return default
    return check_range(name, parse_float(name, value), minimum, maximum)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_bool(name: str, default: bool, *, env: Mapping[str, str] | None = None) -> bool:
    """A boolean variable: 1/true/yes/on or 0/false/no/off (any case)."""
    value = _raw(env, name)
    return default if value is None else parse_bool(name, value)


def parse_int(name: str, value: str) -> int:
    """`value` as an integer; SettingsError naming `name` otherwise."""
    try:
        return int(value)
    except ValueError:
        raise SettingsError(name, f"expected an integer, got {value!r}") from None


def parse_float(name: str, value: str) -> float:
    """`value` as a float; SettingsError naming `name` otherwise."""
    try:
        return float(value)
    except ValueError:
        raise SettingsError(name, f"expected a number, got {value!r}") from None


def parse_bool(name: str, value: str) -> bool:
    """1/true/yes/on or 0/false/no/off (any case, surrounding spaces ignored); SettingsError naming `name` otherwise."""
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise SettingsError(name, f"expected one of 1/0, true/false, yes/no, on/off, got {value!r}")


_PARSERS = {"bool": parse_bool, "int": parse_int, "float": parse_float}


def parse_field(name: str, value: str, annotation: object) -> object:
    """`value` converted to a settings dataclass field's annotated type (bool, int, float; anything else stays a
    str). With `from __future__ import annotations` the annotation is the type's name."""
    kind = annotation if isinstance(annotation, str) else annotation.__name__  # type: ignore[attr-defined]
    parser = _PARSERS.get(kind)
    return value if parser is None else parser(name, value)


def env_choice(name: str, default: str, choices: tuple[str, ...], *, env: Mapping[str, str] | None = None) -> str:
    """A variable restricted to `choices`."""
    value = env_str(name, default, env=env)
    if value not in choices:
        raise SettingsError(name, f"expected one of {', '.join(choices)}, got {value!r}")
    return value


def check_range(name: str, value, minimum=None, maximum=None):
    """Returns value, or raises SettingsError naming `name` when it lies outside [minimum, maximum]."""
    if minimum is not None and value < minimum:
        raise SettingsError(name, f"must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise SettingsError(name, f"must be <= {maximum}, got {value}")
    return value


def check_address(name: str, value: str) -> str:
    """Checks a host:port string (port 0..65535) and returns it unchanged."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise SettingsError(name, f"expected host:port, got {value!r}")
    return value


_SECRET_MARKERS = ("secret", "password", "token", "key")


def redacted(settings) -> dict[str, object]:
    """The fields of a settings dataclass as a dict for logging, secrets replaced by '***'.

    A field counts as secret when its name contains secret, password, token or key (access_key too:
    key ids are credentials here).
    """
    out: dict[str, object] = {}
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if any(marker in field.name.lower() for marker in _SECRET_MARKERS) and value:
            out[field.name] = "***"
        else:
            out[field.name] = value
    return out
