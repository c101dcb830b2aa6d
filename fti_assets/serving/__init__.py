"""Online inference: an HTTP service that scores customers with the MLflow `champion` and Feast online features.

``python -m fti_assets.serving`` (``--host``, ``--port``, ``--config``) serves on 127.0.0.1:8000:

- ``POST /predict`` ``{"customer_ids": [...]}``: churn probability and label per id, from the features the
  Feast online store holds for it (read through the feature service recorded on the model version) and the
  champion pyfunc model. An id the online store has no row for is answered ``known: false`` with no score.
- ``GET /health``: the model being served, the last refresh error, and a real read of the online store.
- ``GET /metrics``: Prometheus text (its own registry). ``/docs``: the OpenAPI UI.

One module per job: ``settings`` (what the service needs), ``request_log`` (the log monitoring reads),
``features`` (online feature reads) and ``sqlite_file`` (its SQLite connections), ``store_guard`` (a slow
or failing online store never stalls the server), ``bundle`` (a registry version loaded, probed and ready
to score), ``watcher`` (keeps the bundle on the champion alias), ``metrics``, ``api`` (request and
response models, error answers), ``body`` (the body size limit), ``app`` (the routes) and ``cli``.

Independence: the service reaches models only through the registry (``ModelRegistryResource``) and
features only through Feast (``FeastResource``); it imports neither the training nor the ingestion code,
nor the asset graph (``fti_assets_tests/test_import_graph.py`` checks it).
"""
