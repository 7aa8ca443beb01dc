"""Config, rule and alerting files: table tests over testdata, loader and model behaviour.

Each ``tests/testdata/NAME.bad.yaml`` has a sibling ``NAME.bad.errors`` holding the exact
lines ``aiops check`` prints for it; each ``*.good.yaml`` must check without error.
Plugin types whose messages the fixtures pin (``testsrc``, ``testnote``, ``testdet``,
``broken``) are test classes registered here, so the expected output does not change
when the real connectors and detectors evolve. The real ``simulator``, ``file``,
``console``, ``jsonl`` and ``robust_ewma`` are used when they import, and replaced by
stand-ins when they do not.
"""

from __future__ import annotations

import io
import math
import os
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

from aiops.alerting.selector import Matcher
from aiops.alerting.templates import Template, go_format_float, humanize
from aiops.config import (
    DEFAULT_ALERTING,
    AlertingConfig,
    ConfigError,
    ConfigErrors,
    LoadedConfig,
    Route,
    Rule,
    RuleGroup,
    TimeInterval,
    check_paths,
    load_alerting,
    load_config,
    load_rule_files,
    run_check,
)
from aiops.config.yamlpos import load_yaml
from aiops.registry import DEFAULT_DETECTOR, DETECTORS, NOTIFIERS, SOURCES, Registry
from aiops.types import SeriesKey

REPO = Path(__file__).resolve().parents[1]
TESTDATA = Path("tests/testdata")  # relative: error lines print paths as given


# --- test plugins --------------------------------------------------------------------


class FakeSource:
    """A source type whose settings model the fixtures pin."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        endpoint: str
        batch_size: int = Field(default=100, ge=1)
        token_env: str | None = None
        token_file: str | None = None
        url: str | None = None


class StandInPrometheus:
    """Used only while the real Prometheus source does not import: a pull source."""

    accepts_queries = True

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        url: str = "http://127.0.0.1:9090"


class FakeNotifier:
    """A notifier type whose settings model the fixtures pin."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        channel: str
        send_resolved: bool = True
        api_key_env: str | None = None
        webhook_url_file: str | None = None
        url: str | None = None


class FakeDetector:
    """A detector type whose constructor the fixtures pin."""

    def __init__(
        self, *, alpha: float = 0.1, window: int = 10, learn_below: float = math.inf, seed: int = 0
    ) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha, self.window, self.learn_below, self.seed = alpha, window, learn_below, seed


class StandInSimulator:
    """Used only while the real simulator source does not import."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        seed: int = 42
        hosts: int = Field(default=4, ge=1)
        speed: float = Field(default=0.0, ge=0.0)


class StandInFile:
    """Used only while the real file source does not import."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        path: str


class StandInConsole:
    """Used only while the real console notifier does not import."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)


class StandInJsonl:
    """Used only while the real JSONL notifier does not import."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        path: str


class StandInDetector(FakeDetector):
    """Used only while the real default detector does not import."""

    def __init__(
        self, *, alpha: float = 0.02, warmup: int = 30, learn_below: float = math.inf, seed: int = 0
    ) -> None:
        super().__init__(alpha=alpha, learn_below=learn_below, seed=seed)
        self.warmup = warmup


_TEST_TYPES: list[tuple[Registry[Any], str, str]] = [
    (SOURCES, "testsrc", "FakeSource"),
    (SOURCES, "broken", "aiops.no_such_module:Nothing"),
    (NOTIFIERS, "testnote", "FakeNotifier"),
    (DETECTORS, "testdet", "FakeDetector"),
]
REAL_PATHS = [(r, dict(r._paths)) for r in (SOURCES, NOTIFIERS, DETECTORS)]
PINNED_TYPES: list[tuple[Registry[Any], tuple[str, ...]]] = [
    (SOURCES, ("simulator", "file", "prometheus")),
    (NOTIFIERS, ("console", "jsonl")),
    (DETECTORS, ("ewma_z", "ensemble", "envelope_novelty", "robust_ewma")),
]
_STAND_INS: list[tuple[Registry[Any], str, str]] = [
    (SOURCES, "simulator", "StandInSimulator"),
    (SOURCES, "file", "StandInFile"),
    (SOURCES, "prometheus", "StandInPrometheus"),
    (NOTIFIERS, "console", "StandInConsole"),
    (NOTIFIERS, "jsonl", "StandInJsonl"),
    (DETECTORS, "robust_ewma", "StandInDetector"),
]


