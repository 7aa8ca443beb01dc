"""Record formats: decoders from the bytes of one Kafka record (or file chunk) to data.

Contract (:mod:`aiops.pipeline.decoder`): ``decode(payload, *, origin, timestamp)`` returns a
:class:`~aiops.pipeline.decoder.Decoded` (columnar points, log records, rejects, counted skips)
and never raises because of the payload; malformed items become rejects with a stable
reason word.

Formats, by the ``format:`` name used in config files:

- ``prometheus_json``: prometheus-kafka-adapter samples.
- ``influx_line``: InfluxDB line protocol (Telegraf's Kafka output).
- ``generic_json``: any JSON, with dot paths for name, value, time and labels.
- ``log_lines``: plain text, one log record per line.
- ``log_json``: JSON log events (Filebeat, Fluent Bit, Vector presets).
- ``journald``: ``journalctl -o json`` entries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiops.pipeline.decoder import Decoder, DecoderConfig

from .generic_json import GenericJsonDecoder
from .influx_line import InfluxLineDecoder
from .journald import JournaldDecoder
from .log_json import LogJsonDecoder
from .log_lines import LogLinesDecoder
from .prometheus_json import PrometheusJsonDecoder

__all__ = [
    "FORMATS",
    "GenericJsonDecoder",
    "InfluxLineDecoder",
    "JournaldDecoder",
    "LogJsonDecoder",
    "LogLinesDecoder",
    "PrometheusJsonDecoder",
    "create_decoder",
]

#: Format name -> decoder class. The modules need only the standard library and
#: pydantic, so importing them all is cheap. (To fold into :mod:`aiops.registry`, use
#: ``f"{cls.__module__}:{cls.__qualname__}"`` as the lazy path.)
FORMATS: dict[str, type[Decoder]] = {
    cls.type: cls
    for cls in (
        PrometheusJsonDecoder,
        InfluxLineDecoder,
        GenericJsonDecoder,
        LogLinesDecoder,
        LogJsonDecoder,
        JournaldDecoder,
    )
}


def create_decoder(
    name: str, config: DecoderConfig | Mapping[str, Any] | None = None, /, **settings: Any
) -> Decoder:
    """Build the decoder registered as ``name``.

    >>> create_decoder("influx_line", precision="ms").config.precision
    'ms'
    >>> create_decoder("csv")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown format "csv"; valid formats: generic_json, influx_line, ...
    """
    try:
        cls = FORMATS[name]
    except KeyError:
        valid = ", ".join(sorted(FORMATS))
        raise ValueError(f'unknown format "{name}"; valid formats: {valid}') from None
    return cls(config, **settings)
