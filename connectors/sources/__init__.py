"""Sources: where points and log records come from."""
