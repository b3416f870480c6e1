"""llm-collector core: configuration, component model, pipelines, delivery and our own telemetry.

The public surface is deliberately small; components import what they need from the modules named here.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
