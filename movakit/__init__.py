"""movakit: the MOVA model library, its stages, and the runtime that serves them."""

__version__ = "0.1.0"
