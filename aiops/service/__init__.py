"""The running service: the daemon loop, its assembly from config, HTTP and metrics."""
