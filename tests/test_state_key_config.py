"""The state signing key named in the configuration (``state.hmac_key_env`` / ``_file``).

A daemon told where its key is signs its river models with that key, checks them with
it at the next start, and refuses to start when it cannot read it; the environment's
default places are then not consulted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aiops.config import ConfigErrors, load_config
from aiops.secrets import SecretError
from aiops.state import signing


def _setup(tmp: Path, state: dict[str, str]) -> Path:
    rng = np.random.default_rng(5)
    rows = "".join(f"{60 * i},{50 + rng.normal():.4f}\n" for i in range(300))
    (tmp / "in.csv").write_text("timestamp,value\n" + rows)
    river = {"type": "river", "params": {"model": "HalfSpaceTrees"}}
    rules = [{"alert": "River", "source": "f", "selector": "value", "detector": river}]
    (tmp / "rules.yaml").write_text(json.dumps({"groups": [{"name": "g", "rules": rules}]}))
    config = {
        "sources": {"f": {"type": "file", "path": "in.csv", "batch_size": 100}},
        "state": {"dir": "state", **state},
        "rule_files": ["rules.yaml"],
    }
    (tmp / "aiops.yaml").write_text(json.dumps(config))
    return tmp / "aiops.yaml"


def _run_once(config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AIOPS_STATE_HMAC")}
    clean.pop("CREDENTIALS_DIRECTORY", None)
    return subprocess.run(
        [sys.executable, "-m", "aiops.cli", "run", "--config", str(config), "--once"],
        cwd=config.parent,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_key_file_named_in_the_config_signs_and_checks_the_river_state(tmp_path):
    # Relative to the config file's directory, like every other path of the config.
    (tmp_path / "key").write_text("first-key\n")
    config = _setup(tmp_path, {"hmac_key_file": "key"})
    first = _run_once(config)
    assert first.returncode == 0, first.stderr
    assert "not checkpointed" not in first.stderr  # the key was found and used
    # The same key: the next start takes the saved models without a word.
    (tmp_path / "in.csv").write_text("timestamp,value\n")
    again = _run_once(config)
    assert again.returncode == 0, again.stderr
    assert "refused" not in again.stderr
    # Another key in the same file: the saved models' signature no longer matches.
    (tmp_path / "key").write_text("second-key\n")
    other = _run_once(config)
    assert "signature does not match" in other.stderr, other.stderr


def test_a_key_the_config_names_and_the_daemon_cannot_read_stops_the_start(tmp_path):
    config = _setup(tmp_path, {"hmac_key_env": "AIOPS_TEST_NO_SUCH_KEY"})
    run = _run_once(config, env={"AIOPS_STATE_HMAC_KEY": "a-default-place-is-not-used"})
    assert run.returncode == 1
    (line,) = [x for x in run.stderr.splitlines() if "state signing key" in x]
    assert "AIOPS_TEST_NO_SUCH_KEY is not set or empty; not starting" in line
    assert "a-default-place" not in run.stderr  # errors name the reference, not values
    assert "Traceback" not in run.stderr


def test_both_places_at_once_are_a_configuration_error(tmp_path):
    config = _setup(tmp_path, {"hmac_key_env": "K", "hmac_key_file": "k"})
    with pytest.raises(ConfigErrors, match=r"hmac_key_env.*not both"):
        load_config(config)


def test_a_configured_reference_is_read_at_each_use(tmp_path, monkeypatch):
    key = tmp_path / "key"
    key.write_text("one")
    monkeypatch.setenv("AIOPS_STATE_HMAC_KEY", "ignored")
    try:
        signing.use_key_reference(None, str(key))
        tag = signing.sign_blobs([b"x"], purpose="t")
        signing.verify_blobs([b"x"], tag, purpose="t")
        key.write_text("two")  # rotated: the old tag no longer verifies
        with pytest.raises(Exception, match="signature does not match"):
            signing.verify_blobs([b"x"], tag, purpose="t")
        with pytest.raises(SecretError, match="cannot read"):
            signing.use_key_reference(None, str(tmp_path / "absent"))
        assert signing.signing_key() == b"two"  # a failed call leaves the reference
    finally:
        signing.use_key_reference(None, None)
    assert signing.signing_key() == b"ignored"  # back to the default places
