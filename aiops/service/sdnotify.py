"""systemd's service notification protocol (``sd_notify``), for ``Type=notify`` units.

systemd passes a datagram socket in ``$NOTIFY_SOCKET`` (a path, or an abstract socket
written ``@name``); the service sends ``KEY=value`` lines to it: ``READY=1`` once it
serves, ``RELOADING=1`` with ``MONOTONIC_USEC=`` when a reload starts (then ``READY=1``
when it is done), ``STOPPING=1`` when it begins to stop, ``STATUS=`` free text for
``systemctl status``, and ``WATCHDOG=1`` at least every ``$WATCHDOG_USEC`` microseconds
when the unit sets ``WatchdogSec=`` (systemd restarts the service when the pings stop).

No library is used: the sdnotify package on PyPI has not been released since 2017 and
systemd-python needs libsystemd's headers to build; the protocol is one datagram per
message. :class:`SystemdNotifier` is the real sender, :class:`NullNotifier` the null
object used when the daemon does not run under systemd (no ``$NOTIFY_SOCKET``).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

__all__ = [
    "NullNotifier",
    "SystemdNotifier",
    "monotonic_usec",
    "notifier_from_env",
    "watchdog_interval",
]

log = logging.getLogger(__name__)


class NullNotifier:
    """Not under systemd: every message is dropped; the watchdog is off."""

    #: Seconds between watchdog pings (0: no watchdog).
    watchdog_seconds = 0.0

    def send(self, **fields: str | int) -> bool:
        """Drop the message; returns False (nothing was sent)."""
        return False

    def close(self) -> None:
        """Nothing to close."""


class SystemdNotifier:
    """Sends notification datagrams to the socket named by ``address``.

    ``address`` is ``$NOTIFY_SOCKET``: a filesystem path, or ``@name`` for an abstract
    socket (Linux). A send that fails (systemd gone, socket full) is logged once and
    never raises: notifications must not stop the daemon. ``watchdog_seconds`` is the
    ping interval asked for by ``$WATCHDOG_USEC`` (half of it, as sd_watchdog_enabled
    advises), or 0.
    """

    def __init__(self, address: str, *, watchdog_seconds: float = 0.0) -> None:
        if not address or address[0] not in "/@":
            raise ValueError(f"NOTIFY_SOCKET must be a path or @abstract name, got {address!r}")
        self.address = "\0" + address[1:] if address[0] == "@" else address
        self.watchdog_seconds = watchdog_seconds
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._warned = False

    def send(self, **fields: str | int) -> bool:
        """Send ``KEY=value`` lines (keyword names upper-cased); True if it was sent."""
        try:
            self._sock.sendto(self.message(**fields), self.address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("systemd notification socket %s: %s", self.address.lstrip("\0"), exc)
            return False
        return True

    @staticmethod
    def message(**fields: str | int) -> bytes:
        """The datagram of ``fields``; newlines in a value become spaces (one line each).

        >>> SystemdNotifier.message(READY=1, STATUS="up").split()
        [b'READY=1', b'STATUS=up']
        """
        lines = (f"{k.upper()}={str(v).replace(chr(10), ' ')}" for k, v in fields.items())
        return "\n".join(lines).encode()

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()


def watchdog_interval(env: Mapping[str, str], pid: int) -> float:
    """Seconds between pings asked by ``WATCHDOG_USEC`` for process ``pid`` (0: none).

    Half the timeout; ``WATCHDOG_PID``, when set, must name this process (the variable
    may be inherited by a child that systemd does not watch).

    >>> watchdog_interval({"WATCHDOG_USEC": "20000000"}, 42)
    10.0
    >>> watchdog_interval({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "7"}, 42)
    0.0
    """
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return 0.0
    owner = env.get("WATCHDOG_PID", "")
    if owner and owner != str(pid):
        return 0.0
    return int(usec) / 2e6


def notifier_from_env(env: Mapping[str, str] | None = None) -> SystemdNotifier | NullNotifier:
    """The notifier for this process: systemd's socket if ``$NOTIFY_SOCKET`` is set."""
    env = os.environ if env is None else env
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return NullNotifier()
    try:
        notifier = SystemdNotifier(address, watchdog_seconds=watchdog_interval(env, os.getpid()))
    except (ValueError, OSError) as exc:
        log.warning("systemd notifications off: %s", exc)
        return NullNotifier()
    log.info(
        "systemd notifications on %s%s",
        address,
        f", watchdog ping every {notifier.watchdog_seconds:g} s"
        if notifier.watchdog_seconds
        else "",
    )
    return notifier


def monotonic_usec() -> int:
    """``CLOCK_MONOTONIC`` in microseconds, as ``MONOTONIC_USEC=`` wants it."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
