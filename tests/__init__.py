"""driftowner's tests. A package, so shared helpers import as ``tests.conftest`` and
``tests.integration.prometheus_server`` from any test directory."""