def patch_registries(setitem: Callable[[dict[str, str], str, str], None]) -> list[str]:
    """Register the test types; stand in for real types that do not import.

    Returns the names that needed a stand-in.
    """
    here = __name__
    for registry, name, target in _TEST_TYPES:
        setitem(registry._paths, name, target if ":" in target else f"{here}:{target}")
    missing = []
    for registry, name, target in _STAND_INS:
        try:
            registry.get(name)
        except (ImportError, AttributeError):
            setitem(registry._paths, name, f"{here}:{target}")
            missing.append(name)
    return missing


@pytest.fixture(autouse=True)
def plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every test runs from the repo root with the test plugin types registered.

    The registries are pinned to the built-in types the fixtures were written against,
    so that messages listing valid types do not change when a type is added.
    """
    monkeypatch.chdir(REPO)
    for registry, names in PINNED_TYPES:
        monkeypatch.setattr(registry, "_paths", {n: registry.path(n) for n in names})
        monkeypatch.setattr(registry, "_plugins_loaded", True)
    return patch_registries(monkeypatch.setitem)


# --- table tests over testdata -------------------------------------------------------


def _fixtures(suffix: str) -> list[Path]:
    return sorted((REPO / TESTDATA).glob(f"*{suffix}"))


GOOD = _fixtures(".good.yaml")
BAD = _fixtures(".bad.yaml")


def test_fixture_tables_are_complete() -> None:
    assert len(GOOD) >= 3
    assert len(BAD) >= 20
    for bad in BAD:
        assert bad.with_suffix(".errors").is_file(), f"{bad.name} has no .errors file"
    orphans = [
        e.name for e in (REPO / TESTDATA).glob("*.errors") if not e.with_suffix(".yaml").is_file()
    ]
    assert orphans == []


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_good_fixture_checks_clean(path: Path) -> None:
    assert [str(e) for e in check_paths([TESTDATA / path.name])] == []


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_bad_fixture_reports_exactly(path: Path) -> None:
    expected = path.with_suffix(".errors").read_text(encoding="utf-8").splitlines()
    got = [str(e) for e in check_paths([TESTDATA / path.name])]
    assert got == expected


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_bad_fixture_errors_are_located(path: Path) -> None:
    for error in check_paths([TESTDATA / path.name]):
        assert error.file.startswith("tests/testdata/")
        if error.message.startswith("cannot read"):
            continue
        assert error.line >= 1
        assert error.col >= 1


def test_run_check_over_testdata_prints_every_error() -> None:
    out = io.StringIO()
    assert run_check([TESTDATA], out) == 1
    lines = out.getvalue().splitlines()
    expected = sorted(
        {line for bad in BAD for line in bad.with_suffix(".errors").read_text().splitlines()},
    )
    assert sorted(lines[:-1]) == expected
    n_files = len(list((REPO / TESTDATA).rglob("*.yaml")))
    assert lines[-1] == f"checked {n_files} files: {len(expected)} errors"
    for line in lines[:-1]:
        file, row, col, _ = line.split(":", 3)
        assert file.startswith("tests/testdata/")
        assert int(row) >= 1
        assert int(col) >= 1


def test_run_check_shipped_rules_ok(monkeypatch: pytest.MonkeyPatch) -> None:
    # The shipped rules and examples use every built-in type: check them against the
    # real registries, not the pinned ones the fixtures use.
    for registry, paths in REAL_PATHS:
        monkeypatch.setattr(registry, "_paths", dict(paths))
    out = io.StringIO()
    code = run_check([Path("rules")], out)
    assert out.getvalue().splitlines()[-1].endswith(": OK"), out.getvalue()
    assert code == 0


def test_run_check_missing_path() -> None:
    out = io.StringIO()
    assert run_check([Path("tests/testdata/nope.yaml")], out) == 1
    assert out.getvalue().splitlines() == [
        "tests/testdata/nope.yaml: no such file or directory",
        "checked 0 files: 1 error",
    ]


# --- loading -----------------------------------------------------------------------------


def test_load_config_resolves_paths_and_loads_everything() -> None:
    loaded = load_config(TESTDATA / "daemon.good.yaml")
    assert isinstance(loaded, LoadedConfig)
    assert loaded.state_dir == TESTDATA / "aiops-state"
    assert loaded.rule_files == (
        TESTDATA / "rules.good.yaml",
        TESTDATA / "anchors.good.yaml",
        TESTDATA / "parts/more_rules.yaml",
    )
    assert loaded.alerting_file == TESTDATA / "alerting.good.yaml"
    assert [g.name for g in loaded.groups] == [
        "everything",
        "defaults-only",
        "no-rules",
        "all-commented-out",
        "anchors",
        "parts",
    ]
    assert loaded.groups[0].file == "tests/testdata/rules.good.yaml"
    assert loaded.groups[0].line == 3
    assert set(loaded.daemon.sources) == {"sim", "prom-backup_2", "prom"}
    sim = loaded.daemon.sources["sim"]
    assert (sim.id, sim.type) == ("sim", "simulator")
    assert sim.config.model_dump()["seed"] == 7
    assert loaded.daemon.http.listen == "127.0.0.1:9464"
    assert loaded.daemon.state.checkpoint_interval == 60.0
    assert [r.alert for _, r in loaded.rules()][:3] == ["LatencyAnomaly", "ByNamePattern", "PromQL"]
    assert loaded.files[0] == TESTDATA / "daemon.good.yaml"


def test_rule_values_and_defaults() -> None:
    groups = load_rule_files([TESTDATA / "rules.good.yaml"])
    everything = groups[0]
    assert everything.interval == 15.0
    rule = everything.rules[0]
    assert rule.selector is not None
    assert rule.selector.matches(
        SeriesKey.of("http_request_duration_seconds", {"service": "api", "dc": "eu"})
    )
    assert not rule.selector.matches(
        SeriesKey.of("http_request_duration_seconds", {"service": "api", "dc": "us"})
    )
    assert (rule.detector.type, rule.detector.params) == (
        "robust_ewma",
        {"alpha": 0.05, "warmup": 10},
    )
    assert (rule.threshold, rule.for_, rule.min_hits, rule.hits_window) == (0.995, 90.0, 2, 5)
    assert (rule.suppress, rule.protect_baseline) == (600.0, False)
    assert rule.retrain is not None
    assert rule.retrain.window == 7 * 86400.0
    assert rule.labels == {"severity": "page", "team": "42"}
    text = rule.annotations["summary"].render({"labels": {"host": "web-1"}, "value": 0.0123})
    assert text == "p99 latency on web-1 is 12.3ms"
    assert everything.rules[2].query == "sum by (service) (rate(http_requests_total[5m]))"
    assert everything.rules[2].selector is None
    minimal = groups[1].rules[0]
    assert minimal.detector.type == DEFAULT_DETECTOR == "ensemble"
    assert minimal.detector.params == {}
    assert (minimal.threshold, minimal.for_, minimal.min_hits, minimal.hits_window) == (
        0.998,
        0.0,
        1,
        1,
    )
    assert (minimal.suppress, minimal.protect_baseline, minimal.retrain) == (0.0, True, None)
    assert groups[2].rules == ()
    assert groups[3].rules == ()  # `rules:` with everything commented out is null
    assert minimal.labels == {}  # so is `labels:` with nothing under it


def test_yaml_anchors_and_merge_keys() -> None:
    cpu, mem = load_rule_files([TESTDATA / "anchors.good.yaml"])[0].rules
    assert (cpu.threshold, mem.threshold) == (0.999, 0.99)
    assert mem.labels == {"team": "infra"}
    assert mem.source == "sim"
    assert str(mem.selector) == "memory_usage_ratio"


def test_duplicate_group_across_files_quotes_first_place(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("groups:\n  - name: fleet\n")
    b.write_text("groups:\n  - name: other\n  - name: fleet\n")
    with pytest.raises(ConfigErrors) as info:
        load_rule_files([a, b])
    assert [str(e) for e in info.value.errors] == [
        f'{b}:3:11: group "fleet": duplicate group name "fleet" (first defined at {a}:2:11)'
    ]


def test_alerting_inheritance_and_lookup() -> None:
    alerting = load_alerting(TESTDATA / "alerting.good.yaml")
    root = alerting.route
    assert (root.group_wait, root.group_interval, root.repeat_interval) == (30.0, 300.0, 14400.0)
    page, warning = root.routes
    assert page.receiver == "file"
    assert page.continue_
    assert page.group_by == ("...",)
    nested = page.routes[0]
    assert nested.group_by == ("...",)
    assert nested.repeat_interval == 14400.0
    assert nested.active_time_intervals == ("business-hours",)
    assert warning.group_by == ("alertname", "service")
    assert warning.group_wait == 60.0
    assert [m.matches({"severity": "page", "team": "db"}) for m in page.matchers] == [True, True]
    assert [r.name for r in alerting.receivers] == ["console", "file", "blackhole"]
    file = alerting.receiver("file")
    assert [n.type for n in file.notifiers] == ["jsonl"]
    assert file.notifiers[0].config.model_dump()["path"] == "alerts.jsonl"
    assert alerting.receiver("blackhole").notifiers == ()
    silence = alerting.silences[0]
    assert silence.ends_at == datetime(2026, 1, 1, 23, 0, tzinfo=UTC)
    assert silence.active(datetime(2026, 1, 1, 12, tzinfo=UTC).timestamp())
    assert not silence.active(datetime(2026, 1, 1, 23, tzinfo=UTC).timestamp())
    offhours = alerting.time_interval("offhours")
    spec = offhours.time_intervals[1]
    assert spec.weekdays == ((6, 6), (0, 0))
    assert spec.days_of_month == ((1, 5), (-1, -1))
    assert spec.months == ((1, 3), (12, 12))
    assert spec.years == ((2026, 2027),)
    with pytest.raises(KeyError):
        alerting.receiver("nobody")


def test_default_alerting_is_one_console_receiver() -> None:
    assert DEFAULT_ALERTING.route.receiver == "console"
    assert [r.name for r in DEFAULT_ALERTING.receivers] == ["console"]
    assert [n.type for n in DEFAULT_ALERTING.receivers[0].notifiers] == ["console"]


def test_config_without_alerting_file_uses_default(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(
        "groups:\n  - name: g\n    rules:\n      - {alert: A, source: s, selector: up}\n"
    )
    (tmp_path / "aiops.yaml").write_text("sources:\n  s: {type: simulator}\nrule_files: [r.yaml]\n")
    loaded = load_config(tmp_path / "aiops.yaml")
    assert loaded.alerting == DEFAULT_ALERTING
    assert loaded.alerting_file is None
    assert loaded.state_dir == tmp_path / "aiops-state"


def test_base_dir_overrides_config_directory(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text("groups: []\n")
    config = tmp_path / "conf" / "aiops.yaml"
    config.parent.mkdir()
    config.write_text("sources:\n  s: {type: simulator}\nstate: {dir: /var/lib/aiops}\n")
    loaded = load_config(config, base_dir=tmp_path)
    assert loaded.rule_files == (tmp_path / "rules" / "r.yaml",)
    assert loaded.state_dir == Path("/var/lib/aiops")


def test_failed_reload_raises_and_leaves_running_config(tmp_path: Path) -> None:
    for name in ("daemon.good.yaml", "rules.good.yaml", "anchors.good.yaml", "alerting.good.yaml"):
        shutil.copy(REPO / TESTDATA / name, tmp_path / name)
    shutil.copytree(REPO / TESTDATA / "parts", tmp_path / "parts")
    running = load_config(tmp_path / "daemon.good.yaml")
    before = running.groups
    rules = tmp_path / "rules.good.yaml"
    rules.write_text(rules.read_text().replace("threshold: 0.995", "threshold: 2"))
    with pytest.raises(ConfigErrors) as info:
        load_config(tmp_path / "daemon.good.yaml")
    assert len(info.value.errors) == 1
    assert "must be in (0, 1], got 2" in str(info.value)
    assert running.groups is before
    assert running.groups[0].rules[0].threshold == 0.995


def test_config_errors_message_lists_every_error() -> None:
    with pytest.raises(ConfigErrors) as info:
        load_rule_files([TESTDATA / "multiple_errors.bad.yaml"])
    expected = (REPO / TESTDATA / "multiple_errors.bad.errors").read_text().splitlines()
    assert str(info.value).splitlines() == expected
    assert info.value.errors == sorted(info.value.errors, key=ConfigError.sort_key)


def test_load_alerting_raises_with_every_error() -> None:
    with pytest.raises(ConfigErrors) as info:
        load_alerting(TESTDATA / "undefined_receiver.bad.yaml")
    assert len(info.value.errors) == 4


def test_empty_rule_file_has_no_groups(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    assert load_rule_files([tmp_path / "empty.yaml"]) == []


def test_check_directory_recurses_and_dedupes(tmp_path: Path) -> None:
    os.makedirs(tmp_path / "a" / ".hidden")
    (tmp_path / "a" / "r.yml").write_text("groups:\n  - name: g\n    rules: {}\n")
    (tmp_path / "a" / ".hidden" / "x.yaml").write_text("nonsense: [")
    (tmp_path / "a" / "notes.txt").write_text("not yaml")
    (tmp_path / "aiops.yaml").write_text("sources: {s: {type: simulator}}\nrule_files: [a/*.yml]\n")
    errors = check_paths([tmp_path])
    assert [str(e) for e in errors] == [
        f'{tmp_path}/a/r.yml:3:12: group "g": "rules" must be a list, got a mapping'
    ]


# --- models in code ------------------------------------------------------------------


def test_models_can_be_built_in_code() -> None:
    rule = Rule(alert="A", source="s", selector="up", for_=60, threshold=0.9)
    assert rule.for_ == 60.0
    assert rule.hits_window == 1
    assert Rule.model_validate({"alert": "A", "source": "s", "query": "up", "for": "1m"}).for_ == 60
    dumped = rule.model_dump(mode="json")
    assert dumped["for"] == "1m"
    assert dumped["selector"] == "up"
    assert Rule.model_validate(dumped) == rule
    assert rule.fingerprint() == Rule.model_validate(dumped).fingerprint()
    assert rule.fingerprint() != rule.model_copy(update={"threshold": 0.95}).fingerprint()
    group = RuleGroup(name="g", rules=(rule,), file="x.yaml", line=3)
    assert (group.file, group.line) == ("x.yaml", 3)
    route = Route(receiver="r", continue_=True, matchers=("a=b",))
    assert route.continue_
    assert route.matchers == (Matcher("a", "=", "b"),)
    config = AlertingConfig(route=Route(receiver="r", routes=(route,)), receivers=())
    assert config.route.routes[0].group_wait == 30.0


def test_models_are_frozen() -> None:
    rule = Rule(alert="A", source="s", selector="up")
    with pytest.raises(ValueError, match="frozen"):
        rule.threshold = 0.5  # type: ignore[misc]


def test_time_interval_contains() -> None:
    ti = TimeInterval.model_validate(
        {
            "name": "month-end-evenings",
            "time_intervals": [
                {
                    "times": [{"start_time": "18:00", "end_time": "24:00"}],
                    "days_of_month": ["-2:-1"],
                    "location": "Europe/Berlin",
                }
            ],
        }
    )

    def at(*args: int) -> float:
        return datetime(*args, tzinfo=UTC).timestamp()

    assert ti.contains(at(2026, 1, 31, 17, 30))  # 18:30 in Berlin, last day
    assert not ti.contains(at(2026, 1, 31, 16, 30))  # 17:30 in Berlin
    assert not ti.contains(at(2026, 1, 28, 17, 30))  # not among the last two days
    assert ti.contains(at(2026, 2, 27, 20, 0))  # february has 28 days


def test_yaml_positions() -> None:
    doc = load_yaml("x.yaml", "a:\n  - b: 1\n    c: [x, y]\n")
    assert doc.value_pos(("a", 0, "c", 1)) == (3, 12)
    assert doc.key_pos(("a", 0, "c")) == (3, 5)
    assert doc.value_pos(("a", 0, "nope")) == (2, 5)
    assert doc.get(("a", 0, "b")) == 1


# --- templates -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "context", "expected"),
    [
        ("{{ $labels.host }}", {"labels": {"host": "a"}}, "a"),
        ("[{{ $labels.missing }}]", {"labels": {}}, "[]"),
        ("{{ $value }}", {"value": 0.1}, "0.1"),
        ("{{ $value }}", {"value": 2.0}, "2"),
        ("{{ $value }}", {}, "NaN"),
        ("{{ $value | humanize }}", {"value": 1234.0}, "1.234k"),
        ("{{ $value | humanize }}", {"value": 3_400_000.0}, "3.4M"),
        ("{{ humanize $value }}", {"value": 0.0005}, "500u"),
        ("{{ $value | humanizePercentage }}", {"value": 0.1234}, "12.34%"),
        ('{{ printf "%.2f" $value }}', {"value": 3.14159}, "3.14"),
        ('{{ $value | printf "%5.1f|" }}', {"value": 3.14159}, "  3.1|"),
        (
            '{{ printf "%d/%s/%v/%q" $value $series $score $series }}',
            {"value": 7.9, "series": "s", "score": 1.0},
            '7/s/1/"s"',
        ),
        (
            "{{ $labels.service | toUpper }}-{{ $labels.host | toLower }}",
            {"labels": {"service": "api", "host": "WEB"}},
            "API-web",
        ),
        (
            "{{ $series }} at {{ $externalURL }}",
            {"series": 'up{a="b"}', "externalURL": "http://x"},
            'up{a="b"} at http://x',
        ),
        ("a {{- $score -}} b {{/* why */}}c", {"score": 0.5}, "a0.5b c"),
        ('{{ "}}" }}', {}, "}}"),
        (
            "{{ $labels.host | humanize }}",
            {"labels": {"host": "web"}},
            '<error expanding template: cannot convert "web" to a number>',
        ),
    ],
)
def test_template_render(text: str, context: dict[str, Any], expected: str) -> None:
    assert Template(text).render(context) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{{ $lables.x }}", 'unknown variable "$lables" at column 4; did you mean "$labels"?'),
        ("{{ $value | humanise }}", 'unknown function "humanise" at column 13'),
        ("x {{ $value", 'unclosed action "{{" at column 3'),
        ("{{ }}", "empty action at column 1"),
        ("{{ $labels }}", "use $labels.NAME to read a label at column 4"),
        ("{{ $value.x }}", "$value has no fields at column 4"),
        ('{{ printf "%.2f" }}', "printf format has 1 verb(s) but 0 value(s) at column 11"),
        ('{{ printf "%y" 1 }}', 'printf: unsupported verb "%y" at column 11'),
        ("{{ toUpper }}", '"toUpper" takes 1 argument(s), got 0 at column 4'),
        ("{{ $value $score }}", 'unexpected "$score" at column 11; only a function takes'),
        ("{{ $value | }}", 'missing command before or after "|" at column 13'),
        ("{{ 1 | 2 }}", 'expected a function name after "|" at column 8'),
        ("{{ .Labels.x }}", 'unsupported field ".Labels.x" at column 4'),
        ("ok\n{{ $nope }}", 'unknown variable "$nope" at line 2, column 4'),
        ("{{ /* open }}", "unclosed comment at column 1"),
    ],
)
def test_template_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + _escape(message)):
        Template(text)


def _escape(text: str) -> str:
    import re

    return re.escape(text)


def test_template_label_names_and_equality() -> None:
    t = Template('{{ $labels.host }} {{ printf "%s" $labels.service }} {{ $value }}')
    assert t.label_names == {"host", "service"}
    assert t == Template(t.text)
    assert hash(t) == hash(Template(t.text))
    assert str(t) == t.text


def test_go_float_and_humanize_edges() -> None:
    assert go_format_float(1e21) == "1e+21"
    assert go_format_float(-0.00001234) == "-1.234e-05"
    assert go_format_float(0.0001) == "0.0001"
    assert go_format_float(123456789.0) == "1.23456789e+08"
    assert humanize(-2500.0) == "-2.5k"
    assert humanize(math.inf) == "+Inf"
    assert humanize(1e30) == "1e+06Y"
