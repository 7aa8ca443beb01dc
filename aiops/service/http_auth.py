"""Who may use the daemon's listener, and over what: bearer tokens, basic auth, TLS.

Configured under ``http.auth`` and ``http.tls`` (the shape of Prometheus' web
configuration file). :class:`Authenticator` decides whether a request's
``Authorization`` header is good; :func:`server_tls_context` builds the TLS context from
the certificate files. The listener (:mod:`aiops.service.http`) asks for neither on
``/healthz``, which then shows no upstream details.

Secrets never sit in YAML: the bearer token comes from an environment variable or a
file; basic-auth passwords are stored as bcrypt hashes (as in Prometheus' web config,
``htpasswd -nBC 10 user`` makes one), which are not secrets.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ssl
import threading
from collections import OrderedDict
from collections.abc import Mapping

__all__ = ["Authenticator", "NO_AUTH", "server_tls_context"]

#: Successful basic-auth checks remembered (user, SHA-256 of the password): a bcrypt
#: check costs 50-300 ms, and a scraper sends the same credentials every few seconds.
AUTH_CACHE_SIZE = 256


class Authenticator:
    """Checks ``Authorization`` headers against a bearer token and bcrypt-hashed users.

    Comparisons are constant-time (:func:`hmac.compare_digest`, bcrypt's own check); an
    unknown user costs a bcrypt check against a dummy hash, so timing tells nothing
    about which users exist. With neither a token nor a user, every request passes.

    >>> auth = Authenticator(bearer_token="s3cret")
    >>> auth.check("Bearer s3cret"), auth.check("Bearer guess"), auth.check("")
    (True, False, False)
    >>> NO_AUTH.enabled, NO_AUTH.check("")
    (False, True)
    """

    def __init__(
        self, *, bearer_token: str | None = None, basic_users: Mapping[str, str] | None = None
    ) -> None:
        self._token = bearer_token.encode() if bearer_token else b""
        self._users = {u: h.encode() for u, h in (basic_users or {}).items()}
        self._ok: OrderedDict[tuple[str, bytes], None] = OrderedDict()
        self._lock = threading.Lock()
        self._dummy = b""

    @property
    def enabled(self) -> bool:
        """True when some credential is required."""
        return bool(self._token or self._users)

    @property
    def challenge(self) -> str:
        """The ``WWW-Authenticate`` header of a 401 answer."""
        return 'Basic realm="aiopsd"' if self._users else 'Bearer realm="aiopsd"'

    def quick(self, header: str) -> bool | None:
        """The answer when it needs no bcrypt check (bearer, remembered users), else None."""
        if not self.enabled:
            return True
        scheme, _, value = header.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            return bool(self._token) and hmac.compare_digest(value.strip().encode(), self._token)
        if scheme != "basic" or not self._users:
            return False
        pair = _basic_pair(value)
        if pair is None:
            return False
        with self._lock:
            if (pair[0], hashlib.sha256(pair[1]).digest()) in self._ok:
                return True
        return None

    def check(self, header: str) -> bool:
        """True when ``header`` (the ``Authorization`` value) is accepted; may take 0.3 s."""
        quick = self.quick(header)
        if quick is not None:
            return quick
        pair = _basic_pair(header.strip().partition(" ")[2])
        if pair is None:  # quick() has returned False for it already
            return False
        import bcrypt

        user, password = pair
        hashed = self._users.get(user)
        if hashed is None:
            bcrypt.checkpw(password, self._dummy_hash())
            return False
        try:
            ok = bcrypt.checkpw(password, hashed)
        except ValueError:  # a hash the config check let through but bcrypt refuses
            return False
        if ok:
            with self._lock:
                self._ok[(user, hashlib.sha256(password).digest())] = None
                while len(self._ok) > AUTH_CACHE_SIZE:
                    self._ok.popitem(last=False)
        return ok

    def _dummy_hash(self) -> bytes:
        if not self._dummy:
            import bcrypt

            # As costly as the users' own hashes ("$2b$12$..." -> 12 rounds).
            some = next(iter(self._users.values()))
            try:
                rounds = int(some.split(b"$")[2])
            except (IndexError, ValueError):
                rounds = 10
            self._dummy = bcrypt.hashpw(b"unknown user", bcrypt.gensalt(rounds=rounds))
        return self._dummy


def _basic_pair(value: str) -> tuple[str, bytes] | None:
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = raw.partition(b":")
    if not sep:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


NO_AUTH = Authenticator()


def server_tls_context(cert_file: str, key_file: str, client_ca_file: str | None) -> ssl.SSLContext:
    """A server context: TLS 1.2 or later, and client certificates when a CA is given.

    Raises :class:`OSError` or :class:`ssl.SSLError` when a file cannot be used.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    if client_ca_file:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=client_ca_file)
    return ctx
