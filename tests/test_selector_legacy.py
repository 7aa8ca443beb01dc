"""Alertmanager's legacy matcher maps: accepted, converted to matchers, flagged as deprecated."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

from aiops.alerting.selector import Matcher
from aiops.config.check import check_paths, check_warnings, run_check
from aiops.config.loader import load_alerting

LEGACY = """\
route:
  receiver: default
  routes:
    - receiver: pager
      match: {severity: page}
      match_re: {service: "db|cache"}
      matchers: ['team="sre"']
      routes:
        - receiver: default
          match: {env: 'say "hi"'}
receivers:
  - name: default
  - name: pager
inhibit_rules:
  - source_match: {severity: critical}
    target_match_re: {severity: "warning|info"}
    equal: [host]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "alerting.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_legacy_maps_load_as_matchers(tmp_path: Path) -> None:
    config = load_alerting(write(tmp_path, LEGACY))
    pager = config.route.routes[0]
    assert set(pager.matchers) == {
        Matcher("team", "=", "sre"),
        Matcher("severity", "=", "page"),
        Matcher("service", "=~", "db|cache"),
    }
    assert pager.routes[0].matchers == (Matcher("env", "=", 'say "hi"'),)
    rule = config.inhibit_rules[0]
    assert rule.source_matchers == (Matcher("severity", "=", "critical"),)
    assert rule.target_matchers == (Matcher("severity", "=~", "warning|info"),)
    # match_re is anchored like matchers: "db" matches, "db-2" does not.
    assert pager.matchers[2].matches({"service": "db"})
    assert not pager.matchers[2].matches({"service": "db-2"})


def test_check_flags_legacy_keys_as_deprecated_but_passes(tmp_path: Path) -> None:
    path = write(tmp_path, LEGACY)
    assert check_paths([path]) == []
    warnings = [str(w) for w in check_warnings([path])]
    f = str(path)
    assert warnings == [
        f'{f}:5:7: route: warning: "match" is deprecated (Alertmanager 0.22); '
        "use matchers: ['severity=\"page\"']",
        f'{f}:6:7: route: warning: "match_re" is deprecated (Alertmanager 0.22); '
        "use matchers: ['service=~\"db|cache\"']",
        f'{f}:10:11: route: warning: "match" is deprecated (Alertmanager 0.22); '
        'use matchers: [\'env="say \\\\"hi\\\\""\']',
        f'{f}:15:5: inhibit_rules[0]: warning: "source_match" is deprecated (Alertmanager 0.22); '
        "use source_matchers: ['severity=\"critical\"']",
        f'{f}:16:5: inhibit_rules[0]: warning: "target_match_re" is deprecated '
        "(Alertmanager 0.22); use target_matchers: ['severity=~\"warning|info\"']",
    ]
    out = io.StringIO()
    assert run_check([path], out) == 0
    assert out.getvalue().splitlines()[-1] == "checked 1 file: OK, 5 warnings"


def test_bad_legacy_entries_are_errors(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        route:
          receiver: default
          routes:
            - receiver: default
              match_re: {service: "(db"}
            - receiver: default
              match: [severity]
            - receiver: default
              match: {bad-name: x}
        receivers:
          - name: default
        """,
    )
    f = str(path)
    assert [str(e) for e in check_paths([path])] == [
        f'{f}:5:27: route: "match_re.service": invalid regex "(db": missing ): ^(?:(db)$',
        f'{f}:7:14: route: "match" must be a mapping of label names to values, got a list',
        f'{f}:9:14: route: "match": invalid label name "bad-name"',
    ]
    out = io.StringIO()
    assert run_check([path], out) == 1


def test_alertmanagers_example_checks_clean_and_its_legacy_spelling_with_warnings() -> None:
    examples = Path(__file__).parent / "alertmanager_examples"
    out = io.StringIO()
    assert run_check([examples / "simple.yml"], out) == 0
    assert out.getvalue().splitlines() == ["checked 1 file: OK"]
    path = examples / "simple_legacy.yml"
    assert check_paths([path]) == []
    out = io.StringIO()
    assert run_check([path], out) == 0
    assert out.getvalue().splitlines()[-1] == "checked 1 file: OK, 9 warnings"
