"""vigie: a privacy-safe analytics replica for a connected-device fleet."""

__version__ = "0.1.0"
