"""What the offline commands (``aiops alerts``, ``aiops models``) share: where the state is.

Each takes ``--config`` (the daemon's config, whose ``state.dir`` is meant) or
``--state-dir``; with neither, the built-in demo's state directory.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

__all__ = ["resolve_state_dir", "state_options"]


def state_options(holds: str) -> list[Callable[[Any], Any]]:
    """The ``--config`` and ``--state-dir`` options; ``holds`` names what the state holds."""
    return [
        click.option(
            "--config",
            "config_path",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help=f"Daemon config whose state.dir holds the {holds}.",
        ),
        click.option(
            "--state-dir",
            type=click.Path(file_okay=False, path_type=Path),
            help="State directory (default: the config's, else the demo's ./aiops-state).",
        ),
    ]


def resolve_state_dir(config_path: Path | None, state_dir: Path | None, command: str) -> Path:
    """``state_dir``, else the config's ``state.dir``, else the demo's state directory.

    An invalid config prints its errors and ``aiops COMMAND: configuration invalid: N
    errors`` on stderr and exits 1.
    """
    if state_dir is not None:
        return state_dir
    if config_path is not None:
        from aiops.config import ConfigErrors, load_config

        try:
            return load_config(config_path).daemon.state.dir
        except ConfigErrors as exc:
            for err in exc.errors:
                click.echo(str(err), err=True)
            click.echo(
                f"aiops {command}: configuration invalid: {len(exc.errors)} errors", err=True
            )
            sys.exit(1)
    from aiops.service.app import DEMO_STATE_DIR

    return DEMO_STATE_DIR
