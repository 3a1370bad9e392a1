"""The sysplan release, readable from every layer (exports and JSON stamp it)."""

__version__ = "0.1.0"
