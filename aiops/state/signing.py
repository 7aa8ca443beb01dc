"""Signatures for the one kind of state that can run code when loaded: pickled models.

Our own detectors store plain arrays and JSON (:func:`aiops.state.envelope.dumps`), which
load without running anything. Third-party models that only serialize through pickle
(river's) are signed where they are pickled and checked where they are unpickled, with
an HMAC-SHA256 under a key that does not live beside the state it protects. The check
sits next to the ``pickle.loads`` call, so no header, envelope or checkpoint field can
switch it off: a blob whose tag is missing or wrong is refused before a byte of it is
unpickled.

The key comes from, in order:

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

from aiops.state.envelope import HMAC_KEY_ENV, SnapshotRefused

__all__ = [
    "CREDENTIAL_NAME",
    "HMAC_KEY_FILE_ENV",
    "SigningKeyMissing",
    "sign_blobs",
    "signing_key",
    "verify_blobs",
]

HMAC_KEY_FILE_ENV = "AIOPS_STATE_HMAC_KEY_FILE"
#: The credential name the shipped systemd unit loads (``LoadCredential=``).
CREDENTIAL_NAME = "state-hmac-key"


class SigningKeyMissing(RuntimeError):
    """Pickled models were to be stored or loaded and no signing key is configured."""


def signing_key() -> bytes | None:
    """The state signing key from the environment, a key file or systemd's credentials."""
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
