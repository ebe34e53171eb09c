"""Tests for schemas/manifest.py (input contract) and schemas/forward_index.py (output contract)."""

import dataclasses
import hashlib
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.version import __version__
from schemas.elements import ErrorRecord, StageError, VideoRequest
from schemas.forward_index import (
    ERRORS_SCHEMA,
    RESERVED_VIDEO_COLUMNS,
    SCHEMA_VERSION,
    STAGE_ERROR_TYPE,
    embedding_type,
    file_metadata,
    frames_schema,
    videos_schema,
    with_metadata,
)
from schemas.manifest import (
    ManifestError,
    default_video_id,
    first_rows,
    infer_passthrough_schema,
    is_video_path,
    manifest_kind,
    parse_jsonl_line,
    passthrough_name,
    record_to_request,
)

EMPTY = pa.schema([])


def schema_of(**types):
    return pa.schema([pa.field(name, t) for name, t in types.items()])


# --- record_to_request: the required uri -----------------------------------------------------


@pytest.mark.parametrize("uri", [None, "", "   ", 42, ["a.mp4"]])
def test_record_without_usable_uri_is_error(uri):
    record = {"title": "x"} if uri is None else {"uri": uri, "title": "x"}
    out = record_to_request(record, 3, EMPTY, "m.jsonl:4")
    assert isinstance(out, ErrorRecord)
    assert out.video_id == "manifest-entry:m.jsonl:4"
    assert out.stage == "manifest"
    assert out.error_type == "BadManifestEntry"
    assert "m.jsonl:4" in out.message and "uri" in out.message
    assert out.uri == (None if uri is None else str(uri))


def test_record_without_uri_keeps_given_video_id():
    out = record_to_request({"video_id": "vid-7"}, 0, EMPTY, "m.csv:2")
    assert isinstance(out, ErrorRecord)
    assert out.video_id == "vid-7"


# --- record_to_request: own fields -----------------------------------------------------------


def test_default_video_id_is_stable_hash_of_uri():
    uri = "gs://bucket/videos/clip 01.mp4"
    a = record_to_request({"uri": uri}, 0, EMPTY, "m:1")
    b = record_to_request({"uri": uri, "title": "other"}, 9, EMPTY, "m:2")
    assert isinstance(a, VideoRequest) and isinstance(b, VideoRequest)
    assert re.fullmatch(r"[0-9a-f]{16}", a.video_id)
    assert a.video_id == b.video_id == default_video_id(uri)
    # Pinned: ids already written to indexes must not change between versions.
    assert a.video_id == hashlib.sha1(uri.encode("utf-8")).hexdigest()[:16]
    other = record_to_request({"uri": uri + "x"}, 0, EMPTY, "m:3")
    assert other.video_id != a.video_id


def test_uri_is_stripped_before_hashing():
    out = record_to_request({"uri": "  /data/a.mp4\n"}, 0, EMPTY, "m:1")
    assert out.uri == "/data/a.mp4"
    assert out.video_id == default_video_id("/data/a.mp4")


def test_given_video_id_title_tags_and_ordinal():
    out = record_to_request(
        {"uri": "/v/a.mp4", "video_id": 1234, "title": 2024, "tags": ["cats", 7, None]}, 17, EMPTY, "m:1"
    )
    assert isinstance(out, VideoRequest)
    assert out.video_id == "1234"
    assert out.ordinal == 17
    assert out.title == "2024"
    assert out.tags == ("cats", "7")
    assert out.extra == () and out.notes == ()


def test_empty_video_id_falls_back_to_hash():
    out = record_to_request({"uri": "/v/a.mp4", "video_id": ""}, 0, EMPTY, "m:1")
    assert out.video_id == default_video_id("/v/a.mp4")


@pytest.mark.parametrize(
    "tags, expected",
    [
        ("news|sport | weather", ("news", "sport", "weather")),
        ("solo", ("solo",)),
        ("a||b|", ("a", "b")),
        (["x", "y"], ("x", "y")),
        (("x",), ("x",)),
        (np.array(["p", "q"]), ("p", "q")),
        (None, None),
    ],
)
def test_tags_from_list_or_pipe_string(tags, expected):
    out = record_to_request({"uri": "a.mp4", "tags": tags}, 0, EMPTY, "m:1")
    assert out.tags == expected
    assert out.notes == ()


