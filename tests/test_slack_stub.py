"""The Slack stub refuses what Slack refuses (so tests against it can fail)."""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageStat
from slack_sdk.errors import SlackApiError
from slack_sdk.web import WebClient
from slack_stub import BOT_TOKEN, SlackStub, block_kit_problem

ROOT = Path(__file__).resolve().parent.parent


def _button(aid: str, text: str = "Go", **kw: Any) -> dict[str, Any]:
    return {"type": "button", "text": {"type": "plain_text", "text": text}, "action_id": aid, **kw}


@pytest.mark.parametrize(
    ("blocks", "problem"),
    [
        ([{"type": "divider"}] * 51, "more than 50"),
        (
            [{"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}],
            "longer than 150",
        ),
        ([{"type": "header", "text": {"type": "mrkdwn", "text": "x"}}], "plain_text"),
        ([{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}], "longer than 3000"),
        ([{"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 11}], "10 fields"),
        ([{"type": "actions", "elements": [_button("a"), _button("a")]}], "not unique"),
        (
            [
                {"type": "actions", "elements": [_button("a")]},
                {"type": "actions", "elements": [_button("a")]},
            ],
            "not unique",
        ),
        ([{"type": "actions", "elements": [_button("a", value="v" * 2001)]}], "2000"),
        ([{"type": "actions", "elements": [_button("a", "t" * 76)]}], "longer than 75"),
        ([{"type": "actions", "elements": [_button("a", style="red")]}], "style"),
        (
            [{"type": "section", "block_id": "x", "text": {"type": "mrkdwn", "text": "a"}}] * 2,
            "unique",
        ),
        ([{"type": "image", "alt_text": "a"}], "exactly one of"),
        ([{"type": "carousel"}], "unknown block type"),
    ],
)
def test_block_kit_limits(blocks: list[Any], problem: str) -> None:
    assert problem in block_kit_problem(blocks)


def test_web_api_answers_like_slack() -> None:
    with SlackStub() as stub:
        good = WebClient(token=BOT_TOKEN, base_url=stub.api_url, retry_handlers=[])
        resp = good.chat_postMessage(channel="#alerts", text="hi")
        assert resp["ok"] is True
        assert resp["channel"] == "C0ALERTS01"
        with pytest.raises(SlackApiError) as err:
            WebClient(token="xoxb-nope", base_url=stub.api_url).chat_postMessage(
                channel="C0ALERTS01", text="hi"
            )
        assert err.value.response["error"] == "invalid_auth"
        with pytest.raises(SlackApiError) as err:
            WebClient(base_url=stub.api_url).chat_postMessage(channel="C0ALERTS01", text="x")
        assert err.value.response["error"] == "not_authed"
        with pytest.raises(SlackApiError) as err:
            good.chat_update(channel="C0ALERTS01", ts="1700000000.000001", text="x")
        assert err.value.response["error"] == "message_not_found"
        with pytest.raises(SlackApiError) as err:
            good.chat_update(channel="#alerts", ts=resp["ts"], text="x")  # needs the ID
        assert err.value.response["error"] == "channel_not_found"
        with pytest.raises(SlackApiError) as err:
            good.chat_postMessage(channel="C0ALERTS01", text="x", thread_ts="1.2")
        assert err.value.response["error"] == "thread_not_found"
        with pytest.raises(SlackApiError) as err:
            good.files_completeUploadExternal(files=[{"id": "F000000099"}], channel_id="C0ALERTS01")
        assert err.value.response["error"] == "file_not_found"
        assert len(stub.violations) == 2  # the bad thread and the file never uploaded


def test_upload_length_must_match() -> None:
    import urllib.error
    import urllib.request

    with SlackStub() as stub:
        client = WebClient(token=BOT_TOKEN, base_url=stub.api_url)
        url = client.files_getUploadURLExternal(filename="a.png", length=10)["upload_url"]
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(urllib.request.Request(url, data=b"12345", method="POST"))
        assert err.value.code == 400
        assert "announced 10" in stub.violations[0]


def test_readme_example_is_what_the_code_makes(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "make_slack_example", ROOT / "docs/make_slack_example.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    message, chart = module.example(tmp_path)
    made = json.loads(message.read_text())
    committed = json.loads((ROOT / "docs/slack_message.json").read_text())
    assert block_kit_problem(made["blocks"]) == ""
    assert made == committed  # regenerate with: python docs/make_slack_example.py
    image = Image.open(io.BytesIO(chart.read_bytes())).convert("RGB")
    assert image.size == (800, 300)
    # The committed chart is the one the code draws (a small tolerance for another
    # matplotlib's anti-aliasing; a changed series, band or marker moves far more).
    shown = Image.open(ROOT / "docs/slack_chart.png").convert("RGB")
    assert shown.size == (800, 300)
    assert max(ImageStat.Stat(ImageChops.difference(image, shown)).mean) < 1.0
    readme = (ROOT / "README.md").read_text()
    assert "docs/slack_chart.png" in readme
    # The README shows the whole payload: its JSON block is what the code makes.
    block = readme.split("payload is in `docs/slack_message.json`)", 1)[1]
    block = block.split("```json\n", 1)[1].split("```", 1)[0]
    assert json.loads(block) == made
