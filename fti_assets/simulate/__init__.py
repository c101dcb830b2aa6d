"""Synthetic retailer source data (customers and transactions) for the churn pipeline."""

from fti_assets.simulate.generator import DriftSpec, SimulatedSource, append_transactions, simulate, write_source

__all__ = ["DriftSpec", "SimulatedSource", "append_transactions", "simulate", "write_source"]
