"""Fast writes into Feast's online store, byte-identical to what ``FeatureStore.materialize`` writes.

``materialize`` builds a ``ValueProto`` per value in Python (microseconds each), then sends SQLite one
statement per feature per entity and Redis one HSET per entity through redis-py. Here numpy serializes
whole columns in the wire format Feast produces (entity keys as ``serialize_entity_key``, values as
``ValueProto``, Redis times as protobuf ``Timestamp``), and the stores get them in bulk:

- SQLite: per chunk of entities, this thread slices the rows out of bound blobs with SQL, in a private
  in-memory database (binding 2.2M rows one by one costs more than writing them), and a second thread
  attaches that database's image to Feast's connection and upserts its rows (Feast's ``INSERT ... ON
  CONFLICT DO UPDATE`` and columns). SQLite releases the GIL, so the two overlap. Rows go in primary-key
  order, the cheapest order to insert.
- Redis: the HGETs of Feast's timestamp check, then the HSETs (and EXPIREs), as raw RESP built by
  numpy and pipelined on one connection of the store's own redis-py pool; replies parsed by hiredis.

Feature views or stores outside that (several join keys, non-numeric features, vector or
``value_num`` SQLite columns, a Python whose SQLite cannot serialize, Redis cluster, other online stores) go through
``store.write_to_online_store``. Import this module inside asset bodies: importing Feast takes seconds.
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.protos.feast.types.Value_pb2 import ValueType as ValueTypeProto
from feast.value_type import ValueType

from fti_assets.resources.feast_layout import (
    adapt_datetime_epoch,
    entity_key_prefix,
    redis_client,
    redis_field,
    redis_view_name,
    sqlite_table,
)

if TYPE_CHECKING:
    from datetime import datetime

    from feast import FeatureStore, FeatureView

SQLITE_CHUNK = 25_000  # entities per statement: small enough to overlap building and writing, big enough to batch
REDIS_CHUNK = 20_000  # entities per payload sent
RECORD_WIDTH = 11  # tag byte + the longest payload, a ten-byte varint (negative int64)
TEXT_WIDTH = 24  # the longest repr of a float64 (-2.2250738585072014e-308); an int64 needs 20
LENGTH_BITS = 5  # holds a record's length (<= RECORD_WIDTH) or a text's (<= TEXT_WIDTH)
LENGTHS_PER_WORD = 12  # 60 bits: a positive SQLite integer
NUMBER_WIDTH = 20  # characters of an int64
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
    # serialize/deserialize exist only where Python's SQLite library was built with them (the usual builds).
    if vectorisable and online.type == "sqlite" and hasattr(sqlite3.Connection, "deserialize"):
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
    prefix = entity_key_prefix([column.name])
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


def _packed_lengths(lengths: np.ndarray) -> np.ndarray:
    """(rows, features) lengths as (rows, words) int64s: feature j's at bit ``LENGTH_BITS * (j % 12)`` of word
    ``j // 12``."""
    rows, features = lengths.shape
    words = -(-features // LENGTHS_PER_WORD)
    padded = np.zeros((rows, words * LENGTHS_PER_WORD), dtype=np.int64)
    padded[:, :features] = lengths
    shifts = np.arange(LENGTHS_PER_WORD, dtype=np.int64) * LENGTH_BITS
    return (padded.reshape(rows, words, LENGTHS_PER_WORD) << shifts).sum(axis=2)


def _unpacked_sql(column: str, words: int) -> str:
    """SQL of the length of feature ``f`` out of the words ``k.<column>0``, ``k.<column>1``... of ``_packed_lengths``:
    arithmetic, where slicing a length out of a blob costs two function calls per row."""
    if words == 1:
        word = f"k.{column}0"
    else:
        word = "CASE f.word " + " ".join(f"WHEN {w} THEN k.{column}{w}" for w in range(words)) + " END"
    return f"(({word} >> f.shift) & {(1 << LENGTH_BITS) - 1})"


def _number_fields(numbers: np.ndarray, nulls: np.ndarray) -> bytes:
    """Each int64 as NUMBER_WIDTH characters, space padded, blank where null; SQL casts them back one by one.
    Bytes, not text: substr of a blob is an offset, of a text it counts characters from the start."""
    fields = numbers.astype(f"S{NUMBER_WIDTH}").view(np.uint8).reshape(*numbers.shape, NUMBER_WIDTH)
    fields[nulls] = 0
    fields[fields == 0] = ord(" ")
    return fields.tobytes()


def _write_sqlite(store: FeatureStore, fv: FeatureView, frame: pd.DataFrame) -> int:
    """Feast's upsert rows, built chunk by chunk in a private in-memory database and upserted from it.

    Two threads, both mostly inside SQLite (which releases the GIL): this one builds a chunk's rows (numpy
    blobs, then SQL slicing them into a table), and hands over the database image; the writer attaches it to
    Feast's connection and upserts its rows, one ``INSERT ... SELECT`` a chunk, all in one transaction.
    """
    from concurrent.futures import ThreadPoolExecutor

    config = store.config
    table = sqlite_table(config, fv)
    key_pieces = _entity_keys(fv, frame[fv.entity_columns[0].name])
    keys = _split(_compact(key_pieces, np.arange(len(frame))), _row_lengths(key_pieces))
    # Rows in primary-key order (entity key, feature name): appending to the indexes is the cheapest insert.
    order = np.array(sorted(range(len(keys)), key=keys.__getitem__), dtype=np.int64)
    features = sorted(fv.features, key=lambda f: f.name)
    types = [f.dtype.to_value_type() for f in features]
    # Chunks must convert as Feast does the whole column: with a null anywhere, integers pass through float64.
    frame = frame.astype(
        {f.name: "float64" for f in features if frame[f.name].dtype.kind in "iu" and frame[f.name].hasnans}
    )
    # sqlite3 stores a datetime through the adapter Feast registers: epoch seconds of the naive UTC time.
    codes, times = _naive_utc(frame[fv.batch_source.timestamp_field])
    event_ts = np.array([adapt_datetime_epoch(t) for t in times], dtype=np.int64)[codes]
    created = fv.batch_source.created_timestamp_column
    created_codes, created_times = _naive_utc(frame[created]) if created else (np.full(len(frame), -1), [])
    # Code -1 (no created time, or a null one) picks the trailing 0, written as NULL.
    created_ts = np.array([*(adapt_datetime_epoch(t) for t in created_times), 0], dtype=np.int64)[created_codes]
    key_lengths = np.array([len(k) for k in keys], dtype=np.int64)
    key_width = int(key_lengths.max())

    # Per entity, fields of the numbers blob: the key's length, the times, and the packed lengths of the values
    # and texts; the keys statement casts them into a table once per entity, not once per feature row.
    words = -(-len(features) // LENGTHS_PER_WORD)
    length_words = [f"{kind}_lengths{w}" for kind in ("value", "text") for w in range(words)]
    fields = ["key_length", "event_ts", "created_ts", *length_words]
    stride = len(fields) * NUMBER_WIDTH

    def field(name: str) -> str:
        return f"substr(:numbers, i * {stride} + {fields.index(name) * NUMBER_WIDTH + 1}, {NUMBER_WIDTH})"

    def chunk_parameters(positions: np.ndarray) -> tuple[dict, dict]:
        """The blobs of the entities at these positions of ``frame``: for the keys statement and the rows statement."""
        part = frame.iloc[positions]
        encoded = [_encode(part[f.name], t) for f, t in zip(features, types, strict=True)]
        texts = np.stack([_texts(part[f.name], t) for f, t in zip(features, types, strict=True)], axis=1)
        value_lengths = np.stack([n for _, n in encoded], axis=1)
        numbers = np.column_stack(
            [
                key_lengths[positions],
                event_ts[positions],
                created_ts[positions],
                _packed_lengths(value_lengths),
                _packed_lengths(np.char.str_len(texts)),
            ]
        )
        nulls = np.zeros(numbers.shape, dtype=bool)
        nulls[:, fields.index("created_ts")] = created_codes[positions] < 0
        entities = {
            "n": len(positions),
            # Zero padded to one width: a key's own zero bytes are kept by its length.
            "keys": b"".join(keys[e].ljust(key_width, b"\0") for e in positions),
            "numbers": _number_fields(numbers, nulls),
        }
        return entities, {
            "values": np.stack([r for r, _ in encoded], axis=1).tobytes(),
            "texts": texts.astype(f"S{TEXT_WIDTH}").tobytes(),
            **{f"name{j}": f.name for j, f in enumerate(features)},
        }

    keys_sql = (
        "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i + 1 < :n) "
        f"INSERT INTO entities SELECT i, "
        f"substr(:keys, i * {key_width} + 1, CAST({field('key_length')} AS INTEGER)), "
        f"CAST({field('event_ts')} AS INTEGER), CAST(nullif(rtrim({field('created_ts')}), '') AS INTEGER), "
        + ", ".join(f"CAST({field(w)} AS INTEGER)" for w in length_words)
        + " FROM k"
    )
    value_length, text_length = _unpacked_sql("value_lengths", words), _unpacked_sql("text_lengths", words)
    spec = ", ".join(
        f"(:name{j}, {j * RECORD_WIDTH + 1}, {j * TEXT_WIDTH + 1}, {j // LENGTHS_PER_WORD}, "
        f"{j % LENGTHS_PER_WORD * LENGTH_BITS})"
        for j in range(len(features))
    )
    columns = ", ".join(["entity_key", "feature_name", "value", "value_text", "event_ts", "created_ts"])
    rows_sql = (
        "INSERT INTO rows SELECT k.entity_key, f.name, "
        f"substr(:values, k.i * {len(features) * RECORD_WIDTH} + f.value_at, {value_length}), "
        # A null's text is NULL, not ''; substr of a blob is a blob, hence the CAST.
        f"CASE WHEN {text_length} THEN "
        f"CAST(substr(:texts, k.i * {len(features) * TEXT_WIDTH} + f.text_at, {text_length}) AS TEXT) END, "
        "k.event_ts, k.created_ts "
        # CROSS JOIN keeps the entities the outer loop, so rows go in primary-key order.
        "FROM entities AS k CROSS JOIN (SELECT column1 AS name, column2 AS value_at, column3 AS text_at, "
        f"column4 AS word, column5 AS shift FROM (VALUES {spec})) AS f"
    )
    upsert_sql = (
        f"INSERT INTO main.{table} ({columns}) SELECT * FROM fti_online_stage.rows "
        # WHERE true: without it SQLite cannot tell the upsert's ON from a join's ON.
        "WHERE true ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in ["value", "value_text", "event_ts", "created_ts"])
    )

    stage = sqlite3.connect(":memory:")
    stage.execute(
        "CREATE TABLE entities (i INTEGER PRIMARY KEY, entity_key BLOB, event_ts, created_ts, "
        + ", ".join(f"{w} INTEGER" for w in length_words)
        + ")"
    )
    stage.execute(f"CREATE TABLE rows ({columns})")

    def staged(positions: np.ndarray) -> bytes:
        """The image of a database holding the rows of the entities at these positions, in primary-key order."""
        entities, values = chunk_parameters(positions)
        stage.execute("DELETE FROM entities")
        stage.execute("DELETE FROM rows")
        stage.execute(keys_sql, entities)
        stage.execute(rows_sql, values)
        return stage.serialize()

    def upsert(image: bytes) -> None:
        conn.deserialize(image, name="fti_online_stage")
        conn.execute(upsert_sql)

    conn = store._get_provider().online_store._get_conn(config)
    conn.execute("ATTACH ':memory:' AS fti_online_stage")  # outside the transaction: ATTACH cannot run in one
    try:
        with conn, ThreadPoolExecutor(1, thread_name_prefix="sqlite-online-write") as writer:
            pending = None
            for positions in _chunks(order, SQLITE_CHUNK):
                image = staged(positions)
                if pending is not None:
                    pending.result()  # one chunk at a time on the connection; raises its error here
                pending = writer.submit(upsert, image)
            if pending is not None:
                pending.result()
    finally:
        conn.execute("DETACH fti_online_stage")
        stage.close()
    return len(frame)


def _write_redis(store: FeatureStore, fv: FeatureView, frame: pd.DataFrame) -> int:
    """Feast's hash per entity, written only when newer than the stored one, as raw pipelined HGET/HSETs."""
    from feast.utils import make_tzaware
    from google.protobuf.timestamp_pb2 import Timestamp

    config = store.config
    online = config.online_store
    pool = redis_client(store).connection_pool
    view = redis_view_name(fv, config)
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
            *_bulk([_const(redis_field(view, f.name))]),
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
            stored = _round_trip(connection, (_compact(hget, chunk) for chunk in _chunks(rows, REDIS_CHUNK)), len(rows))
            rows = rows[_newer_than_stored(nanos, stored)]
        replies = len(rows) * (2 if online.key_ttl_seconds else 1)
        _round_trip(connection, (_compact(hset, chunk) for chunk in _chunks(rows, REDIS_CHUNK)), replies)
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


def _chunks(rows: np.ndarray, size: int) -> Iterator[np.ndarray]:
    """Chunks of ``size`` rows after a small first one, so the store starts while the next ones are built."""
    first = max(1, size // 10)
    starts = [0, *range(first, len(rows), size)]
    return (rows[s:e] for s, e in zip(starts, [*starts[1:], len(rows)], strict=True) if e > s)


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
