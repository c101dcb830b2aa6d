"""Fast writes into Feast's online store, byte-identical to what ``FeatureStore.materialize`` writes.

``materialize`` builds a ``ValueProto`` per value in Python (microseconds each), then sends SQLite one
statement per feature per entity and Redis one HSET per entity through redis-py. Here numpy serializes
whole columns in the wire format Feast produces (entity keys as ``serialize_entity_key``, values as
``ValueProto``, Redis times as protobuf ``Timestamp``), and the stores get them in bulk:

- SQLite: per chunk of entities, one statement slices the entity keys and times out of bound blobs into
  a temp table (once per entity), and one ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` (Feast's
  upsert and columns) slices the values out of others: binding 2.2M rows one by one costs more than
  writing them. Rows go in primary-key order, the cheapest order to insert, and the next chunk is
  built while SQLite (without the GIL) writes this one.
- Redis: the HGETs of Feast's timestamp check, then the HSETs (and EXPIREs), as raw RESP built by
  numpy and pipelined on one connection of the store's own redis-py pool; replies parsed by hiredis.

Feature views or stores outside that (several join keys, non-numeric features, vector or
``value_num`` SQLite columns, Redis cluster, other online stores) go through
``store.write_to_online_store``. Import this module inside asset bodies: importing Feast takes seconds.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from feast.infra.key_encoding_utils import serialize_entity_key_prefix
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.protos.feast.types.Value_pb2 import ValueType as ValueTypeProto
from feast.value_type import ValueType

if TYPE_CHECKING:
    from datetime import datetime

    from feast import FeatureStore, FeatureView

SQLITE_CHUNK = 25_000  # entities per statement: small enough to overlap building and writing, big enough to batch
REDIS_CHUNK = 20_000  # entities per payload sent
RECORD_WIDTH = 11  # tag byte + the longest payload, a ten-byte varint (negative int64)
TEXT_WIDTH = 24  # the longest repr of a float64 (-2.2250738585072014e-308); an int64 needs 20
# Feast value type -> (Value proto field, protobuf wire type).
_FIELDS: dict[ValueType, tuple[str, int]] = {
    ValueType.DOUBLE: ("double_val", 1),
    ValueType.FLOAT: ("float_val", 5),
    ValueType.INT64: ("int64_val", 0),
    ValueType.INT32: ("int32_val", 0),
    ValueType.BOOL: ("bool_val", 0),
}
# Byte strings of each row as (data, mask): the concatenation of data[row][mask[row]] over a list of
# pieces is the row's bytes. A piece with one row is a constant: all of its bytes, in every row.
Piece = tuple[np.ndarray, np.ndarray]


def write_online_features(store: FeatureStore, feature_view_name: str, frame: pd.DataFrame) -> int:
    """Write the latest row per entity of ``frame`` to the store's online store; returns the entities written.

    ``frame`` holds the view's join key, its timestamp field and its features (other columns are ignored).
    As in Feast, SQLite overwrites what is stored whatever its time, and Redis writes an entity only when
    it is newer than the stored row, so Redis may write fewer entities than ``frame`` holds.
    """
    fv = store.get_feature_view(feature_view_name)
    source = fv.batch_source
    times = [source.timestamp_field, *([source.created_timestamp_column] if source.created_timestamp_column else [])]
    # As materialize: the latest event per entity, then the latest created time.
    latest = frame.sort_values(times, kind="stable").drop_duplicates([e.name for e in fv.entity_columns], keep="last")
    if latest.empty:
        return 0
    online = store.config.online_store
    vectorisable = _vectorisable(store, fv, latest)
    if vectorisable and online.type == "sqlite":
        return _write_sqlite(store, fv, latest)
    # A Redis cluster routes each key to its own node: left to redis-py, through Feast.
    if vectorisable and online.type == "redis" and online.redis_type == "redis":
        return _write_redis(store, fv, latest)
    store.write_to_online_store(feature_view_name, latest.reset_index(drop=True))
    return len(latest)


def _vectorisable(store: FeatureStore, fv: FeatureView, frame: pd.DataFrame) -> bool:
    """One string/int64 join key, numeric scalar features in numeric columns, no extra SQLite columns."""
    online = store.config.online_store

    def numeric(feature: Any) -> bool:
        column, value_type = frame[feature.name], feature.dtype.to_value_type()
        is_bool = pd.api.types.is_bool_dtype(column)
        number = pd.api.types.is_float_dtype(column) or pd.api.types.is_integer_dtype(column)
        return value_type in _FIELDS and (is_bool if value_type == ValueType.BOOL else number)

    return (
        store.config.entity_key_serialization_version == 3
        and len(fv.entity_columns) == 1
        and fv.entity_columns[0].dtype.to_value_type() in (ValueType.STRING, ValueType.INT64)
        and all(numeric(f) for f in fv.features)
        and not getattr(online, "vector_enabled", False)
        and not getattr(online, "enable_openai_compatible_store", False)
    )


def _const(value: bytes) -> Piece:
    data = np.frombuffer(value, dtype=np.uint8)[None, :]
    return data, np.ones(data.shape, dtype=bool)


def _ragged(data: np.ndarray, lengths: np.ndarray) -> Piece:
    """The first ``lengths[i]`` bytes of each row of ``data``."""
    return data, np.arange(data.shape[1]) < lengths[:, None]


def _row_lengths(pieces: list[Piece]) -> np.ndarray:
    return sum(mask.sum(axis=1) for _, mask in pieces)


def _merged(pieces: list[Piece]) -> list[Piece]:
    """The same bytes with each run of constants joined into one: fewer copies in ``_compact``."""
    out: list[Piece] = []
    for data, mask in pieces:
        if len(data) == 1 and out and len(out[-1][0]) == 1:
            out[-1] = _const(out[-1][0].tobytes() + data.tobytes())
        else:
            out.append((data, mask))
    return out


def _compact(pieces: list[Piece], rows: np.ndarray) -> bytes:
    """The bytes of ``rows``, one after the other."""
    selected: np.ndarray | slice = rows
    if len(rows) and rows[-1] - rows[0] == len(rows) - 1:
        selected = slice(rows[0], rows[-1] + 1)  # consecutive rows: views, not copies
    # Every row starts as the constants (one wide copy); only the per-row pieces are copied in.
    template = np.concatenate([d[0] if len(d) == 1 else np.zeros(d.shape[1], np.uint8) for d, _ in pieces])
    out, used = np.tile(template, (len(rows), 1)), np.ones((len(rows), len(template)), dtype=bool)
    at = 0
    for data, mask in pieces:
        span = slice(at, at + data.shape[1])
        if len(data) > 1:
            out[:, span], used[:, span] = data[selected], mask[selected]
        at = span.stop
    return out[used].tobytes()


def _split(buffer: bytes, lengths: np.ndarray) -> list[bytes]:
    ends = np.cumsum(lengths).tolist()
    return [buffer[start:end] for start, end in zip([0, *ends[:-1]], ends, strict=True)]


def _entity_keys(fv: FeatureView, values: pd.Series) -> list[Piece]:
    """Feast's ``serialize_entity_key`` (version 3) of each value of the view's single join key."""
    import pyarrow as pa

    column = fv.entity_columns[0]
    if values.isna().any():
        raise ValueError(f"null {column.name} in the frame: Feast cannot serialize a null entity key")
    prefix = serialize_entity_key_prefix([column.name], 3)
    if column.dtype.to_value_type() == ValueType.INT64:
        packed = values.to_numpy(dtype="<i8").view(np.uint8).reshape(len(values), 8)
        return [_const(prefix + struct.pack("<II", ValueTypeProto.INT64, 8)), _ragged(packed, np.full(len(values), 8))]
    # Feast serializes str(value) as UTF-8: Arrow holds exactly those bytes, with their offsets.
    strings = pa.array(values.astype("string"))
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int32)[strings.offset : strings.offset + len(strings) + 1]
    lengths = np.diff(offsets)
    utf8, used = _ragged(np.zeros((len(values), max(int(lengths.max()), 1)), dtype=np.uint8), lengths)
    utf8[used] = np.frombuffer(strings.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    size = lengths.astype("<u4").view(np.uint8).reshape(len(values), 4)
    return [
        _const(prefix + struct.pack("<I", ValueTypeProto.STRING)),
        _ragged(size, np.full(len(values), 4)),
        (utf8, used),
    ]


def _numbers(values: pd.Series, value_type: ValueType) -> np.ndarray:
    """The numbers Feast's conversion stores, nulls as 0: ``int(x)`` (floats truncate) or the float."""
    if _FIELDS[value_type][1] == 0:
        # Arrow hands Feast an integer column with nulls as float64, so its values pass through a double.
        as_float = values.dtype.kind == "f" or values.hasnans
        return values.to_numpy(dtype="float64" if as_float else "int64", na_value=0).astype(np.int64)
    return values.to_numpy(dtype="float64", na_value=0.0).astype("<f8" if value_type == ValueType.DOUBLE else "<f4")


