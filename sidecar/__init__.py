"""vip-sidecar: UCARP-compatible floating-IP failover daemon."""

# The one place the version is written: pyproject.toml reads it (dynamic version), the
# CLI prints it, the man page carries it, a test holds the chart's appVersion to it.
__version__ = "0.1.0"
