"""The version of tiletune, recorded with every measurement."""
__version__ = "0.1.0"