def test_bad_tags_become_note_not_failure():
    out = record_to_request({"uri": "a.mp4", "tags": 5}, 0, EMPTY, "m:1")
    assert isinstance(out, VideoRequest)
    assert out.tags is None
    assert len(out.notes) == 1
    assert (out.notes[0].stage, out.notes[0].error_type) == ("manifest", "BadField")
    assert out.notes[0].message.startswith("tags:")


# --- record_to_request: passthrough ----------------------------------------------------------


def test_passthrough_converted_to_schema_types_and_sorted():
    passthrough = schema_of(
        views=pa.int64(), score=pa.float64(), live=pa.bool_(), genres=pa.list_(pa.string()), meta=pa.string()
    )
    record = {
        "uri": "a.mp4",
        "views": 12,
        "score": 3,  # an int in a float column
        "live": False,
        "genres": ["doc", "nature"],
        "meta": {"b": 1, "a": [1, 2]},  # nested objects kept as their JSON text
    }
    out = record_to_request(record, 0, passthrough, "m:1")
    assert out.notes == ()
    extra = dict(out.extra)
    assert [name for name, _ in out.extra] == sorted(extra)
    assert extra == {
        "genres": ["doc", "nature"],
        "live": False,
        "meta": '{"a": [1, 2], "b": 1}',
        "score": 3.0,
        "views": 12,
    }
    assert isinstance(extra["score"], float)
    assert isinstance(extra["views"], int) and not isinstance(extra["views"], bool)


def test_passthrough_missing_or_null_values():
    passthrough = schema_of(views=pa.int64(), score=pa.float64(), lang=pa.string())
    out = record_to_request({"uri": "a.mp4", "views": None, "score": float("nan")}, 0, passthrough, "m:1")
    assert dict(out.extra) == {"views": None, "score": None}  # lang absent: not made up
    assert out.notes == ()


@pytest.mark.parametrize(
    "type_, value",
    [
        (pa.int64(), "seven"),
        (pa.int64(), 2**70),
        (pa.int64(), True),
        (pa.bool_(), "yes"),
        (pa.list_(pa.string()), [1, 2]),
    ],
)
def test_passthrough_value_that_does_not_fit_is_null_and_note(type_, value):
    passthrough = schema_of(field=type_, other=pa.int64())
    out = record_to_request({"uri": "a.mp4", "field": value, "other": 5}, 0, passthrough, "m:1")
    assert isinstance(out, VideoRequest)
    assert dict(out.extra) == {"field": None, "other": 5}  # the neighbour is unaffected
    assert len(out.notes) == 1
    note = out.notes[0]
    assert (note.stage, note.error_type) == ("manifest", "BadField")
    assert note.message.startswith("field:")
    assert repr(value) in note.message


def test_passthrough_collision_renamed():
    passthrough = infer_passthrough_schema("jsonl", [{"uri": "a", "fps": 30, "embedding": "x", "lang": "en"}])
    assert passthrough.names == ["lang", "manifest_embedding", "manifest_fps"]
    out = record_to_request({"uri": "a.mp4", "fps": 30, "embedding": "x", "lang": "en"}, 0, passthrough, "m:1")
    assert out.extra == (("lang", "en"), ("manifest_embedding", "x"), ("manifest_fps", 30))
    assert passthrough_name("fps") == "manifest_fps"
    assert passthrough_name("lang") == "lang"


def test_unknown_later_field_ignored():
    passthrough = schema_of(lang=pa.string())
    out = record_to_request({"uri": "a.mp4", "lang": "de", "late": 1, "later": [1]}, 0, passthrough, "m:1")
    assert out.extra == (("lang", "de"),)
    assert out.notes == ()


def test_own_fields_never_in_extra():
    passthrough = schema_of(lang=pa.string())
    out = record_to_request({"uri": "a.mp4", "video_id": "v", "title": "t", "tags": "x", "lang": "fr"}, 0, passthrough, "m")
    assert [name for name, _ in out.extra] == ["lang"]


# --- record_to_request: strict conversions and renames --------------------------------------------------------