def _encode(values: pd.Series, value_type: ValueType) -> tuple[np.ndarray, np.ndarray]:
    """Each value's serialized ``ValueProto``: (n, RECORD_WIDTH) records and the bytes used of each.

    A null (None, NaN, NA) is Feast's empty Value: length 0.
    """
    field, wire_type = _FIELDS[value_type]
    numbers = _numbers(values, value_type)
    records = np.zeros((len(values), RECORD_WIDTH), dtype=np.uint8)
    records[:, 0] = ValueProto.DESCRIPTOR.fields_by_name[field].number << 3 | wire_type
    if wire_type == 0:
        unsigned = numbers.view(np.uint64)  # negatives: ten-byte two's-complement varints, as protobuf writes
        shifts = np.arange(0, 70, 7, dtype=np.uint64)
        more = ((unsigned[:, None] >> shifts[1:]) != 0).sum(axis=1)
        groups = ((unsigned[:, None] >> shifts) & np.uint64(0x7F)).astype(np.uint8)
        records[:, 1:] = groups | np.where(np.arange(10) < more[:, None], np.uint8(0x80), np.uint8(0))
        lengths = more + 2
    else:
        width = numbers.dtype.itemsize
        records[:, 1 : 1 + width] = numbers.view(np.uint8).reshape(len(numbers), width)
        lengths = np.full(len(numbers), 1 + width)
    lengths[values.isna().to_numpy()] = 0
    return records, lengths


