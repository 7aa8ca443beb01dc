"""Secrets by reference: the configuration names an environment variable or a file.

Tokens, passwords, routing keys and signing secrets never sit in a YAML file: a setting
``<name>_env`` names an environment variable, ``<name>_file`` a file (systemd's
``LoadCredential=`` puts one under ``$CREDENTIALS_DIRECTORY``). Errors name the
reference, never the value.

>>> import os
>>> os.environ["AIOPS_DOCTEST_TOKEN"] = "s3cret"
>>> read_secret("AIOPS_DOCTEST_TOKEN", None, "token")
's3cret'
>>> read_secret(None, None, "token") is None
True
>>> Secret("token", "AIOPS_DOCTEST_UNSET", None).value()
Traceback (most recent call last):
...
aiops.secrets.SecretError: token: environment variable AIOPS_DOCTEST_UNSET is not set or empty
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["Secret", "SecretError", "read_secret"]


class SecretError(ValueError):
    """A secret reference (``*_env`` / ``*_file``) that cannot be resolved now."""


def read_secret(env: str | None, file: str | None, what: str) -> str | None:
    """The secret in the variable ``env`` or the file ``file`` (stripped); None if neither.

    Raises :class:`SecretError` when the variable is unset or empty, or the file cannot
    be read or is empty.
    """
    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise SecretError(f"{what}: environment variable {env} is not set or empty")
        return value
    if file is not None:
        try:
            value = Path(file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SecretError(f"{what}: cannot read {file}: {exc}") from None
        if not value:
            raise SecretError(f"{what}: {file} is empty")
        return value
    return None


class Secret:
    """A secret read at each use, so a rotated file or variable is picked up.

    A file is read again only when its modification time changes (a client that sends
    a request a second does not read the file a second). :meth:`value` raises
    :class:`SecretError`; ``repr`` shows the reference only.
    """

    def __init__(self, what: str, env: str | None, file: str | None) -> None:
        self.what, self.env, self.file = what, env, file
        self._cached: tuple[float, str] | None = None

    def __bool__(self) -> bool:
        return self.env is not None or self.file is not None

    def value(self) -> str:
        """The secret now."""
        if self.env is None and self.file is not None:
            try:
                mtime = os.stat(self.file).st_mtime
            except OSError as exc:
                raise SecretError(f"{self.what}: cannot read {self.file}: {exc}") from None
            if self._cached is not None and self._cached[0] == mtime:
                return self._cached[1]
            value = read_secret(None, self.file, self.what)
            assert value is not None
            self._cached = (mtime, value)
            return value
        value = read_secret(self.env, self.file, self.what)
        if value is None:
            raise SecretError(f"{self.what}: no {self.what}_env or {self.what}_file set")
        return value

    def __repr__(self) -> str:
        where = f"env {self.env}" if self.env else f"file {self.file}"
        return f"Secret({self.what}, {where})"
