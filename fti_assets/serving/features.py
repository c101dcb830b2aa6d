"""A feature service's online values for a batch of entity ids, read straight into a model's input matrix.

``FeatureStore.get_online_features`` resolves the service, builds a response proto value by value and
converts every stored time (about 6 ms for 100 ids here), when the model needs one float64 matrix. The
reader resolves the service's views and features once (per model bundle), then per request:

- SQLite (the default): one ``SELECT`` per view on a read-only connection of its own, the rows of Feast's
  table decoded in place: the ``ValueProto`` bytes Feast stored (memoised per distinct byte string, as
  feature values repeat) and the epoch seconds Feast's adapter stored as the event time.
- any other online store (Redis, ...): the store's own ``online_read`` through Feast's provider, which is
  what ``get_online_features`` calls underneath.

The values equal what ``get_online_features`` returns for the same service (tests compare them entity by
entity on SQLite and on Redis). Import inside a process that serves: importing Feast takes seconds.
"""

from __future__ import annotations

import math
import re
import sqlite3
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.protos.feast.types.Value_pb2 import ValueType as ValueTypeProto
from feast.value_type import ValueType

from fti_assets.resources.feast_layout import entity_key_prefix, redis_client, sqlite_path, sqlite_table
from fti_assets.serving.sqlite_file import SqliteFile, locked

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore

DECODED_CACHE_SIZE = 1 << 16  # distinct stored values remembered (a few MB at most)
REDIS_SCAN_CALLS = 10  # SCANs (of up to 1,000 keys each) spent looking for sample entities in a shared Redis


@dataclass(frozen=True, slots=True)
class OnlineRows:
    """Model inputs of n ids: NaN where the store holds no value or a null one."""

    matrix: np.ndarray  # n x inputs, float64
    known: np.ndarray  # n bools: the store holds a non-null input of the id
    event_seconds: list[float | None]  # event time (epoch seconds) of the first view holding the id


@dataclass(frozen=True, slots=True)
class _View:
    view: Any  # the Feast FeatureView
    table: str  # its SQLite table
    columns: dict[str, int]  # feature name -> column of the matrix


