"""Sources and notifiers.

Sources turn bytes from Kafka, Prometheus, files or the simulator into batches (contract:
:mod:`aiops.pipeline.source`); notifiers deliver notifications (contract:
:mod:`aiops.alerting.notify`).
Each module owns at most one optional dependency, declared as an extra of the package.
"""

__all__: list[str] = []
