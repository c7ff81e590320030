"""pointgate gateway: token service, points ledger, merchant and interop APIs, settlement."""

__version__ = "0.1.0"
