"""models.decode on generated and real videos, and the DecodeVideos transform."""

from __future__ import annotations

import os

import apache_beam as beam
import av
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from models.decode import DecodeConfig, DecodeError, decode_keyframes
from models.keyframes import SamplingConfig
from schemas.elements import VideoRequest
from tests.conftest import media_videos
from transforms.decode import DecodeVideos


def _write_audio_only(path: str) -> None:
    with av.open(path, "w") as out:
        stream = out.add_stream("aac", rate=16000, layout="mono")
        samples = (np.sin(np.arange(16000) / 10.0) * 0.1).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def test_keyframes_follow_the_shots_of_the_sample(sample):
    config = DecodeConfig(short_side=64)
    for video in sample["expected"]["videos"]:
        decoded = decode_keyframes(video["uri"], config)
        fps = decoded.fps
        assert decoded.frames_decoded == video["num_frames"]
        assert decoded.duration_s == pytest.approx(video["duration_s"], abs=0.05)
        assert (decoded.width, decoded.height, decoded.video_codec) == (640, 360, "h264")
        reasons = [c.reason for c, _ in decoded.keyframes]
        times = [c.timestamp_s for c, _ in decoded.keyframes]
        assert reasons[0] == "first" and times[0] == 0.0
        # One keyframe soon after every cut: within one analysis tick (0.25 s) of the shot start.
        scene_times = [t for t, r in zip(times, reasons) if r == "scene"]
        starts = video["shot_starts_s"][1:]
        assert len(scene_times) == len(starts)
        for start, t in zip(starts, scene_times):
            assert start <= t <= start + 1.0 / config.sampling.analysis_fps + 1.0 / fps
        for c, img in decoded.keyframes:
            assert c.timestamp_s == pytest.approx(c.frame_index / fps, abs=1e-6)
            assert img.dtype == np.uint8 and min(img.shape[:2]) == 64 and img.shape[2] == 3


def test_keyframe_pixels_are_the_frames_at_their_index(sample):
    """The kept image is the decoded frame at frame_index (not a neighbour, not a blank)."""
    uri = sample["expected"]["videos"][0]["uri"]
    decoded = decode_keyframes(uri, DecodeConfig(short_side=90))
    wanted = {c.frame_index: img for c, img in decoded.keyframes}
    with av.open(uri) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                ref = frame.to_ndarray(format="rgb24", width=160, height=90, interpolation="AREA")
                assert np.array_equal(ref, wanted[i])
                assert wanted[i].std() > 5  # real content, not a flat fake frame
    assert len(wanted) >= 3


def test_max_frames_caps_and_spreads(media_dir):
    cfg = DecodeConfig(sampling=SamplingConfig(max_frames=4, clock_interval_s=0.5), short_side=32)
    path = os.path.join(media_dir, "video", "testvideo.mp4")
    decoded = decode_keyframes(path, cfg)
    times = [c.timestamp_s for c, _ in decoded.keyframes]
    assert len(times) == 4 and times == sorted(times)
    assert times[0] == 0.0 and times[-1] > decoded.duration_s / 2


def test_max_duration_stops_reading(sample):
    video = sample["expected"]["videos"][0]
    decoded = decode_keyframes(video["uri"], DecodeConfig(short_side=32, max_duration_s=3.0))
    assert decoded.frames_decoded <= 3 * 25 + 2
    assert all(c.timestamp_s <= 3.0 for c, _ in decoded.keyframes)
    assert decoded.duration_s == pytest.approx(video["duration_s"], abs=0.1)  # reported, not measured


@pytest.mark.parametrize(
    "make, error_type",
    [
        (lambda d: os.path.join(d, "missing.mp4"), "FileNotFound"),
        (lambda d: d, "NotAFile"),
        (lambda d: _file(d, "empty.mp4", b""), "NotAMediaFile"),
        (lambda d: _file(d, "text.mp4", b"this is not a video\n" * 100), "NotAMediaFile"),
        (lambda d: _file(d, "zip.mp4", b"PK\x03\x04" + bytes(200)), "NotAMediaFile"),
    ],
)
def test_bad_inputs_raise_typed_errors(tmp_path, make, error_type):
    with pytest.raises(DecodeError) as e:
        decode_keyframes(make(str(tmp_path)))
    assert e.value.error_type == error_type
    assert str(e.value)


@pytest.mark.parametrize("fraction", [0.01, 0.5, 0.9])
def test_a_truncated_video_is_a_decode_error_not_a_non_media_file(sample, tmp_path, fraction):
    """FFmpeg says "Invalid data" for a text file and for an MP4 cut short alike; the errors table
    tells them apart (a user fixes them differently)."""
    data = open(sample["expected"]["videos"][0]["uri"], "rb").read()
    path = _file(str(tmp_path), "cut.mp4", data[: int(len(data) * fraction)])
    with pytest.raises(DecodeError) as e:
        decode_keyframes(path)
    assert e.value.error_type == "DecodeError", str(e.value)
    assert "not a media file" not in str(e.value)


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = str(tmp_path / "audio.m4a")
    _write_audio_only(path)
    with pytest.raises(DecodeError) as e:
        decode_keyframes(path)
    assert e.value.error_type == "NoVideoStream"


