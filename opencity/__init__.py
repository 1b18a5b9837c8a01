"""OpenCity: anonymize and publish smart-city open data."""

__version__ = "0.1.0"
