"""The package's version, in a module of its own so that modules below the
package's ``__init__`` (the OpenTelemetry meter's version) can read it."""

__all__ = ["__version__"]

__version__ = "0.1.0"
