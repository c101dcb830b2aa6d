"""Third-party deprecation notices the project cannot fix in its own calls, silenced one by one.

Importing Feast puts ``simplefilter("once", DeprecationWarning)`` in front of every filter set before
it, so ``silence_known_warnings`` runs again right after Feast is imported (it is idempotent).
"""

import warnings

# (message regex, category, module regex): each names exactly one notice of one library.
KNOWN_NOTICES = (
    # ibis (inside Feast's duckdb offline store) calls an API that duckdb 1.5 deprecates.
    (r"fetch_arrow_table\(\) is deprecated", DeprecationWarning, r"ibis\."),
    # evidently 0.7 touches numpy.core at import.
    (r"numpy\.core is deprecated", DeprecationWarning, r"evidently\."),
    # litestar (imported by evidently) warns about its own signatures at import.
    (r"(Call to deprecated function 'Dependency'|Use of deprecated class 'DependencyKwarg')", DeprecationWarning, ""),
    # MLflow's SQL tracking store uses a loader strategy SQLAlchemy 2.1 deprecates.
    (r"The ``noload`` loader strategy is deprecated", DeprecationWarning, r"mlflow\."),
    # dagster-mlflow 0.29 reads context.run_id, which Dagster 1.13 deprecates.
    (r"InitResourceContext\.(run_id|dagster_run) is deprecated", DeprecationWarning, ""),
)


def silence_known_warnings() -> None:
    for message, category, module in KNOWN_NOTICES:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