def _texts(values: pd.Series, value_type: ValueType) -> np.ndarray:
    """SQLite's ``value_text``: ``str()`` of each value as Feast's proto holds it, as bytes; b"" for a null."""
    numbers = _numbers(values, value_type)
    if value_type == ValueType.BOOL:
        texts = np.where(numbers != 0, b"True", b"False")
    else:
        # Formatting is the slow part: do it once per distinct value (bit pattern, so -0.0 stays apart).
        numbers = numbers.astype(np.float64 if numbers.dtype.kind == "f" else np.int64)
        codes, uniques = pd.factorize(numbers.view(np.int64))
        # numpy prints a float64 in the same shortest round-trip form as Python's repr.
        texts = uniques.view(numbers.dtype).astype(f"S{TEXT_WIDTH}")[codes]
    texts[values.isna().to_numpy()] = b""
    return texts


def _naive_utc(values: pd.Series) -> tuple[np.ndarray, list[datetime]]:
    """Codes into the distinct times, and those times as the naive UTC datetimes Feast hands its stores."""
    codes, uniques = pd.factorize(values)
    times = pd.DatetimeIndex(uniques)
    if times.tz is not None:
        times = times.tz_convert("UTC").tz_localize(None)
    return codes, list(times.to_pydatetime())


def _write_sqlite(store: FeatureStore, fv: FeatureView, frame: pd.DataFrame) -> int:
    """Feast's upsert rows, one ``INSERT ... SELECT`` per chunk of entities slicing them out of bound blobs.

    SQLite's B-tree work is most of the time and runs without the GIL: a second thread executes the chunks
    while this one builds the next.
    """
    from concurrent.futures import ThreadPoolExecutor

    from feast.infra.online_stores.helpers import compute_table_id
    from feast.infra.online_stores.sqlite import _quote_id, adapt_datetime_epoch

    config = store.config
    table = compute_table_id(config.project, fv, config.registry.enable_online_feature_view_versioning)
    key_pieces = _entity_keys(fv, frame[fv.entity_columns[0].name])
    keys = _split(_compact(key_pieces, np.arange(len(frame))), _row_lengths(key_pieces))
    # Rows in primary-key order (entity key, feature name): appending to the indexes is the cheapest insert.
    order = np.array(sorted(range(len(keys)), key=keys.__getitem__), dtype=np.int64)
    features = sorted(fv.features, key=lambda f: f.name)
    types = [f.dtype.to_value_type() for f in features]
    # sqlite3 stores a datetime through the adapter Feast registers: epoch seconds of the naive UTC time.
    codes, times = _naive_utc(frame[fv.batch_source.timestamp_field])
    event_ts = [adapt_datetime_epoch(t) for t in times]
    created = fv.batch_source.created_timestamp_column
    created_codes, created_times = _naive_utc(frame[created]) if created else (np.zeros(len(frame), int), [None])
    created_ts = [None if t is None else adapt_datetime_epoch(t) for t in created_times]

    key_width = max(map(len, keys))
    digits = len(str(key_width))

    def chunk_parameters(rows: np.ndarray) -> tuple[dict, dict]:
        """The blobs of one chunk of entities, in ``rows`` order, for the keys statement and the rows statement:
        SQL slices each field out of them."""
        part = frame.iloc[rows]
        encoded = [_encode(part[f.name], t) for f, t in zip(features, types, strict=True)]
        records = np.stack([r for r, _ in encoded], axis=1)
        # One byte per row that SQL reads back with unicode(): the record's length + ord("0").
        lengths = (np.stack([n for _, n in encoded], axis=1) + ord("0")).astype(np.uint8)
        # Space padded to a fixed width, as numeric texts hold no spaces; a null's blank trims to '' -> NULL.
        texts = np.stack([_texts(part[f.name], t) for f, t in zip(features, types, strict=True)], axis=1)
        texts = texts.astype(f"S{TEXT_WIDTH}").view(np.uint8)
        texts[texts == 0] = ord(" ")
        chunk_keys = [keys[e] for e in rows]
        # Entity keys zero-padded to one width (a key's own zero bytes are kept by its length), lengths and times
        # as padded digits: sliced like the values, so nothing is bound row by row. All blobs, not text: substr
        # on a blob is an offset, on text it counts characters from the start.
        times = [(event_ts[codes[e]], created_ts[created_codes[e]]) for e in rows]
        entities = {
            "n": len(rows),
            "keys": b"".join(k.ljust(key_width, b"\0") for k in chunk_keys),
            "key_lengths": "".join(f"{len(k):0{digits}d}" for k in chunk_keys).encode(),
            "times": "".join(f"{t:<20}{'' if c is None else c:<20}" for t, c in times).encode(),
        }
        return entities, {
            "values": records.tobytes(),
            "lengths": lengths.tobytes(),
            "texts": texts.tobytes(),
            **{f"name{j}": f.name for j, f in enumerate(features)},
        }

    row = f"(k.i * {len(features)} + f.j)"
    columns = ["entity_key", "feature_name", "value", "value_text", "event_ts", "created_ts"]
    names = ", ".join(f"({j}, :name{j})" for j in range(len(features)))
    keys_sql = (
        # Each chunk's entities once (not once per feature): key and times sliced out of their blobs.
        "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i + 1 < :n) "
        "INSERT INTO temp.fti_online_keys SELECT i, "
        f"substr(:keys, i * {key_width} + 1, CAST(substr(:key_lengths, i * {digits} + 1, {digits}) AS INTEGER)), "
        "CAST(substr(:times, i * 40 + 1, 20) AS INTEGER), "
        "CAST(nullif(rtrim(substr(:times, i * 40 + 21, 20)), '') AS INTEGER) FROM k"
    )
    sql = (
        f"INSERT INTO {_quote_id(table)} ({', '.join(columns)}) SELECT k.entity_key, f.name, "
        f"substr(:values, {row} * {RECORD_WIDTH} + 1, unicode(substr(:lengths, {row} + 1, 1)) - {ord('0')}), "
        f"nullif(rtrim(substr(:texts, {row} * {TEXT_WIDTH} + 1, {TEXT_WIDTH})), ''), k.event_ts, k.created_ts "
        # CROSS JOIN keeps the keys the outer loop, so rows go in primary-key order.
        f"FROM temp.fti_online_keys AS k CROSS JOIN (SELECT column1 AS j, column2 AS name FROM (VALUES {names})) AS f "
        # WHERE true: without it SQLite cannot tell the upsert's ON from a join's ON.
        f"WHERE true ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in columns[2:])
    )
    conn = store._get_provider().online_store._get_conn(config)

    def write_chunk(entities: dict, rows: dict) -> None:
        conn.execute("DELETE FROM temp.fti_online_keys")
        conn.execute(keys_sql, entities)
        conn.execute(sql, rows)

    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS fti_online_keys (i INTEGER PRIMARY KEY, entity_key BLOB, event_ts, created_ts)"
    )
    try:
        with conn, ThreadPoolExecutor(1, thread_name_prefix="sqlite-online-write") as writer:
            pending = None
            for start in range(0, len(order), SQLITE_CHUNK):
                parameters = chunk_parameters(order[start : start + SQLITE_CHUNK])
                if pending is not None:
                    pending.result()  # one chunk at a time on the connection; raises its error here
                pending = writer.submit(write_chunk, *parameters)
            if pending is not None:
                pending.result()
    finally:
        conn.execute("DROP TABLE IF EXISTS temp.fti_online_keys")
    return len(frame)


