"""The one settings mechanism of every MOVA process: the gateway, the four stage services and the prompt enhancer.

A settings class is a frozen dataclass deriving from `EnvSettings`, filled once at startup:

- every field is one environment variable, `<prefix><FIELD>` (the prefix is the class's: MOVA_GATEWAY_,
  MOVA_ENCODER_, MOVA_ENHANCER_, ...) and, when a service's main passes its command line, one flag
  `--<field-with-dashes>`. A flag wins over the variable, the variable over the default;
- a value is stripped; an empty one counts as unset (the default applies);
- it is converted to the field's type: bool (1/0, true/false, yes/no, on/off, any case), int, float, else str;
  a field may name its own conversion in its metadata (`field(metadata={"parse": str.lower})`);
- a field whose default is itself an `EnvSettings` is read with that class's own prefix (the enhancer's first-frame
  endpoint, MOVA_FIRST_FRAME_*), never from flags;
- `validate()` runs whenever an instance is made (read or built directly) and raises `SettingsError`, a
  ValueError whose message starts with the variable's name;
- `redacted()` gives the values for the startup log line, secrets shown as '***'.

Service settings: movakit/services/<name>/settings.py (the stage services through
movakit.runtime.stage_settings: ServiceSettings, StageSettings); the enhancer's: movakit/enhance/settings.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, TypeVar


class SettingsError(ValueError):
    """A setting has a bad value; the message starts with the variable or flag name."""

    def __init__(self, name: str, message: str):
        super().__init__(f"{name}: {message}")
        self.name = name


S = TypeVar("S", bound="EnvSettings")


@dataclass(frozen=True)
class EnvSettings:
    """Base of every settings dataclass (see the module docstring)."""

    PREFIX: ClassVar[str] = ""  # e.g. "MOVA_GATEWAY_"
    PROG: ClassVar[str] = ""  # program name in flag errors, e.g. "mova-gateway"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise SettingsError naming the variable of the first bad value (nothing to check here)."""

    @classmethod
    def prefix(cls) -> str:
        return cls.PREFIX

    @classmethod
    def prog(cls) -> str:
        return cls.PROG

    @classmethod
    def env_name(cls, field: str) -> str:
        return cls.prefix() + field.upper()

    @classmethod
    def env_names(cls) -> list[str]:
        """Every environment variable this settings class reads (nested settings included)."""
        names: list[str] = []
        for f in dataclasses.fields(cls):
            nested = f.default if isinstance(f.default, EnvSettings) else None
            names += type(nested).env_names() if nested is not None else [cls.env_name(f.name)]
        return names

    @classmethod
    def from_env(cls: type[S], environ: Mapping[str, str] | None = None) -> S:
        """The settings from the environment (`environ`, default os.environ) over the defaults."""
        return cls.load(None, environ)

    @classmethod
    def load(cls: type[S], argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> S:
        """Flags (argv; None = no flags) over variables over defaults; raises SettingsError naming the variable
        or flag of a bad value."""
        env = os.environ if environ is None else environ
        flags = None
        if argv is not None:
            parser = argparse.ArgumentParser(prog=cls.prog(), description=f"{cls.prog()} settings")
            for f in dataclasses.fields(cls):
                if not isinstance(f.default, EnvSettings):
                    parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=None,
                                        help=f"overrides ${cls.env_name(f.name)}")
            flags = parser.parse_args(list(argv))
        values: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            if isinstance(f.default, EnvSettings):
                values[f.name] = type(f.default).from_env(env)
                continue
            flag = None if flags is None else getattr(flags, f.name)
            name = f"--{f.name.replace('_', '-')}" if flag is not None else cls.env_name(f.name)
            raw = (flag if flag is not None else env.get(cls.env_name(f.name)) or "").strip()
            if raw:
                parse = f.metadata.get("parse")
                values[f.name] = parse(raw) if parse is not None else parse_field(name, raw, f.type)
        return cls(**values)

    @classmethod
    def from_command_line(cls: type[S], argv: Sequence[str]) -> S:
        """`load` for a service's main: a bad value is printed as `<prog>: error: <variable>: ...` and the process
        exits with status 2, as argparse does for an unknown flag."""
        try:
            return cls.load(argv)
        except SettingsError as exc:
            print(f"{cls.prog()}: error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None

    def redacted(self) -> dict[str, object]:
        return redacted(self)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


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


_SECRET_WORDS = frozenset({"secret", "password", "token", "key"})


def redacted(settings) -> dict[str, object]:
    """The fields of a settings dataclass as a flat dict for logging, secrets replaced by '***'.

    A field counts as secret when one of the words of its name is secret, password, token or key (access_key too:
    key ids are credentials here; max_tokens is not). Nested settings appear as <field>_<their field>.
    """
    out: dict[str, object] = {}
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if isinstance(value, EnvSettings):
            out.update({f"{field.name}_{name}": v for name, v in redacted(value).items()})
        elif _SECRET_WORDS & set(field.name.lower().split("_")) and value:
            out[field.name] = "***"
        else:
            out[field.name] = value
    return out
