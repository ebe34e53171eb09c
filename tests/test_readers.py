"""The reader tier: the index read by Spark, ClickHouse (chDB), DuckDB, Polars and pandas.

The README's "Reading the index" recipes are executed here as written (only `OUT` and
`FRAME_DICT` point at this test's index), and what each engine computed -- row counts, the cosine
of two videos, nearest videos, frames joined to videos, OCR lines exploded -- is compared with
numpy on vmm's own reader. Then every column of every table, read whole by each engine, is
compared with pyarrow: nested structs (`ocr`, `stage_errors`), fixed-size lists (boxes,
embeddings), and manifest passthrough fields of many types.

An engine that cannot be imported fails the test (pip install -e .[test] installs them all);
nothing here skips. Run the tier alone with `pytest -m readers`.
"""

from __future__ import annotations

import datetime
import decimal
import math
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas import forward_index as fi
from schemas.index import IndexReader
from tests.conftest import REPO, TINY_MODEL

pytestmark = pytest.mark.readers

ENGINES = ("DuckDB", "pandas", "Polars", "Spark", "ClickHouse")
MODULES = {"DuckDB": "duckdb", "pandas": "pandas", "Polars": "polars", "Spark": "pyspark", "ClickHouse": "chdb"}


def _require(module: str):
    try:
        return __import__(module)
    except ImportError as e:
        pytest.fail(f"reader tier: {module} cannot be imported ({e}); install the test extra: pip install -e .[test]")


def readme_recipes() -> tuple[str, dict[str, str]]:
    """(the setup block, {engine: code}) from the README's "Reading the index" section."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = re.search(r"^## Reading the index\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "README has no '## Reading the index' section"
    blocks = re.findall(r"^```python\n(.*?)^```", section.group(1), re.S | re.M)
    setup, recipes = None, {}
    for block in blocks:
        first = block.splitlines()[0]
        if first.startswith("# "):
            recipes[first[2:].strip()] = block
        else:
            assert setup is None, "one setup block (OUT = ...) without a '# engine' first line"
            setup = block
    assert setup is not None and "OUT =" in setup
    return setup, recipes


# --- the index every engine reads -----------------------------------------------------------------

PASSTHROUGH = pa.schema([
    pa.field("views", pa.int64()),
    pa.field("rating", pa.float64()),
    pa.field("is_live", pa.bool_()),
    pa.field("topics", pa.list_(pa.string())),
    pa.field("published", pa.timestamp("us", tz="UTC")),
    pa.field("day", pa.date32()),
    pa.field("creator", pa.struct([pa.field("name", pa.string()), pa.field("followers", pa.int64())])),
    pa.field("price", pa.decimal128(10, 2)),
])


def _manifest(sample, path) -> None:
    """The sample as a Parquet manifest with typed passthrough fields, plus an entry whose file is
    missing (so `errors` has a row)."""
    import json

    records = [json.loads(line) for line in open(sample["manifest"])]
    rows = []
    for i, rec in enumerate(records):
        rows.append({
            "uri": rec["uri"], "video_id": rec["video_id"], "title": rec["title"], "tags": rec["tags"],
            "views": 1000 * (i + 1), "rating": 4.5 - i, "is_live": i % 2 == 0, "topics": ["a", f"t{i}"],
            "published": datetime.datetime(2026, 1, 2 + i, 3, 4, 5, tzinfo=datetime.timezone.utc),
            "day": datetime.date(2026, 2, 1 + i), "creator": {"name": f"c{i}", "followers": 10 * i},
            "price": decimal.Decimal(f"{i}.25"),
        })
    rows.append({"uri": os.path.join(sample["dir"], "missing.mp4"), "video_id": "missing"})
    schema = pa.schema([pa.field("uri", pa.string()), pa.field("video_id", pa.string()),
                        pa.field("title", pa.string()), pa.field("tags", pa.list_(pa.string())), *PASSTHROUGH])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


@pytest.fixture(scope="session")
def reader_index(sample, tiny_checkpoint, tmp_path_factory):
    """The sample extracted with the defaults plus both dictionaries: what the quickstart writes."""
    from pipelines import extract, train_codebook

    root = tmp_path_factory.mktemp("readers")
    manifest = str(root / "manifest.parquet")
    _manifest(sample, manifest)
    model = ["--clip-model", TINY_MODEL, "--clip-pretrained", tiny_checkpoint, "--no-progress"]
    frame_dict, patch_dict = str(root / "dict_frame"), str(root / "dict_patch")
    assert train_codebook.run(["--input", sample["manifest"], "--output", frame_dict, "--k", "4",
                               "--min-points-per-centroid", "2", *model]) == 0
    assert train_codebook.run(["--input", sample["manifest"], "--output", patch_dict, "--k", "16", "--level", "patch",
                               "--min-points-per-centroid", "5", *model]) == 0
    out = str(root / "out")
    assert extract.run(["--input", manifest, "--output", out, "--codebook", frame_dict,
                        "--patch-codebook", patch_dict, *model]) == 0
    return {"out": out, "frame_dict": frame_dict}


@pytest.fixture(scope="session")
def truth(reader_index):
    """What every engine must find, from vmm's reader and numpy."""
    index = IndexReader(reader_index["out"])
    ids, vectors = index.embeddings()
    ids = ids.column("video_id").to_pylist()
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    a, b = ids.index("sample-000"), ids.index("sample-001")
    scores = unit @ unit[a]
    frames = index.table("frames").to_pylist()
    titles = dict(zip(ids, index.table("videos", columns=["title"]).column("title").to_pylist()))
    counts = {}
    for f in frames:
        counts[f["video_id"]] = counts.get(f["video_id"], 0) + 1
    lines = [(f["video_id"], f["frame_index"], line["text"], line["domain"]) for f in frames for line in f["ocr"] or []]
    assert lines, "the sample's frames hold OCR lines"
    assert index.num_rows("errors") == 1
    return {
        "rows": {t: index.num_rows(t) for t in fi.TABLES},
        "cos_ab": float(unit[a] @ unit[b]),
        "nearest": [ids[i] for i in np.argsort(-scores) if i != a],
        "frames_per_video": {vid: (titles[vid], n) for vid, n in counts.items()},
        "ocr_lines": sorted(lines),
        "vector_a": vectors[a],
        "tables": {t: index.table(t).to_pylist() for t in fi.TABLES},
        "metadata": index.metadata,
    }


