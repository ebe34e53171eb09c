"""models.clip (weights resolution, encoder) and the RunInference model handler, with a tiny CLIP."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import clip
from models.hub import file_sha256
from tests.conftest import TINY_MODEL
from transforms.embed import ClipModelHandler


def _frames(n: int, seed: int = 0, size=(64, 100)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(*size, 3), dtype=np.uint8) for _ in range(n)]


def _open_clip_reference(checkpoint: str, images: list[np.ndarray]) -> np.ndarray:
    """open_clip's own path, written independently of models/clip.py: model, eval transform, encode."""
    import open_clip
    from PIL import Image

    model, _, preprocess = open_clip.create_model_and_transforms(TINY_MODEL, pretrained=checkpoint)
    model.eval()
    with torch.no_grad():
        batch = torch.stack([preprocess(Image.fromarray(i)) for i in images])
        return model.encode_image(batch, normalize=True).numpy()


def test_checkpoint_embeddings_equal_open_clip_own(tiny_checkpoint):
    images = _frames(5)
    enc = clip.ClipEncoder(clip.ClipConfig(TINY_MODEL, tiny_checkpoint)).load()
    ours = enc.encode_images(images)
    ref = _open_clip_reference(tiny_checkpoint, images)
    assert ours.shape == (5, 64) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert enc.weights_id.startswith("file:tiny.pt:sha256:")


def test_embeddings_depend_on_the_image_and_not_on_the_batch(tiny_checkpoint):
    enc = clip.ClipEncoder(clip.ClipConfig(TINY_MODEL, tiny_checkpoint)).load()
    images = _frames(4, seed=3)
    together = enc.encode_images(images)
    alone = np.concatenate([enc.encode_images([i]) for i in images])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    # Different pictures give different vectors (a stage returning a constant would fail here).
    sims = together @ together.T
    assert np.all(sims[~np.eye(4, dtype=bool)] < 0.9999)


def test_random_weights_are_seeded_and_marked():
    a = clip.ClipEncoder(clip.ClipConfig(TINY_MODEL, "none")).load()
    b = clip.ClipEncoder(clip.ClipConfig(TINY_MODEL, "none")).load()
    images = _frames(2, seed=5)
    np.testing.assert_array_equal(a.encode_images(images), b.encode_images(images))
    assert clip.check_weights(clip.ClipConfig(TINY_MODEL, "none")) == "none"
    assert a.weights_id == "none"


def test_text_embeddings(tiny_checkpoint):
    enc = clip.ClipEncoder(clip.ClipConfig(TINY_MODEL, tiny_checkpoint)).load()
    out = enc.encode_texts(["a red square", "a blue circle", "a red square"])
    assert out.shape == (3, 64)
    np.testing.assert_allclose(out[0], out[2], atol=1e-6)
    assert abs(float(out[0] @ out[1])) < 0.9999


def test_unavailable_weights_fail_fast_with_advice(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(clip.WeightsUnavailable) as e:
        clip.check_weights(clip.ClipConfig("ViT-B-32", "laion2b_s34b_b79k"))
    assert "--clip-pretrained /path/to/checkpoint.pt" in str(e.value)
    with pytest.raises(clip.WeightsUnavailable, match="not a readable file"):
        clip.check_weights(clip.ClipConfig(TINY_MODEL, str(tmp_path / "missing" / "ckpt.pt")))
    with pytest.raises(clip.WeightsUnavailable, match="neither a file nor"):
        clip.check_weights(clip.ClipConfig("ViT-B-32", "no-such-tag"))
    with pytest.raises(ValueError, match="unknown open_clip model"):
        clip.check_weights(clip.ClipConfig("NoSuchNet", "none"))


def test_checkpoint_loading_refuses_pickled_objects(tmp_path):
    # torch.load(weights_only=True) must refuse arbitrary pickled objects in a checkpoint.
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": _Pickled()}, path)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported global|not allowed"):
        clip.ClipEncoder(clip.ClipConfig(TINY_MODEL, str(path))).load()


