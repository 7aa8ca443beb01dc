"""aiopsd: an anomaly-detection daemon for operations.

Connectors stream metrics and logs from Kafka and Prometheus into online-learning
detectors; alerts go through an Alertmanager-style router to Slack and incident tools.
The core contracts live in :mod:`aiops.pipeline.source`, :mod:`aiops.pipeline.detector` and
:mod:`aiops.alerting.notify`; connectors and detectors install as :mod:`aiops.connectors` and
:mod:`aiops.detectors`.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
