"""What an attacker with write access to the state directory does to a river model's state.

Shared by the tests that edit a checkpoint (``test_safe_state_on_disk``) and a stored
model version (``test_models_lifecycle``) on disk: only the pickles' signature, or the
envelope's format version, may stand between the edit and the code it would run.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

from aiops.state.signing import sign_blobs

#: The edits: the pickle replaced (signature kept), the signature removed, a wrong one,
#: or validly signed (a leaked key) inside an envelope of a format this release lacks.
TAMPERINGS = ("payload", "hmac_removed", "hmac_wrong", "format")


class Evil:
    """A pickle that creates a file when it is loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def tamper_river_models(detector_state: dict[str, Any], tamper: str, marker: Path) -> None:
    """Put an :class:`Evil` pickle in a river detector's state, and apply ``tamper``.

    ``"format"`` re-signs the models validly; the caller then changes the envelope's
    format version when it seals the state again.
    """
    assert detector_state["models"][0] is not None  # the models are stored, signed
    assert detector_state["models_hmac"]
    detector_state["models"][0] = pickle.dumps(Evil(marker))
    if tamper == "hmac_removed":
        del detector_state["models_hmac"]
    elif tamper == "hmac_wrong":
        detector_state["models_hmac"] = "0" * 64
    elif tamper == "format":
        detector_state["models_hmac"] = sign_blobs(detector_state["models"], purpose="river.models")