class _Pickled:
    pass


def test_a_checkpoint_must_set_every_parameter(tmp_path, tiny_checkpoint):
    """A checkpoint's model is built without random initialisation (the load overwrites it): one that
    leaves a parameter out is refused, never run on memory nothing wrote; the initialisers are
    back afterwards, and the random-weights model is still the seeded one."""
    state = torch.load(tiny_checkpoint, weights_only=True)
    dropped = next(k for k in state if k.startswith("visual."))
    del state[dropped]
    partial = tmp_path / "partial.pt"
    torch.save(state, partial)
    with pytest.raises(RuntimeError, match="Missing key"):
        clip.ClipEncoder(clip.ClipConfig(TINY_MODEL, str(partial))).load()
    t = torch.zeros(3)
    torch.nn.init.ones_(t)
    assert t.tolist() == [1.0, 1.0, 1.0]
    a = clip.ClipEncoder(clip.ClipConfig(TINY_MODEL, "none")).load()
    b = clip.ClipEncoder(clip.ClipConfig(TINY_MODEL, "none")).load()
    image = [np.full((32, 32, 3), 90, np.uint8)]
    assert np.array_equal(a.encode_images(image), b.encode_images(image))
    assert np.abs(a.encode_images(image)).sum() > 0


def test_device_selection():
    assert clip.resolve_device("cpu") == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert clip.resolve_device("auto") == expected
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            clip.resolve_device("cuda")
    with pytest.raises(ValueError):
        clip.resolve_device("tpu")


def test_model_handler_mixed_batch(tiny_checkpoint):
    from schemas.elements import VideoFrames

    handler = ClipModelHandler(clip.ClipConfig(TINY_MODEL, tiny_checkpoint), max_batch_size=8)
    model = handler.load_model()
    images = _frames(3, seed=9)
    video = VideoFrames("v", (0, 7, 9), tuple(images))
    batch = [video, "a title", VideoFrames("w", (4,), (images[1],))]
    results = list(handler.run_inference(batch, model))
    assert len(results) == 3
    embs, patches, title = results[0].inference
    assert results[0].example == (0, 7, 9) and patches is None and title is None
    np.testing.assert_array_equal(embs, model.encode_images(images))  # one call per video: exact
    np.testing.assert_allclose(results[1].inference, model.encode_texts(["a title"])[0], atol=1e-5)
    assert results[1].example == "a title"
    np.testing.assert_allclose(results[2].inference[0][0], embs[1], atol=1e-5)
    assert handler.get_num_bytes(batch) == sum(i.nbytes for i in images) + len("a title") + images[1].nbytes
    assert handler.batch_elements_kwargs()["max_batch_size"] == 8
    with pytest.raises(TypeError):
        list(handler.run_inference([42], model))
    # A video's title rides with its keyframes (one input, so EmbedFrames fuses with the decoder).
    titled = list(handler.run_inference([VideoFrames("t", (4,), (images[1],), title="a title")], model))[0]
    np.testing.assert_array_equal(titled.inference[0], results[2].inference[0])
    np.testing.assert_allclose(titled.inference[2], model.encode_texts(["a title"])[0], atol=1e-5)
    patch_handler = ClipModelHandler(clip.ClipConfig(TINY_MODEL, tiny_checkpoint), with_patches=True)
    embs_p, patches_p, _ = list(patch_handler.run_inference([video], model))[0].inference
    np.testing.assert_array_equal(embs_p, embs)
    assert patches_p.shape == (3, 16, 64)


def test_handler_loads_clip_on_first_use(tmp_path):
    # RunInference loads in DoFn.setup, before a fused decoder starts: the handler defers the load.
    handler = ClipModelHandler(clip.ClipConfig(TINY_MODEL, str(tmp_path / "not-yet.pt")))
    model = handler.load_model()  # would raise if it loaded: the checkpoint does not exist
    with pytest.raises(Exception, match="not-yet"):
        model.encode_images(_frames(1, seed=1))


