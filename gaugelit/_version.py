"""The package version, in one place (the run files record it)."""
__version__ = "0.1.0"