def test_mixed_type_column_keeps_non_string_values_as_text():
    rows = [{"uri": "a.mp4", "code": 1}, {"uri": "b.mp4", "code": "A7"}, {"uri": "c.mp4", "code": True}]
    passthrough = infer_passthrough_schema("jsonl", rows)
    assert passthrough.field("code").type == pa.string()
    outs = [record_to_request(r, i, passthrough, f"m:{i}") for i, r in enumerate(rows)]
    assert [dict(o.extra)["code"] for o in outs] == ["1", "A7", "true"]
    assert all(o.notes == () for o in outs)


def test_string_in_list_column_is_not_split_into_characters():
    passthrough = schema_of(genres=pa.list_(pa.string()))
    out = record_to_request({"uri": "a.mp4", "genres": "drama"}, 0, passthrough, "m:1")
    # Not ['d', 'r', 'a', ...]: a string where a list belongs is a null with a note saying why.
    assert dict(out.extra)["genres"] is None
    assert [(n.stage, n.error_type) for n in out.notes] == [("manifest", "BadField")]
    assert "genres" in out.notes[0].message and "drama" in out.notes[0].message
    ok = record_to_request({"uri": "a.mp4", "genres": ["drama", "war"]}, 0, passthrough, "m:2")
    assert dict(ok.extra)["genres"] == ["drama", "war"] and ok.notes == ()


def test_fractional_value_in_int_column_is_not_truncated():
    passthrough = schema_of(views=pa.int64())
    out = record_to_request({"uri": "a.mp4", "views": 2.5}, 0, passthrough, "m:1")
    assert dict(out.extra)["views"] is None
    assert [n.error_type for n in out.notes] == ["BadField"]


def test_renamed_collision_does_not_duplicate_existing_field():
    # `fps` is a vmm column, so the manifest's `fps` becomes `manifest_fps` -- which the manifest
    # also has: two columns of one name would make the videos table unwritable. Refused, named.
    parquet = pa.schema([("uri", pa.string()), ("fps", pa.int64()), ("manifest_fps", pa.int64())])
    for kind, header in (("jsonl", [{"uri": "a.mp4", "fps": 25, "manifest_fps": 30}]),
                         ("csv", ["uri", "fps", "manifest_fps"]), ("parquet", parquet)):
        with pytest.raises(ManifestError, match=r"collide.*\['manifest_fps'\]"):
            infer_passthrough_schema(kind, header)
    # Without the clash the rename happens and every name is unique.
    passthrough = infer_passthrough_schema("jsonl", [{"uri": "a.mp4", "fps": 25, "fps_source": "cam"}])
    assert passthrough.names == ["fps_source", "manifest_fps"]


# --- infer_passthrough_schema ----------------------------------------------------------------


def test_infer_jsonl_types():
    rows = [
        {"uri": "a", "video_id": "1", "title": "t", "tags": ["x"], "live": True, "n": 1, "x": 1, "s": "a",
         "l": ["p"], "mixed": 1, "obj": {"k": 1}, "nulls": None, "bools_ints": True},
        {"uri": "b", "live": False, "n": 2, "x": 2.5, "s": None, "l": [], "mixed": "two", "bools_ints": 1},
        {"uri": "c", "n": None, "x": 3, "l": None, "nested": [["a"]], "intlist": [1, 2]},
    ]
    schema = infer_passthrough_schema("jsonl", rows)
    assert schema == pa.schema(
        [
            pa.field("bools_ints", pa.string()),
            pa.field("intlist", pa.string()),
            pa.field("l", pa.list_(pa.string())),
            pa.field("live", pa.bool_()),
            pa.field("mixed", pa.string()),
            pa.field("n", pa.int64()),
            pa.field("nested", pa.string()),
            pa.field("nulls", pa.string()),
            pa.field("obj", pa.string()),
            pa.field("s", pa.string()),
            pa.field("x", pa.float64()),
        ]
    )
    assert all(f.nullable for f in schema)


def test_infer_jsonl_no_extra_fields():
    assert infer_passthrough_schema("jsonl", [{"uri": "a", "title": "t"}]) == EMPTY
    assert infer_passthrough_schema("jsonl", []) == EMPTY


def test_infer_csv_header_all_strings():
    header = ["uri", "title", "lang", "views", "fps", "video_id", "tags", "channel"]
    schema = infer_passthrough_schema("csv", header)
    assert schema.names == ["channel", "lang", "manifest_fps", "views"]
    assert all(f.type == pa.string() for f in schema)


