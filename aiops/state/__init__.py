"""Durable state: sealed snapshot envelopes and the daemon's checkpoints."""
