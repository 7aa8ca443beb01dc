"""Shipped rule files (data, not code).

This file only makes the folder an importable package (``aiops.rules``) so that the
installed demo and default rules can be found with :mod:`importlib.resources`.
"""
