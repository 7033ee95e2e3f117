"""txgate: a self-hosted transaction security stack for institutions on Ethereum."""

__all__ = ["__version__"]

__version__ = "0.1.0"
