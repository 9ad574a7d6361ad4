"""Integration tests: driftowner against real external parts (Prometheus, SMTP, ...)."""