def test_infer_parquet_schema():
    manifest = pa.schema(
        [
            pa.field("uri", pa.string(), nullable=False),
            pa.field("video_id", pa.string()),
            pa.field("tags", pa.list_(pa.string())),
            pa.field("duration", pa.float32()),
            pa.field("width", pa.int32()),
            pa.field("lang", pa.string()),
        ]
    )
    schema = infer_passthrough_schema("parquet", manifest)
    assert [(f.name, f.type) for f in schema] == [
        ("duration", pa.float32()),
        ("lang", pa.string()),
        ("manifest_width", pa.int32()),
    ]


def test_infer_parquet_without_uri_is_manifest_error():
    with pytest.raises(ManifestError, match="uri"):
        infer_passthrough_schema("parquet", schema_of(path=pa.string(), title=pa.string()))
    assert issubclass(ManifestError, ValueError)


def test_infer_unknown_kind():
    with pytest.raises(ValueError, match="xml"):
        infer_passthrough_schema("xml", [])


def test_parquet_manifest_end_to_end(tmp_path):
    # A real Parquet manifest: its schema types the passthrough, its rows become requests.
    table = pa.table(
        {
            "uri": ["/v/a.mp4", "/v/b.mp4", None],
            "title": ["A", None, "C"],
            "tags": [["x", "y"], None, []],
            "duration": pa.array([1.5, None, 3.0], pa.float32()),
            "fps": pa.array([25, 30, 24], pa.int16()),
        }
    )
    path = tmp_path / "m.parquet"
    pq.write_table(table, path)
    passthrough = infer_passthrough_schema("parquet", pq.read_schema(path))
    rows = pq.read_table(path).to_pylist()
    outs = [record_to_request(r, i, passthrough, f"m.parquet:{i + 1}") for i, r in enumerate(rows)]
    a, b, c = outs
    assert (a.title, a.tags, dict(a.extra)) == ("A", ("x", "y"), {"duration": 1.5, "manifest_fps": 25})
    assert (b.title, b.tags, dict(b.extra)) == (None, None, {"duration": None, "manifest_fps": 30})
    assert isinstance(c, ErrorRecord) and c.video_id == "manifest-entry:m.parquet:3"
    assert a.video_id != b.video_id


# --- parse_jsonl_line / first_rows -----------------------------------------------------------


def test_parse_jsonl_line_object():
    assert parse_jsonl_line('{"uri": "a.mp4", "n": 1}\n', "m:1") == {"uri": "a.mp4", "n": 1}


@pytest.mark.parametrize("line, words", [("{not json", "invalid JSON"), ("[1, 2]", "list"), ("42", "int"), ('"s"', "str")])
def test_parse_jsonl_line_bad(line, words):
    out = parse_jsonl_line(line, "m.jsonl:9")
    assert isinstance(out, ErrorRecord)
    assert out.video_id == "manifest-entry:m.jsonl:9"
    assert out.uri is None
    assert (out.stage, out.error_type) == ("manifest", "BadManifestEntry")
    assert "m.jsonl:9" in out.message and words in out.message


def test_first_rows_skips_blank_and_bad_and_stops_at_limit():
    lines = ['{"uri": "a"}', "", "   ", "{bad", "[1]", '{"uri": "b"}', '{"uri": "c"}']
    assert first_rows(lines) == [{"uri": "a"}, {"uri": "b"}, {"uri": "c"}]
    assert first_rows(lines, limit=2) == [{"uri": "a"}, {"uri": "b"}]


# --- manifest_kind / is_video_path -----------------------------------------------------------


@pytest.mark.parametrize(
    "path, kind",
    [
        ("m.jsonl", "jsonl"),
        ("gs://b/in/*.ndjson", "jsonl"),
        ("M.JSON", "jsonl"),
        ("/data/list.csv", "csv"),
        ("s3://b/part-*.parquet", "parquet"),
        ("/data/videos/*.mp4", None),
        ("/data/videos", None),
        ("notes.txt", None),
        ("m.csv.gz", None),
    ],
)
def test_manifest_kind(path, kind):
    assert manifest_kind(path) == kind


