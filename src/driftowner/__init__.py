"""driftowner: one accountable owner for every production AI system."""

__version__ = "0.1.0"