def _file(folder: str, name: str, data: bytes) -> str:
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("path", media_videos(), ids=os.path.basename)
def test_every_real_video_decodes(path, media_dir):
    decoded = decode_keyframes(path, DecodeConfig(short_side=48))
    assert decoded.frames_decoded > 0 and decoded.keyframes
    assert decoded.width > 0 and decoded.height > 0 and decoded.duration_s > 0
    assert all(min(img.shape[:2]) == 48 for _, img in decoded.keyframes)
    # A video may open on black (and fades.mp4 is flat grey throughout), but the keyframes must
    # carry picture: texture within a frame, or brightness that changes between keyframes.
    images = [img for _, img in decoded.keyframes]
    assert max(img.std() for img in images) > 5 or np.ptp([img.mean() for img in images]) > 10


def test_decode_transform_routes_videos_frames_and_errors(sample, tmp_path):
    videos = sample["expected"]["videos"]
    requests = [VideoRequest(v["video_id"], v["uri"], i) for i, v in enumerate(videos)]
    requests.append(VideoRequest("ghost", str(tmp_path / "ghost.mp4"), 99))
    config = DecodeConfig(short_side=32)
    expected_counts = [(v["video_id"], len(decode_keyframes(v["uri"], config).keyframes)) for v in videos]
    with BeamTestPipeline() as p:
        out = p | beam.Create(requests) | DecodeVideos(config)
        assert_that(
            out["videos"] | "InfoCounts" >> beam.Map(lambda v: (v.request.video_id, len(v.keyframes))),
            equal_to(expected_counts),
            label="videos",
        )
        frame_counts = out["frames"] | "FrameKeys" >> beam.Map(lambda f: (f.video_id, len(f.images)))
        assert_that(frame_counts, equal_to(expected_counts), label="frames")
        assert_that(
            out["errors"] | beam.Map(lambda e: (e.video_id, e.stage, e.error_type)),
            equal_to([("ghost", "decode", "FileNotFound")]),
            label="errors",
        )


def test_audio_comes_first_then_the_frames(sample):
    from models.decode import DecodedAudio, DecodedVideo, decode_parts

    uri = sample["expected"]["videos"][0]["uri"]
    config = DecodeConfig(short_side=32, audio=True)
    whole = decode_keyframes(uri, config)
    with open(uri, "rb") as f:  # a file object (what FileSystems gives) is rewound for the video pass
        audio, video = list(decode_parts(f, config))
    assert isinstance(audio, DecodedAudio) and isinstance(video, DecodedVideo)
    assert video.audio is None and audio.error is None and audio.samples.size > 16000
    np.testing.assert_array_equal(audio.samples, whole.audio)
    assert [c.frame_index for c, _ in video.keyframes] == [c.frame_index for c, _ in whole.keyframes]
    assert video.frames_decoded == whole.frames_decoded
    assert [type(p).__name__ for p in decode_parts(uri, DecodeConfig(short_side=32))] == ["DecodedVideo"]


def test_a_file_with_no_video_is_refused_before_its_audio_is_decoded(tmp_path):
    from models.decode import decode_parts

    path = str(tmp_path / "audio.m4a")
    _write_audio_only(path)
    parts = decode_parts(path, DecodeConfig(audio=True))
    with pytest.raises(DecodeError) as e:
        next(parts)
    assert e.value.error_type == "NoVideoStream"


class _TouchOnAudio(beam.DoFn):
    """Stands for ASR: fused after DecodeVideos' audio output, it marks that it ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def process(self, audio):
        with open(self.marker, "w") as f:
            f.write(audio.video_id)
        yield audio.video_id, audio.samples.size


def test_the_audio_consumer_runs_while_the_child_decodes_the_frames(sample, tmp_path):
    # The child hands the audio over, then decodes the frames only once the marker exists: the
    # video comes out only if the audio's consumer ran in between (fused, not after a shuffle).
    from tests.crashy import audio_then_wait

    uri = sample["expected"]["videos"][0]["uri"]
    marker = str(tmp_path / "asr-ran")
    config = DecodeConfig(short_side=32, audio=True)
    with BeamTestPipeline() as p:
        out = p | beam.Create([VideoRequest("v", f"{uri}?wait={marker}", 0)]) | DecodeVideos(
            config, isolate=True, decode_fn=audio_then_wait)
        assert_that(out["videos"] | beam.Map(lambda v: v.request.video_id), equal_to(["v"]), label="videos")
        assert_that(out["errors"], equal_to([]), label="errors")
        heard = out["audio"] | beam.ParDo(_TouchOnAudio(marker))
        assert_that(heard | "Ids" >> beam.Keys(), equal_to(["v"]), label="audio")


def test_a_video_that_fails_after_its_audio_is_one_error_row(sample):
    from tests.crashy import audio_then_fail

    uri = sample["expected"]["videos"][0]["uri"]
    config = DecodeConfig(short_side=32, audio=True)
    with BeamTestPipeline() as p:
        out = p | beam.Create([VideoRequest("bad", uri, 0)]) | DecodeVideos(
            config, isolate=True, decode_fn=audio_then_fail)
        assert_that(out["videos"], equal_to([]), label="videos")
        assert_that(out["frames"], equal_to([]), label="frames")
        assert_that(out["errors"] | beam.Map(lambda e: (e.video_id, e.error_type)),
                    equal_to([("bad", "DecodeError")]), label="errors")
        # The audio was out already: AssembleRows drops it (tests/test_pipeline.py).
        assert_that(out["audio"] | "Ids" >> beam.Map(lambda a: a.video_id), equal_to(["bad"]), label="audio")