@pytest.mark.parametrize(
    "path, expected",
    [
        ("a.mp4", True),
        ("/x/CLIP.MOV", True),
        ("gs://b/c.webm", True),
        ("d.mkv", True),
        ("e.ts", True),
        ("a.mp4.txt", False),
        ("list.jsonl", False),
        ("/data/videos/", False),
        ("mp4", False),
    ],
)
def test_is_video_path(path, expected):
    assert is_video_path(path) is expected


# --- forward_index: schemas ------------------------------------------------------------------


def test_embedding_type():
    t = embedding_type(512, "float16")
    assert pa.types.is_fixed_size_list(t)
    assert t.list_size == 512
    assert t.value_type == pa.float16()
    assert embedding_type(8, "float32").value_type == pa.float32()
    with pytest.raises(ValueError, match="dtype"):
        embedding_type(8, "float64")
    with pytest.raises(ValueError, match="dim"):
        embedding_type(0, "float16")


def test_videos_schema_core_columns():
    schema = videos_schema(512, "float16")
    assert schema.names == [
        "video_id", "uri", "title", "tags", "duration_s", "fps", "width", "height", "video_codec",
        "has_audio", "num_keyframes", "embedding", "topic_coherence", "title_visual_similarity",
        "ocr_subtitle_text", "ocr_overlay_text", "ocr_scene_text",
        "asr_text", "asr_language", "asr_language_probability", "speech_seconds", "stage_errors",
    ]
    assert set(schema.names) | {"embedding_scale"} == RESERVED_VIDEO_COLUMNS  # the scale: int8 only
    emb = schema.field("embedding")
    assert not emb.nullable
    assert pa.types.is_fixed_size_list(emb.type)
    assert (emb.type.value_type, emb.type.list_size) == (pa.float16(), 512)
    assert videos_schema(768, "float32").field("embedding").type.value_type == pa.float32()
    assert videos_schema(768, "float32").field("embedding").type.list_size == 768
    assert schema.field("stage_errors").type.value_type == STAGE_ERROR_TYPE
    assert not schema.field("video_id").nullable
    assert schema.field("title").nullable


def test_videos_schema_passthrough_after_tags_and_nullable():
    passthrough = pa.schema(
        [pa.field("lang", pa.string(), nullable=False), pa.field("manifest_fps", pa.int64()), pa.field("views", pa.int64())]
    )
    schema = videos_schema(16, "int8", passthrough=passthrough)
    assert schema.names[:7] == ["video_id", "uri", "title", "tags", "lang", "manifest_fps", "views"]
    assert schema.names[7] == "duration_s"
    assert len(schema) == len(RESERVED_VIDEO_COLUMNS) + 3
    for name in passthrough.names:
        assert schema.field(name).nullable
        assert schema.field(name).type == passthrough.field(name).type


@pytest.mark.parametrize("name", ["fps", "embedding", "video_id", "stage_errors"])
def test_videos_schema_collision_raises(name):
    with pytest.raises(ValueError, match=name):
        videos_schema(16, passthrough=pa.schema([pa.field(name, pa.string())]))


def test_inferred_passthrough_fits_videos_schema():
    passthrough = infer_passthrough_schema("csv", ["uri", "fps", "width", "lang"])
    schema = videos_schema(16, "int8", passthrough=passthrough)
    assert {"manifest_fps", "manifest_width", "lang", "fps", "width"} <= set(schema.names)


def test_frames_schema():
    plain = frames_schema(512)
    assert plain.names == ["video_id", "frame_index", "timestamp_s", "reason", "token", "patch_tokens", "ocr"]
    ocr_item = plain.field("ocr").type.value_type
    assert [f.name for f in ocr_item] == ["text", "score", "box", "domain"]
    assert ocr_item.field("box").type == pa.list_(pa.float32(), 8)
    assert plain.field("token").type == pa.int16() and plain.field("token").nullable
    assert plain.field("patch_tokens").type == pa.list_(pa.int16())
    assert plain.field("frame_index").type == pa.int32()
    with_emb = frames_schema(512, "float32", store_embeddings=True)
    assert with_emb.names == plain.names + ["embedding"]
    assert with_emb.field("embedding").type == embedding_type(512, "float32")
    assert not with_emb.field("embedding").nullable


def test_element_types_match_their_tables():
    # The writer fills these tables from the dataclasses field by field.
    assert [f.name for f in dataclasses.fields(ErrorRecord)] == ERRORS_SCHEMA.names
    assert [f.name for f in dataclasses.fields(StageError)] == [f.name for f in STAGE_ERROR_TYPE]