def _write_redis(store: FeatureStore, fv: FeatureView, frame: pd.DataFrame) -> int:
    """Feast's hash per entity, written only when newer than the stored one, as raw pipelined HGET/HSETs."""
    from feast.infra.online_stores.helpers import _mmh3
    from feast.infra.online_stores.redis import _versioned_fv_name
    from feast.utils import make_tzaware
    from google.protobuf.timestamp_pb2 import Timestamp

    config = store.config
    online = config.online_store
    pool = store._get_provider().online_store._get_client(online).connection_pool
    view = _versioned_fv_name(fv, config)
    ts_field = _bulk([_const(f"_ts:{view}".encode())])
    key = _bulk([*_entity_keys(fv, frame[fv.entity_columns[0].name]), _const(config.project.encode("utf8"))])
    codes, times = _naive_utc(frame[fv.batch_source.timestamp_field])
    stamps = [Timestamp() for _ in times]
    for stamp, time in zip(stamps, times, strict=True):
        stamp.FromDatetime(make_tzaware(time))
    serialized = [s.SerializeToString() for s in stamps]
    width = max(map(len, serialized))
    padded = np.frombuffer(b"".join(s.ljust(width, b"\0") for s in serialized), np.uint8).reshape(-1, width)
    event_ts = _bulk([_ragged(padded[codes], np.array([len(s) for s in serialized])[codes])])
    nanos = np.array([s.seconds * 1_000_000_000 + s.nanos for s in stamps], dtype=np.int64)[codes]
    hset = [_const(f"*{2 + 2 * (1 + len(fv.features))}\r\n$4\r\nHSET\r\n".encode()), *key, *ts_field, *event_ts]
    for f in fv.features:
        hset += [
            *_bulk([_const(_mmh3(f"{view}:{f.name}"))]),
            *_bulk([_ragged(*_encode(frame[f.name], f.dtype.to_value_type()))]),
        ]
    if online.key_ttl_seconds:
        hset += [_const(b"*3\r\n$6\r\nEXPIRE\r\n"), *key, *_bulk([_const(str(online.key_ttl_seconds).encode())])]
    hget = [_const(b"*3\r\n$4\r\nHGET\r\n"), *key, *ts_field]
    hset, hget = _merged(hset), _merged(hget)

    rows = np.arange(len(frame))
    connection = pool.get_connection()
    try:
        if not online.skip_dedup:
            stored = _round_trip(connection, (_compact(hget, chunk) for chunk in _chunks(rows)), len(rows))
            rows = rows[_newer_than_stored(nanos, stored)]
        replies = len(rows) * (2 if online.key_ttl_seconds else 1)
        _round_trip(connection, (_compact(hset, chunk) for chunk in _chunks(rows)), replies)
    except BaseException:
        # Replies may be left unread: the pool must not hand this connection out again.
        connection.disconnect()
        raise
    finally:
        pool.release(connection)
    return len(rows)


