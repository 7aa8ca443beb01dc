"""Signatures for the one kind of state that can run code when loaded: pickled models.

Our own detectors store plain arrays and JSON (:func:`aiops.state.envelope.dumps`), which
load without running anything. Third-party models that only serialize through pickle
(river's) are signed where they are pickled and checked where they are unpickled, with
an HMAC-SHA256 under a key that does not live beside the state it protects. The check
sits next to the ``pickle.loads`` call, so no header, envelope or checkpoint field can
switch it off: a blob whose tag is missing or wrong is refused before a byte of it is
unpickled.

The key comes from the configuration's ``state.hmac_key_env`` or ``state.hmac_key_file``
when one is set (:func:`use_key_reference`, read at each use so a rotated file counts);
otherwise from, in order:

- ``$AIOPS_STATE_HMAC_KEY``: the key itself (for containers' secret environment);
- ``$AIOPS_STATE_HMAC_KEY_FILE``: a file holding it (a mounted secret);
- ``$CREDENTIALS_DIRECTORY/state-hmac-key``: systemd's ``LoadCredential=state-hmac-key:...``
  (the shipped unit's way: the key is readable by the service only, never in the state
  directory).

Leading and trailing whitespace of a key file is ignored; an empty key counts as none.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Sequence
from pathlib import Path

from aiops.secrets import SecretError, read_secret
from aiops.state.envelope import HMAC_KEY_ENV, SnapshotRefused

__all__ = [
    "CREDENTIAL_NAME",
    "HMAC_KEY_FILE_ENV",
    "SigningKeyMissing",
    "sign_blobs",
    "signing_key",
    "use_key_reference",
    "verify_blobs",
]

HMAC_KEY_FILE_ENV = "AIOPS_STATE_HMAC_KEY_FILE"
#: The credential name the shipped systemd unit loads (``LoadCredential=``).
CREDENTIAL_NAME = "state-hmac-key"


class SigningKeyMissing(RuntimeError):
    """Pickled models were to be stored or loaded and no signing key is configured."""


#: The configuration's key reference, ``(env, file)``; None: the default places.
_reference: tuple[str | None, str | None] | None = None


def use_key_reference(env: str | None, file: str | None) -> None:
    """Take the key from the variable ``env`` or the file ``file`` (both None: the defaults).

    Raises :class:`~aiops.secrets.SecretError` (naming the reference, never a value)
    when the one given cannot be read now, so a daemon refuses to start with a key it
    was told to use and cannot find; the reference is then left as it was.

    >>> os.environ["AIOPS_DOCTEST_STATE_KEY"] = "k1"
    >>> use_key_reference("AIOPS_DOCTEST_STATE_KEY", None)
    >>> signing_key()
    b'k1'
    >>> use_key_reference("NO_KEY_X", None)
    Traceback (most recent call last):
    ...
    aiops.secrets.SecretError: state signing key: environment variable NO_KEY_X is not set or empty
    >>> use_key_reference(None, None)
    >>> del os.environ["AIOPS_DOCTEST_STATE_KEY"]
    """
    global _reference
    if env is None and file is None:
        _reference = None
        return
    read_secret(env, file, "state signing key")
    _reference = (env, file)


def signing_key() -> bytes | None:
    """The state signing key, or None if there is none.

    The configured reference if any (None when it cannot be read any more), else the
    environment, a key file or systemd's credentials.
    """
    if _reference is not None:
        try:
            value = read_secret(*_reference, "state signing key")
        except SecretError:
            return None
        return None if value is None else value.encode()
    key = os.environ.get(HMAC_KEY_ENV, "")
    if key:
        return key.encode()
    candidates = []
    if os.environ.get(HMAC_KEY_FILE_ENV):
        candidates.append(Path(os.environ[HMAC_KEY_FILE_ENV]))
    if os.environ.get("CREDENTIALS_DIRECTORY"):
        candidates.append(Path(os.environ["CREDENTIALS_DIRECTORY"]) / CREDENTIAL_NAME)
    for path in candidates:
        try:
            text = path.read_bytes().strip()
        except OSError:
            continue
        if text:
            return text
    return None


def _mac(key: bytes, blobs: Sequence[bytes | None], purpose: str) -> str:
    mac = hmac.new(key, purpose.encode() + b"\x00", hashlib.sha256)
    for b in blobs:
        # Length-prefixed, so that moving bytes from one blob to the next changes the tag.
        if b is None:
            mac.update(b"-\x00")
        else:
            mac.update(f"{len(b)}:".encode())
            mac.update(b)
    return mac.hexdigest()


def sign_blobs(blobs: Sequence[bytes | None], *, purpose: str) -> str:
    """The tag of a list of pickled blobs (``None`` for an empty slot).

    ``purpose`` names what the blobs are (e.g. ``"river.models"``): a tag made for one
    purpose does not verify another. Raises :class:`SigningKeyMissing` without a key.

    >>> os.environ[HMAC_KEY_ENV] = "doctest-key"
    >>> tag = sign_blobs([b"a", None], purpose="demo")
    >>> verify_blobs([b"a", None], tag, purpose="demo")
    >>> verify_blobs([b"b", None], tag, purpose="demo")
    Traceback (most recent call last):
    ...
    aiops.state.envelope.SnapshotRefused: demo refused: signature does not match
    >>> del os.environ[HMAC_KEY_ENV]
    """
    key = signing_key()
    if key is None:
        raise SigningKeyMissing(
            f"storing pickled models needs a signing key: set ${HMAC_KEY_ENV}, "
            f"${HMAC_KEY_FILE_ENV} or systemd's LoadCredential={CREDENTIAL_NAME}:PATH"
        )
    return _mac(key, blobs, purpose)


def verify_blobs(blobs: Sequence[bytes | None], tag: object, *, purpose: str) -> None:
    """Raise :class:`SnapshotRefused` unless ``tag`` is the blobs' valid signature."""
    if not isinstance(tag, str) or not tag:
        raise SnapshotRefused(f"{purpose} refused: pickled models without a signature")
    key = signing_key()
    if key is None:
        raise SnapshotRefused(
            f"{purpose} refused: it holds signed pickled models and no signing key is set "
            f"(${HMAC_KEY_ENV}, ${HMAC_KEY_FILE_ENV} or LoadCredential={CREDENTIAL_NAME})"
        )
    if not hmac.compare_digest(_mac(key, blobs, purpose), tag):
        raise SnapshotRefused(f"{purpose} refused: signature does not match")
