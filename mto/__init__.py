"""mto: Match Task to Objective, a config-driven experiment runner for encoder-decoder language models."""

__version__ = "0.1.0"
