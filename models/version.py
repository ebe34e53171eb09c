"""The one place the vmm version lives."""

__version__ = "0.1.0"
