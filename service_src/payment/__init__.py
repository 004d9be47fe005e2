"""RoboShop payment service: a drop-in for RoboShop's payment API (see README.md)."""

__version__ = "1.0.0"
