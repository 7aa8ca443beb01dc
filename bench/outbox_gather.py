"""The outbox appender's gathering and encoding intervals, compared in one process.

Usage (from the repository root)::

    .venv/bin/python bench/outbox_gather.py [--rounds 10] [--settings 0.05/0.05,0.2/0.05,0.2/0.2]

Runs ``bench/dead_receiver.py``'s dead-receiver configuration (a webhook that never
answers, about 1,200 notifications a run) with each setting ``gather/encode`` of
:data:`aiops.alerting.outbox.APPEND_GATHER_SECONDS` (one transaction per gathering)
and :data:`~aiops.alerting.outbox.APPEND_ENCODE_SECONDS` (what was handed over is
encoded this often meanwhile; equal to the gathering: once, at its end), the settings
interleaved by round, their order alternating. Printed per setting, medians of the
rounds: the appender thread's CPU, the data loop's CPU, the cyclic garbage collector's
passes on the loop's thread and their CPU (a notification waiting to be encoded is
alive, and counts towards the next pass), the times the loop waited for the
interpreter lock and the time it was blocked.
"""

from __future__ import annotations

import argparse
import gc
import socket
import statistics
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dead_receiver

from aiops.alerting import outbox


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--settings", default="0.05/0.05,0.2/0.05,0.2/0.2")
    args = ap.parse_args()
    settings = [
        (float(g), float(e)) for g, e in (item.split("/") for item in args.settings.split(","))
    ]
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead.listen(1024)
    url = f"http://127.0.0.1:{dead.getsockname()[1]}/hook"
    runs: dict[tuple[float, float], list[dict[str, float]]] = {s: [] for s in settings}
    try:
        with tempfile.TemporaryDirectory() as d:
            root = Path(d)
            dead_receiver.write_data(root, 20, 1500, 50)
            config = dead_receiver.write_config(
                root, "dead", f"    webhook_configs: [{{url: '{url}', timeout: 250ms}}]\n"
            )
            dead_receiver.run_once(config, root / "warm")
            baseline = threading.active_count()
            for r in range(args.rounds):
                for setting in settings if r % 2 == 0 else settings[::-1]:
                    outbox.APPEND_GATHER_SECONDS, outbox.APPEND_ENCODE_SECONDS = setting
                    dead_receiver._wait_for_threads(baseline)
                    gc.collect()
                    seconds, _steps, _points, _results = dead_receiver.run_once(
                        config, root / "state"
                    )
                    runs[setting].append(seconds)
    finally:
        dead.close()
    print(f"{args.rounds} rounds, medians:")
    for (gather, encode), got in runs.items():

        def med(key: str, scale: float = 1000.0, got: list[dict[str, float]] = got) -> float:
            return scale * statistics.median(s[key] for s in got)

        print(
            f"  gather {gather:g} s, encode every {encode:g} s: appender CPU "
            f"{med('appender'):.1f} ms, loop CPU {med('loop CPU'):.0f} ms, collector passes "
            f"on the loop {med('collections', 1.0):.1f} ({med('collecting'):.2f} ms), lock "
            f"waits {med('switches', 1.0):.1f}, blocked {med('blocked'):.1f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
