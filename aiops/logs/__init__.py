"""Logs: template mining (:mod:`aiops.logs.mining`) and log rules (:mod:`aiops.logs.rules`).

A log record's message is masked and mined into a template id per stream partition
(source plus the rule's ``partition_by`` labels). Log rules turn templates into alerts:
``new_template`` (a template first seen after a learning period), ``template_rate`` (each
template's count per interval scored as a series by a metric detector) and
``error_burst`` (the count of error lines per interval, scored the same way).
"""

from aiops.logs.mining import DEFAULT_MASKS, LogMiner, Mask, Masker, MineResult, MinerSettings

__all__ = ["DEFAULT_MASKS", "LogMiner", "Mask", "Masker", "MineResult", "MinerSettings"]
