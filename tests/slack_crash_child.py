"""Child process of test_slack_crash: sends notifications the way an outbox worker does.

Arguments: the Slack API URL, the state directory, the file of notifications (one
encoded notification per line), the file of delivered idempotency keys. Each
notification not yet in the delivered file is sent until delivered, then its key is
appended there (fsync'd): the outbox's "mark delivered". Prints ``ready`` once
imported, so the parent kills it while it sends, not while it starts.

The test runs :func:`run` in processes forked from a forkserver that imported the
modules it needs once (a fresh interpreter spends about a second of CPU importing them,
21 times); SIGKILL ends such a process as it ends a fresh one. ``python
slack_crash_child.py ARGS`` still runs it alone.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from aiops.alerting.notify import Delivered, PermanentFailure
from aiops.alerting.outbox import decode_notification
from aiops.connectors.notifiers.slack import SlackNotifier


def run(api_url: str, state: str, todo: str, done: str, token: str) -> None:
    """The child's work in a forked process (a forkserver's target): exit with its code."""
    os.environ["SLACK_BOT_TOKEN"] = token
    sys.stdout.flush()
    os._exit(send_all(api_url, state, todo, done))


def main() -> int:
    return send_all(*sys.argv[1:5])


def send_all(api_url: str, state: str, todo: str, done: str) -> int:
    notifier = SlackNotifier(
        SlackNotifier.Config(
            token_env="SLACK_BOT_TOKEN", channel="C0ALERTS01", api_url=api_url, chart=False
        ),
        base_dir=Path(state),
    )
    delivered = set(Path(done).read_text().split()) if Path(done).exists() else set()
    print("ready", flush=True)
    with open(done, "a") as out:
        for line in Path(todo).read_text().splitlines():
            n = decode_notification(line)
            if n.idempotency_key in delivered:
                continue
            while True:
                result = notifier.send(n)
                if isinstance(result, Delivered):
                    break
                if isinstance(result, PermanentFailure):
                    print(result.reason, file=sys.stderr)
                    return 3
                time.sleep(0.05)
            out.write(n.idempotency_key + "\n")
            out.flush()
            os.fsync(out.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
