"""esact-cc: compiler toolchain and hardware model for the ESACT sparse Transformer accelerator."""

__version__ = "0.1.0"
