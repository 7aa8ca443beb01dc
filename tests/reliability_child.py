"""Children of the reliability suite, importable by name (forkserver pickles the target)."""

from __future__ import annotations

import logging
import os
from pathlib import Path


def run_once(config: str) -> None:
    """What ``aiops --log-level warning run --config CONFIG --once`` does, then exit."""
    from aiops.service.app import run_daemon

    logging.basicConfig(level=logging.WARNING, force=True)
    os._exit(run_daemon(Path(config), until_exhausted=True))
