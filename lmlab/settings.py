"""Unknown setting names are refused with a suggestion, everywhere in the public API."""

from __future__ import annotations

import difflib
from dataclasses import fields

from .errors import ConfigError


def check_names(given, known, what: str) -> None:
    """Raise ConfigError for the first name in `given` that is not in `known`."""
    known = sorted(known)
    for name in given:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"the settings are {known}"
            raise ConfigError(f"{what} has no setting {name!r}; {hint}")


class Checked:
    """Mixin for a settings dataclass: unknown keyword arguments raise ConfigError
    (with a "did you mean") instead of a bare TypeError."""

    def __new__(cls, *args, **kwargs):
        check_names(kwargs, (f.name for f in fields(cls)), cls.__name__)
        return super().__new__(cls)