def _bulk(pieces: list[Piece]) -> list[Piece]:
    """RESP bulk string ``$<length>\\r\\n<bytes>\\r\\n`` of the bytes of each row."""
    lengths = _row_lengths(pieces)
    powers = 10 ** np.arange(len(str(lengths.max())) - 1, -1, -1)
    digits = (lengths[:, None] // powers % 10 + ord("0")).astype(np.uint8)
    leading_zeros = (lengths[:, None] < powers) & (powers > 1)
    return [_const(b"$"), (digits, ~leading_zeros), _const(b"\r\n"), *pieces, _const(b"\r\n")]


def _chunks(rows: np.ndarray) -> Iterator[np.ndarray]:
    return (rows[i : i + REDIS_CHUNK] for i in range(0, len(rows), REDIS_CHUNK))


def _round_trip(connection: Any, payloads: Iterable[bytes], replies: int) -> list:
    """Send pipelined commands, then read their replies; the first error reply is raised.

    Redis buffers replies, so a payload goes out as soon as it is built and the server works on it
    while the next one is built.
    """
    import hiredis

    for payload in payloads:
        connection.send_packed_command([payload])
    reader, out = hiredis.Reader(), []
    sock = connection._get_socket()
    while len(out) < replies:
        data = sock.recv(1 << 20)
        if not data:
            raise ConnectionError("Redis closed the connection")
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            out.append(reply)
    for reply in out:
        if isinstance(reply, hiredis.ReplyError):
            raise reply
    return out


def _newer_than_stored(new_nanos: np.ndarray, stored: list[bytes | None]) -> np.ndarray:
    """Feast's rule: write unless a time is stored and the new one is not later (nanosecond precision)."""
    from google.protobuf.timestamp_pb2 import Timestamp

    codes, uniques = pd.factorize(pd.Series(stored, dtype=object))
    nanos = []
    for raw in uniques:
        stamp = Timestamp()
        stamp.ParseFromString(raw)
        nanos.append(stamp.seconds * 1_000_000_000 + stamp.nanos)
    # Code -1 (nothing stored) picks the trailing 0.
    previous = np.array([*nanos, 0], dtype=np.int64)[codes]
    return (previous == 0) | (new_nanos > previous)
