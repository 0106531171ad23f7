"""The version, in a module of its own: the code reads it from here, never from the package face."""

__version__ = "0.1.0"
