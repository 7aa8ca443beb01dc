"""Notifiers: where notifications go."""
