"""The package's version, in a module of its own so that core modules need not import the package."""

__version__ = "0.1.0.dev0"
