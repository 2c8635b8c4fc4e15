"""The package version (one place, imported by the package, the run records and the CLI)."""

__version__ = "0.1.0"