# --- forward_index: metadata and Parquet round trips -----------------------------------------


def test_file_metadata():
    meta = file_metadata(clip_model="ViT-B-32", clip_weights="openai", extra={"vmm.frames": 3})
    assert meta == {
        "vmm.schema_version": SCHEMA_VERSION,
        "vmm.version": __version__,
        "vmm.clip_model": "ViT-B-32",
        "vmm.clip_weights": "openai",
        "vmm.frames": "3",
    }
    assert set(file_metadata(clip_model="m", clip_weights="w")) == {
        "vmm.schema_version", "vmm.version", "vmm.clip_model", "vmm.clip_weights",
    }


def fp16_embeddings(n, dim, seed):
    values = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float16)
    arr = pa.FixedSizeListArray.from_arrays(pa.array(values.ravel(), type=pa.float16()), dim)
    return values, arr


def _write_with_vmm(folder, table: str, schema: pa.Schema, rows: list[dict]) -> str:
    """Writes `rows` the way a run does (WriteForwardIndex: Beam's Parquet sink with vmm's schema),
    returns the one shard it wrote."""
    import glob

    import apache_beam as beam

    from transforms.write import WriteForwardIndex

    with beam.Pipeline() as p:
        _ = {table: p | beam.Create(rows, reshuffle=False)} | WriteForwardIndex(str(folder), {table: schema})
    files = glob.glob(str(folder / table / "part-*.parquet"))
    assert len(files) == 1, files
    return files[0]


def test_metadata_round_trip_through_parquet(tmp_path):
    meta = file_metadata(clip_model="ViT-B-32", clip_weights="laion2b_s34b_b79k",
                         extra={"vmm.codebook_id": "c0ffee"})
    schema = with_metadata(frames_schema(4), meta)
    rows = [{"video_id": "v", "frame_index": 0, "timestamp_s": 0.0, "reason": "first", "token": 7,
             "patch_tokens": np.array([1, 2], np.int16), "ocr": []}]
    path = _write_with_vmm(tmp_path, "frames", schema, rows)
    # The sink must keep every key on the file (a reader tells two indexes apart by them).
    stored = pq.read_metadata(path).metadata
    for key, value in meta.items():
        assert stored[key.encode()] == value.encode(), key
    assert pq.read_schema(path).metadata[b"vmm.codebook_id"] == b"c0ffee"
    assert pq.read_metadata(path).row_group(0).column(0).compression == "ZSTD"


def test_frames_round_trip_with_float16_embeddings(tmp_path):
    from schemas.elements import OcrItem
    from transforms.assemble import ocr_item_row

    dim = 8
    values, _ = fp16_embeddings(3, dim, seed=0)
    schema = with_metadata(frames_schema(dim, "float16", store_embeddings=True),
                           file_metadata(clip_model="m", clip_weights="w"))
    logo = OcrItem("VMM TV", 0.9, np.array([0, 0, 8, 0, 8, 4, 0, 4], np.float32), "overlay")
    # Rows as AssembleRows yields them: numpy arrays for tokens, boxes and embeddings; a text frame
    # has no tokens; [] is "read, no text", None "OCR off or failed".
    rows = [
        {"video_id": "v1", "frame_index": 0, "timestamp_s": 0.0, "reason": "first", "token": 3,
         "patch_tokens": np.array([1, 2], np.int16), "ocr": [ocr_item_row(logo)], "embedding": values[0]},
        {"video_id": "v1", "frame_index": 40, "timestamp_s": 1.6, "reason": "text", "token": None,
         "patch_tokens": None, "ocr": [], "embedding": values[1]},
        {"video_id": "v2", "frame_index": 0, "timestamp_s": 0.0, "reason": "first", "token": 17,
         "patch_tokens": np.array([0, 5], np.int16), "ocr": None, "embedding": values[2]},
    ]
    path = _write_with_vmm(tmp_path, "frames", schema, rows)
    back = pq.read_table(path)
    # Parquet names a list's child `element` on the way back, so nested field names are not compared.
    assert back.schema.equals(schema)
    assert back.schema.metadata == schema.metadata
    emb_type = back.schema.field("embedding").type
    assert pa.types.is_fixed_size_list(emb_type)
    assert (emb_type.value_type, emb_type.list_size) == (pa.float16(), dim)
    out = sorted(back.to_pylist(), key=lambda r: (r["video_id"], r["frame_index"]))
    assert [(r["video_id"], r["frame_index"], r["reason"], r["token"]) for r in out] == [
        ("v1", 0, "first", 3), ("v1", 40, "text", None), ("v2", 0, "first", 17)]
    assert [r["patch_tokens"] for r in out] == [[1, 2], None, [0, 5]]
    assert [r["ocr"] is None for r in out] == [False, False, True] and out[1]["ocr"] == []
    assert out[0]["ocr"][0]["text"] == "VMM TV" and out[0]["ocr"][0]["domain"] == "overlay"
    assert out[0]["ocr"][0]["box"] == [0, 0, 8, 0, 8, 4, 0, 4]
    got = np.array([r["embedding"] for r in out], dtype=np.float16)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, values)


