"""Detection: detectors judge signals into findings, rules turn findings into conditions."""