def test_shared_encoder_is_safe_across_threads(tiny_checkpoint):
    """One ClipEncoder shared by worker threads (DirectRunner multi_threading): frame-only and
    frame+patch calls interleaved from 8 threads for many rounds give exactly the single-threaded
    results. A flag flipped on the shared vision tower during a call made this fail (a thread saw
    a tuple where it expected a tensor, or the reverse)."""
    import threading

    enc = clip.ClipEncoder(clip.ClipConfig(TINY_MODEL, tiny_checkpoint)).load()
    batches = [_frames(3, seed=s) for s in range(4)]
    want_pooled = [enc.encode_images(b) for b in batches]
    want_both = [enc.encode_images_and_patches(b) for b in batches]
    for pooled, (both_pooled, patches) in zip(want_pooled, want_both):
        np.testing.assert_allclose(both_pooled, pooled, atol=1e-5)
        assert patches.shape == (3, 16, 64) and np.abs(patches).sum() > 0
    failures: list[str] = []
    start = threading.Barrier(8)

    def work(worker: int) -> None:
        start.wait()
        for round_ in range(60):
            i = (worker + round_) % len(batches)
            try:
                if (worker + round_) % 2:
                    got = enc.encode_images(batches[i])
                    np.testing.assert_array_equal(got, want_pooled[i])
                else:
                    pooled, patches = enc.encode_images_and_patches(batches[i])
                    np.testing.assert_array_equal(pooled, want_both[i][0])
                    np.testing.assert_array_equal(patches, want_both[i][1])
            except Exception as e:  # noqa: BLE001 — collected and reported below
                failures.append(f"worker {worker} round {round_}: {type(e).__name__}: {e}"[:300])
                return

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:3]
    # Nothing on the shared model was left changed by the calls.
    assert enc.model.visual.output_tokens is False


def test_export_turns_published_checkpoint_formats_into_what_clip_pretrained_takes(tmp_path, tiny_checkpoint):
    """The README's recipe for offline clusters: a training checkpoint (state_dict key, DataParallel
    'module.' prefixes, extra entries) or a .safetensors file becomes a plain state dict that
    --clip-pretrained PATH loads, giving the source model's embeddings exactly."""
    from safetensors.torch import save_file

    state = torch.load(tiny_checkpoint, weights_only=True)
    training = tmp_path / "epoch_3.pt"
    torch.save({"epoch": 3, "name": "run", "state_dict": {f"module.{k}": v for k, v in state.items()}}, training)
    safetensors = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(safetensors))
    images = _frames(3, seed=9)
    want = _open_clip_reference(tiny_checkpoint, images)
    for source in (training, safetensors):
        out = tmp_path / f"{source.stem}-vmm.pt"
        if source is training:  # the README's command
            from pipelines import cli

            assert cli.main(["export-clip", "--clip-model", TINY_MODEL, "--source", str(source),
                             "--output", str(out)]) == 0
            wid = clip.weights_id(clip.ClipConfig(TINY_MODEL, str(out)))
        else:
            wid = clip.export_checkpoint(TINY_MODEL, str(source), str(out))
        assert wid == f"file:{out.name}:sha256:{file_sha256(str(out))[:16]}"
        enc = clip.ClipEncoder(clip.ClipConfig(TINY_MODEL, str(out))).load()
        np.testing.assert_allclose(enc.encode_images(images), want, atol=1e-5)
    # A checkpoint of another architecture is refused, and nothing is written.
    with pytest.raises(clip.WeightsUnavailable, match="not a vmm-tiny-vit checkpoint|not a"):
        clip.export_checkpoint("ViT-B-32", str(training), str(tmp_path / "wrong.pt"))
    assert not (tmp_path / "wrong.pt").exists()