def test_videos_round_trip_with_passthrough_and_stage_errors(tmp_path):
    from models.pooling import pool_video_embedding
    from schemas.elements import KeyframeMeta, VideoInfo, VideoOcr
    from transforms.assemble import AssembleConfig, video_row

    dim = 4
    records = [{"uri": "/a.mp4", "video_id": "v1", "title": "A", "tags": ["x"], "lang": "en", "fps": 30, "views": "x"},
               {"uri": "/b.mp4", "video_id": "v2", "views": 5}]
    # Types come from the first rows; a later row whose value does not fit is a null and a note.
    passthrough = infer_passthrough_schema("jsonl", [{**records[0], "views": 1}, records[1]])
    assert passthrough.names == ["lang", "manifest_fps", "views"] and passthrough.field("views").type == pa.int64()
    requests = [record_to_request(r, i, passthrough, f"m:{i}") for i, r in enumerate(records)]
    frame_embs = [np.random.default_rng(i).standard_normal((k, dim)).astype(np.float32) for i, k in ((1, 3), (2, 1))]
    infos = [
        VideoInfo(requests[0], 12.5, 25.0, 640, 360, "h264", True,
                  tuple(KeyframeMeta(i, i * 2.0, "scene") for i in range(3)), 300,
                  notes=(StageError("asr", "AudioDecodeError", "bad audio"),)),
        VideoInfo(requests[1], None, None, 320, 240, "vp9", False, (KeyframeMeta(0, 0.0, "first"),), 1),
    ]
    ocr = VideoOcr(((0, ()),), ("a subtitle",), ("VMM TV",), (), 1, 0)
    config = AssembleConfig(embedding_dtype="float16", passthrough_columns=tuple(passthrough.names))
    rows = [video_row(infos[0], frame_embs[0], None, config, ocr), video_row(infos[1], frame_embs[1], None, config)]
    schema = videos_schema(dim, "float16", passthrough)
    path = _write_with_vmm(tmp_path, "videos", schema, rows)
    back = pq.read_table(path)
    assert back.schema.equals(schema)
    out = sorted(back.to_pylist(), key=lambda r: r["video_id"])
    assert [r["video_id"] for r in out] == ["v1", "v2"]
    assert (out[0]["lang"], out[0]["manifest_fps"], out[0]["views"]) == ("en", 30, None)
    assert (out[1]["lang"], out[1]["manifest_fps"], out[1]["views"]) == (None, None, 5)
    # v1 keeps the manifest's note (views: 'x' is no int) and the decoder's, in that order.
    assert [(e["stage"], e["error_type"]) for e in out[0]["stage_errors"]] == [
        ("manifest", "BadField"), ("asr", "AudioDecodeError")]
    assert out[1]["stage_errors"] == []
    ocr_columns = ("ocr_subtitle_text", "ocr_overlay_text", "ocr_scene_text")
    assert [out[0][c] for c in ocr_columns] == ["a subtitle", "VMM TV", None]
    assert out[1]["ocr_subtitle_text"] is None and out[1]["topic_coherence"] is None  # one keyframe
    assert out[0]["num_keyframes"] == 3 and out[0]["duration_s"] == 12.5 and out[1]["fps"] is None
    for r, embs in zip(out, frame_embs):
        np.testing.assert_array_equal(np.array(r["embedding"], dtype=np.float16),
                                      pool_video_embedding(embs).astype(np.float16))