@pytest.fixture(scope="session")
def spark():
    """One local Spark for the whole tier (a start costs 10-20 s)."""
    _require("pyspark")
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[2]").appName("vmm-readers")
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.shuffle.partitions", "2")
               .config("spark.sql.session.timeZone", "UTC").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _engine(engine, request):
    _require(MODULES[engine])
    if engine == "Spark":
        request.getfixturevalue("spark")  # the recipe's getOrCreate() finds this session


def run_recipe(name: str, reader_index) -> dict:
    setup, recipes = readme_recipes()
    assert name in recipes, f"README has no '# {name}' recipe (has {sorted(recipes)})"
    ns: dict = {}
    exec(compile(setup, "README.md:setup", "exec"), ns)
    ns.update(OUT=reader_index["out"], FRAME_DICT=reader_index["frame_dict"])
    exec(compile(recipes[name], f"README.md:{name}", "exec"), ns)
    return ns


@pytest.mark.parametrize("engine", ENGINES)
def test_readme_recipe(engine, reader_index, truth, request):
    _engine(engine, request)
    ns = run_recipe(engine, reader_index)
    assert {t: int(n) for t, n in ns["rows"].items()} == truth["rows"]
    assert abs(float(ns["cos_ab"]) - truth["cos_ab"]) < 1e-3, (ns["cos_ab"], truth["cos_ab"])
    assert list(ns["nearest"]) == truth["nearest"]
    assert {k: (t, int(n)) for k, (t, n) in ns["frames_per_video"].items()} == truth["frames_per_video"]
    assert sorted((v, int(i), t, d) for v, i, t, d in ns["ocr_lines"]) == truth["ocr_lines"]
    if "vector_a" in ns:
        np.testing.assert_allclose(np.asarray(ns["vector_a"], np.float64), truth["vector_a"], rtol=1e-5, atol=1e-7)
    if "meta" in ns:
        assert {k: v for k, v in ns["meta"].items() if k.startswith("vmm.")} == truth["metadata"]


def test_readme_vmm_recipe(reader_index, truth):
    ns = run_recipe("vmm", reader_index)
    assert ns["rows"] == truth["rows"]
    np.testing.assert_array_equal(ns["vectors"][ns["ids"].column("video_id").to_pylist().index("sample-000")],
                                  truth["vector_a"])
    assert ns["a_frames"].num_rows == truth["frames_per_video"]["sample-000"][1]
    assert ns["model"] == TINY_MODEL
    assert ns["sampling"]["max_frames"] == 32


