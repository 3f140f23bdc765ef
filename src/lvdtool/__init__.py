"""lvd: curate image corpora and train DINOv2-style foundation models."""

__version__ = "0.1.0"
