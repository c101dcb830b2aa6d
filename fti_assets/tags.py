"""Run tags the pipelines and the sensors share: how a run says why it exists."""

RETRAIN_REASON = "fti/retrain_reason"
DRIFTED_PARTITIONS = "fti/drifted_partitions"
CHAMPION_VERSION = "fti/champion_version"
DRIFT_OVERRIDE = "fti/drift_override"
TRIGGER = "fti/trigger"