def test_readme_tokens_recipe(reader_index, truth):
    from models.codebook import Codebook

    ns = run_recipe("tokens", reader_index)
    book = Codebook.load(reader_index["frame_dict"])
    frames = truth["tables"]["frames"]
    tokens = [f["token"] for f in frames if f["token"] is not None]
    assert len(tokens) == sum(1 for f in frames if f["reason"] != "text") > 0
    np.testing.assert_array_equal(ns["frame_vectors"], book.centroids[tokens])
    a_tokens = [f["token"] for f in frames if f["token"] is not None and f["video_id"] == "sample-000"]
    expected = np.bincount(a_tokens, minlength=book.k).astype(np.float32)
    np.testing.assert_allclose(ns["bag_a"], expected / np.linalg.norm(expected), rtol=1e-6)
    assert ns["patches"] is not None and ns["patches"].shape[1] == 16


# --- every column of every table, read whole ------------------------------------------------------

def _norm(value):
    """One Python form for what each engine returns: lists, dicts, UTC-naive datetimes, floats."""
    if hasattr(value, "asDict"):
        value = value.asDict(recursive=True)
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_norm(v) for v in value]
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return value
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (np.floating, float)):
        return float(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def read_whole(engine: str, out: str, table: str, spark=None) -> list[dict]:
    """Every row and column of one table, as the engine returns them."""
    glob = f"{out}/{table}/*.parquet"
    if engine == "DuckDB":
        import duckdb

        rel = duckdb.sql(f"SELECT * FROM read_parquet('{glob}', union_by_name = true)")
        return [dict(zip(rel.columns, row)) for row in rel.fetchall()]
    if engine == "pandas":
        import pandas as pd

        df = pd.read_parquet(f"{out}/{table}", dtype_backend="pyarrow")
        return [{c: df[c].iloc[i] if not pd.api.types.is_scalar(df[c].iloc[i]) or not pd.isna(df[c].iloc[i])
                 else None for c in df.columns} for i in range(len(df))]
    if engine == "Polars":
        import polars as pl

        return pl.read_parquet(glob).to_dicts()
    if engine == "Spark":
        return [r.asDict(recursive=True) for r in spark.read.parquet(f"{out}/{table}").collect()]
    if engine == "ClickHouse":
        import chdb

        return chdb.query(f"SELECT * FROM file('{glob}', Parquet)", "ArrowTable").to_pylist()
    raise ValueError(engine)


# What an engine cannot represent, said once here (and in the README).
def _engine_view(engine: str, table: str, column: str, value):
    """The reference value as `engine` can hold it."""
    if engine == "ClickHouse" and value is None and column in _LIST_COLUMNS.get(table, ()):
        return []  # ClickHouse arrays are never NULL: a null list reads as []
    return value


_LIST_COLUMNS = {"videos": ("tags", "topics", "stage_errors"), "frames": ("patch_tokens", "ocr")}


@pytest.mark.parametrize("engine", ENGINES)
def test_every_column_reads_whole(engine, reader_index, truth, request):
    _engine(engine, request)
    spark = request.getfixturevalue("spark") if engine == "Spark" else None
    for table in fi.TABLES:
        expected = truth["tables"][table]
        got = read_whole(engine, reader_index["out"], table, spark)
        assert len(got) == len(expected), table
        key = ("video_id", "frame_index") if table == "frames" else ("video_id", "segment_index") \
            if table == "asr_segments" else ("video_id",)
        got = sorted((_norm(r) for r in got), key=lambda r: tuple(r[k] for k in key))
        expected = sorted((_norm(r) for r in expected), key=lambda r: tuple(r[k] for k in key))
        for g, e in zip(got, expected):
            assert set(g) == set(e), (engine, table, set(g) ^ set(e))
            for column in e:
                want = _engine_view(engine, table, column, e[column])
                assert _same(g[column], want), (engine, table, column, g[column], want)


def test_float16_is_an_opt_in_spark_refuses(sample, tiny_checkpoint, tmp_path, spark):
    """Why float16 is not the default: Spark cannot read the column (Arrow readers can)."""
    from pipelines import extract

    out = str(tmp_path / "out")
    assert extract.run(["--input", sample["manifest"], "--output", out, "--clip-model", TINY_MODEL,
                        "--clip-pretrained", tiny_checkpoint, "--no-progress", "--no-ocr", "--no-asr",
                        "--embedding-dtype", "float16"]) == 0
    with pytest.raises(Exception, match="FLOAT16|Illegal Parquet type"):
        spark.read.parquet(f"{out}/videos").collect()
    ids, vectors = IndexReader(out).embeddings()
    assert vectors.dtype == np.float32 and ids.num_rows == 3
