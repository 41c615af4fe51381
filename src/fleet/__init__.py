"""fleet: one Python web app as a self-healing, load-balanced cluster on one machine."""

__version__ = "0.1.0"
