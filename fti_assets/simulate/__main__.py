"""CLI: simulate the retailer source and write it to a database.

Example: python -m fti_assets.simulate --url sqlite:///data/source.db --customers 5000 --days 180
"""

from __future__ import annotations

import argparse
from datetime import date, timedelta
from pathlib import Path

from sqlalchemy.engine import make_url

from fti_assets.simulate.generator import DriftSpec, simulate, write_source


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fti_assets.simulate", description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="SQLAlchemy URL, e.g. sqlite:///data/source.db")
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--start", type=date.fromisoformat, default=date(2026, 1, 1), help="YYYY-MM-DD")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--bad-row-fraction", type=float, default=0.005)
    parser.add_argument(
        "--purchase-rate-multiplier", type=float, default=1.0, help="below 1: a sparse purchase log (0.087: 3 each)"
    )
    parser.add_argument("--drift-from-day", type=int, help="0-based day index from which the multipliers apply")
    parser.add_argument("--spend-multiplier", type=float, default=1.0)
    parser.add_argument("--frequency-multiplier", type=float, default=1.0)
    parser.add_argument("--churn-multiplier", type=float, default=1.0)
    args = parser.parse_args(argv)
    multipliers = (args.spend_multiplier, args.frequency_multiplier, args.churn_multiplier)
    if args.drift_from_day is None and multipliers != (1.0, 1.0, 1.0):
        parser.error("the drift multipliers need --drift-from-day")
    return args


def main(argv: list[str] | None = None) -> None:
    """Simulate, write both tables, and print a one-line summary."""
    args = _parse_args(argv)
    drift = (
        None
        if args.drift_from_day is None
        else DriftSpec(
            from_day=args.drift_from_day,
            spend_multiplier=args.spend_multiplier,
            frequency_multiplier=args.frequency_multiplier,
            churn_multiplier=args.churn_multiplier,
        )
    )
    source = simulate(
        n_customers=args.customers,
        days=args.days,
        start=args.start,
        seed=args.seed,
        drift=drift,
        bad_row_fraction=args.bad_row_fraction,
        purchase_rate_multiplier=args.purchase_rate_multiplier,
    )

    url = make_url(args.url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    write_source(args.url, source)

    end = args.start + timedelta(days=args.days - 1)
    print(
        f"simulated {len(source.customers)} customers, {len(source.transactions)} transactions "
        f"({source.bad_rows} bad rows injected), {args.start} to {end} -> "
        f"{url.render_as_string(hide_password=True)}"
    )


if __name__ == "__main__":
    main()
