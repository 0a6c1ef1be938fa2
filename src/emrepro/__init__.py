"""emrepro: reproduce emergent-misalignment experiments from raw inputs to model cards."""

__version__ = "0.1.0"
