"""The Celery app of the project's workers (``scripts/workers.sh``): dagster-celery's step task, nothing else.

    celery -A fti_assets.celery_app worker -Q dagster -n fti-default@%h   # every untagged step
    celery -A fti_assets.celery_app worker -Q gpu -n fti-gpu@%h           # steps tagged dagster-celery/queue: gpu

The broker, the result backend and the app's settings are those of the executor (``fti_assets.scaleout``), from
the same environment variables, so sender and workers cannot disagree. The task loads the step's job from the
code location (``fti_assets.definitions``) in the worker's process: the worker needs the project installed and
the environment of the run (``DAGSTER_HOME`` + ``FTI_DAGSTER_PG_URL``, ``FTI_CONFIG``, ``FTI_DATA_DIR``, the URLs of
MLflow, Feast and the online store). It is ``dagster_celery.app`` with the broker read from the environment.
"""

from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from fti_assets.scaleout import celery_app_args

app = make_app(CeleryExecutor.for_cli(**celery_app_args()).app_args())
execute_plan = create_task(app)
