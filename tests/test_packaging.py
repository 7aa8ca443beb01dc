"""The package installs as `aiops` with `aiops.connectors` / `aiops.detectors` (DESIGN.md 1).

Generic top-level names such as `connectors` or `detectors` would collide with other
PyPI projects, so the folders map under the `aiops.` namespace; these tests prove that a
regular and an editable install both give that layout, with the shipped rules inside.
"""

import json
import subprocess
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PROBE = """
import importlib.util, json, sys
import aiops, aiops.cli, aiops.connectors.sources.simulator, aiops.detectors
from aiops.service.app import demo_config_path
print(json.dumps({
    "aiops": aiops.__file__,
    "connectors": aiops.connectors.__file__,
    "detectors": aiops.detectors.__file__,
    "demo": str(demo_config_path()),
    "demo_exists": demo_config_path().is_file(),
    "top_level_connectors": importlib.util.find_spec("connectors") is not None,
    "top_level_detectors": importlib.util.find_spec("detectors") is not None,
}))
"""


def _install(tmp_path: Path, *args: str) -> dict:
    """Install into a fresh venv, probe the layout, and check the shipped demo config."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run(
        [py, "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    probe = subprocess.run(
        [py, "-c", PROBE], cwd=tmp_path, check=True, capture_output=True, text=True, timeout=120
    )
    info = json.loads(probe.stdout)
    check = subprocess.run(
        [env_dir / "bin" / "aiops", "check", info["demo"]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    return info


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["regular", "editable"])
def test_install_maps_folders_under_the_aiops_namespace(tmp_path, mode):
    args = [str(REPO)] if mode == "regular" else ["-e", str(REPO)]
    info = _install(tmp_path, *args)
    site = str(tmp_path / "venv")
    if mode == "regular":
        # Installed copies, not the checkout.
        assert info["aiops"].startswith(site)
        assert info["connectors"].startswith(site)
        assert info["connectors"].endswith("aiops/connectors/__init__.py")
        assert info["detectors"].endswith("aiops/detectors/__init__.py")
        assert info["demo"].startswith(site)
    else:
        assert info["aiops"] == str(REPO / "aiops" / "__init__.py")
        assert info["connectors"] == str(REPO / "connectors" / "__init__.py")
        assert info["detectors"] == str(REPO / "detectors" / "__init__.py")
    assert info["demo_exists"]
    assert not info["top_level_connectors"]
    assert not info["top_level_detectors"]
