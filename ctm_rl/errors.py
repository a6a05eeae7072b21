"""Errors caused by what a user asked for (a config, a path, an option), as opposed to bugs.

The command line prints these as one line (``ctm-rl: error: ...``) without a traceback; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input from the user: the message alone tells them what to fix."""


class ConfigError(UserError, ValueError):
    """An experiment config (file, ``--set`` override or option) is invalid."""


class RunDirError(UserError):
    """A run directory cannot be created, resumed or read."""


class ModelFileError(UserError):
    """A file is not a model this package can load."""


def did_you_mean(word: str, choices: Iterable[str], prefix: str = "") -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` to ``word``, or ``''`` if none is close.

    ``prefix`` is put before the suggestion (e.g. ``env.`` for a key inside the ``env`` section).
    """
    matches = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {prefix + matches[0]!r}?)" if matches else ""