class OnlineFeatureReader:
    """Reads ``input_names`` of ``feature_service`` for one join key; build one per served model.

    ``lock_wait`` bounds how long a SQLite read waits for a writer's lock (Redis: the client's own timeouts).
    """

    def __init__(
        self,
        store: FeatureStore,
        feature_service: FeatureService,
        input_names: tuple[str, ...],
        lock_wait: float = 5.0,
    ):
        self.store, self.input_names = store, input_names
        config = store.config
        position = {name: j for j, name in enumerate(input_names)}
        self.views: list[_View] = []
        entity_columns = set()
        for projection in feature_service.feature_view_projections:
            view = store.get_feature_view(projection.name)
            entity_columns.update((c.name, c.dtype.to_value_type()) for c in view.entity_columns)
            columns = {f.name: position[f.name] for f in projection.features if f.name in position}
            if columns:
                table = sqlite_table(config, view)
                self.views.append(_View(view, table, columns))
        if len(entity_columns) != 1:
            raise ValueError(f"{feature_service.name} has join keys {sorted(entity_columns)}; one is needed")
        ((self.join_key, self.key_type),) = entity_columns
        if self.key_type not in (ValueType.STRING, ValueType.INT64):
            raise ValueError(f"join key {self.join_key} is {self.key_type.name}; string or int64 keys are served")
        missing = set(input_names) - {name for v in self.views for name in v.columns}
        if missing:
            raise ValueError(f"{feature_service.name} does not serve {sorted(missing)}")
        self._key_prefix = entity_key_prefix([self.join_key], config.entity_key_serialization_version)
        self._sqlite: SqliteFile | None = None
        if config.online_store.type == "sqlite" and config.entity_key_serialization_version == 3:
            self._sqlite = SqliteFile(sqlite_path(store), lock_wait)
        self._decoded: dict[bytes, float] = {}

    @property
    def path(self) -> str:
        """Which read this reader does, for /health."""
        return "sqlite_select" if self._sqlite else "online_read"

    @property
    def local(self) -> bool:
        """Reads are lookups in a local file (SQLite), not calls over the network: ``read_now`` applies."""
        return self._sqlite is not None

    def read(self, ids: list[str]) -> OnlineRows:
        """The inputs of each id, in order (an id may repeat); ids that are not valid keys are unknown.
        Waits for the store up to its timeouts: call it off the event loop."""
        return self._read(ids, wait=True)

    def read_now(self, ids: list[str]) -> OnlineRows | None:
        """``read`` of a ``local`` store without waiting: None while a writer holds the SQLite file."""
        try:
            return self._read(ids, wait=False)
        except sqlite3.OperationalError as exc:
            if locked(exc):
                return None
            raise

    def sample_ids(self, n: int) -> list[str]:
        """Up to ``n`` ids the store holds rows for (the first in key order; for Redis, the first a bounded
        SCAN finds): real rows a new model is probed with before it serves."""
        if self._sqlite is not None:
            keys = (
                self._sqlite.connection(wait=True)
                .execute(f"SELECT DISTINCT entity_key FROM {self.views[0].table} LIMIT ?", (n,))
                .fetchall()
            )
            return [i for (key,) in keys if (i := self._entity_of(key)) is not None]
        # Feast's Redis key: the serialized entity key, then the project name.
        config = self.store.config
        client = redis_client(self.store)
        project = config.project.encode()
        pattern = b"*" + re.sub(rb"([*?\[\]\\])", rb"\\\1", project)
        found: list[str] = []
        cursor = 0
        for _ in range(REDIS_SCAN_CALLS):
            cursor, keys = client.scan(cursor, match=pattern, count=1000)
            found += [i for key in keys if (i := self._entity_of(key[: -len(project)])) is not None]
            if len(found) >= n or cursor == 0:
                break
        return found[:n]

    def _read(self, ids: list[str], wait: bool) -> OnlineRows:
        n = len(ids)
        matrix = np.full((n, len(self.input_names)), math.nan)
        known = np.zeros(n, dtype=bool)
        event_seconds: list[float | None] = [None] * n
        rows_of: dict[str, list[int]] = {}
        for i, entity in enumerate(ids):
            rows_of.setdefault(entity, []).append(i)
        keys = {}  # serialized key -> (id, its rows)
        for entity, rows in rows_of.items():
            if (key := self._entity_key(entity)) is not None:
                keys[key] = (entity, rows)
        stamps: dict[bytes, float | None] = {}  # event time of the first view with a value for the key
        connection = self._sqlite.connection(wait) if self._sqlite and keys else None
        for view in self.views:
            found = self._sqlite_rows(connection, view, keys) if self._sqlite else self._online_read(view, keys)
            columns = view.columns
            for key, name, value, seconds in found:
                j = columns.get(name)
                if j is None:
                    continue
                for i in keys[key][1]:
                    matrix[i, j] = value
                # Known by a value, not by a row: Redis answers an absent key with null values.
                if key not in stamps and not math.isnan(value):
                    stamps[key] = seconds
        for key, seconds in stamps.items():
            for i in keys[key][1]:
                known[i], event_seconds[i] = True, seconds
        return OnlineRows(matrix, known, event_seconds)

    def _entity_key(self, entity: str) -> bytes | None:
        """Feast's ``serialize_entity_key`` (version 3) of one join-key value given as text."""
        if self.key_type == ValueType.STRING:
            utf8 = entity.encode("utf8")
            return self._key_prefix + struct.pack("<II", ValueTypeProto.STRING, len(utf8)) + utf8
        try:
            return self._key_prefix + struct.pack("<IIq", ValueTypeProto.INT64, 8, int(entity))
        except (ValueError, struct.error):
            return None  # not an int64: no row can hold it

    def _entity_of(self, key: bytes) -> str | None:
        """The id of a serialized key (the inverse of ``_entity_key``); None for a key of another layout."""
        if not key.startswith(self._key_prefix) or len(key) < len(self._key_prefix) + 8:
            return None
        kind, size = struct.unpack_from("<II", key, len(self._key_prefix))
        value = key[len(self._key_prefix) + 8 :]
        if len(value) != size:
            return None
        if kind == ValueTypeProto.STRING and self.key_type == ValueType.STRING:
            try:
                return value.decode("utf8")
            except UnicodeDecodeError:
                return None
        if kind == ValueTypeProto.INT64 and self.key_type == ValueType.INT64 and size == 8:
            return str(struct.unpack("<q", value)[0])
        return None

    def _sqlite_rows(self, connection, view: _View, keys: dict[bytes, tuple[str, list[int]]]) -> list[tuple]:
        """(key, feature, value, event seconds) per stored row of the keys, from Feast's SQLite table."""
        if not keys:
            return []
        rows = connection.execute(
            f"SELECT entity_key, feature_name, value, event_ts FROM {view.table} "
            f"WHERE entity_key IN ({','.join('?' * len(keys))})",
            list(keys),
        ).fetchall()
        decoded, decode = self._decoded, self._decode
        seconds: dict[Any, float | None] = {}
        out = []
        for key, name, raw, stamp in rows:
            value = decoded.get(raw)
            if value is None:
                value = decode(raw)
            if stamp not in seconds:
                seconds[stamp] = _epoch_seconds(stamp)
            out.append((key, name, value, seconds[stamp]))
        return out

    def _decode(self, raw: bytes) -> float:
        if len(self._decoded) >= DECODED_CACHE_SIZE:
            self._decoded.clear()
        value = self._decoded[raw] = _number(ValueProto.FromString(raw))
        return value

    def _online_read(self, view: _View, keys: dict[bytes, tuple[str, list[int]]]) -> list[tuple]:
        """The store's own ``online_read``: the call under ``get_online_features``."""
        if not keys:
            return []
        stored = list(keys)
        read = self.store._get_provider().online_read(
            config=self.store.config,
            table=view.view,
            entity_keys=[self._entity_key_proto(keys[key][0]) for key in stored],
            requested_features=list(view.columns),
        )
        out = []
        for key, (stamp, features) in zip(stored, read, strict=True):
            if features:
                seconds = None if stamp is None else (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()
                out.extend((key, name, _number(value), seconds) for name, value in features.items())
        return out

    def _entity_key_proto(self, entity: str) -> EntityKeyProto:
        value = ValueProto(int64_val=int(entity)) if self.key_type == ValueType.INT64 else ValueProto(string_val=entity)
        return EntityKeyProto(join_keys=[self.join_key], entity_values=[value])


def _number(value: ValueProto) -> float:
    kind = value.WhichOneof("val")
    if kind is None or kind == "null_val":
        return math.nan
    return float(getattr(value, kind))


def _epoch_seconds(stamp: Any) -> float | None:
    """Feast's SQLite adapter stores event times as epoch seconds; older files may hold ISO text."""
    if stamp is None or isinstance(stamp, int | float):
        return stamp
    text = stamp.decode() if isinstance(stamp, bytes) else str(stamp)
    if text.lstrip("-").isdigit():
        return int(text)
    parsed = datetime.fromisoformat(text)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
