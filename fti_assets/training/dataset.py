"""Time-based split of a point-in-time training dataset."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class SplitPeriods:
    train: tuple[str, str]
    validation: tuple[str, str]
    test: tuple[str, str]

    def as_metadata(self) -> dict[str, str]:
        return {name: f"{first} .. {last}" for name, (first, last) in self.__dict__.items()}


def split_by_time(days: list[str], validation_days: int, test_days: int) -> SplitPeriods:
    """The last ``test_days`` days test, the ``validation_days`` before them validation, the rest train."""
    days = sorted(set(days))
    if len(days) < validation_days + test_days + 1:
        raise ValueError(
            f"{len(days)} labelled days cannot hold {validation_days} validation + {test_days} test days "
            "and a training period: label more days or shorten split.validation_days / split.test_days"
        )
    test, validation = days[-test_days:], days[-(test_days + validation_days) : -test_days]
    train = days[: -(test_days + validation_days)]
    return SplitPeriods((train[0], train[-1]), (validation[0], validation[-1]), (test[0], test[-1]))


def assign_split(as_of_day: pd.Series, periods: SplitPeriods) -> pd.Series:
    split = pd.Series("train", index=as_of_day.index, dtype="string")
    split[as_of_day >= periods.validation[0]] = "validation"
    split[as_of_day >= periods.test[0]] = "test"
    return split
