"""Data collection assets, one module each: raw_transactions (daily) and raw_customers."""

from fti_assets.ingestion.customers import build_raw_customers
from fti_assets.ingestion.transactions import ACCOUNTING_CHECK, QUALITY_CHECK, QUARANTINE, build_raw_transactions
from fti_assets.settings import ProjectSettings

__all__ = ["ACCOUNTING_CHECK", "QUALITY_CHECK", "QUARANTINE", "build_ingestion_assets"]


def build_ingestion_assets(settings: ProjectSettings) -> list:
    return [build_raw_transactions(settings), build_raw_customers(settings)]
