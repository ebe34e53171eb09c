"""CLIP through open_clip: resolve weights, load once, embed frames and titles. No Beam.

Consumes uint8 RGB frames (numpy [h, w, 3], any size: open_clip's own preprocessing resizes and
crops them) and title strings. Produces L2-normalised float32 embeddings [N, D].

Weights (`pretrained`) are one of:
  * an open_clip pretrained tag (e.g. `laion2b_s34b_b79k`), taken from the local cache when it is
    there; otherwise downloaded only if the hub answers quickly -- never a silent fallback;
  * a path to a local checkpoint (a state dict; loaded with `torch.load(weights_only=True)` or
    safetensors, never pickle);
  * `none`: random initialisation, seeded so every worker builds the same model. For tests and
    offline demos only; the weights id `none` is written into every output file.

`models/clip_configs/` registers small architectures (`vmm-tiny-vit`) for tests and smoke runs.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib.util
import json
import logging
import os
import threading
import time
import urllib.parse

import numpy as np

from models.errors import ModelUnavailable
from models.hub import file_sha256, hub_reachable, resolve_device

logger = logging.getLogger(__name__)

NO_WEIGHTS = "none"
DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
_CONFIG_DIR = os.path.join(os.path.dirname(__file__), "clip_configs")
_RANDOM_INIT_SEED = 0
_HF_FILENAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


class WeightsUnavailable(ModelUnavailable):
    """The requested CLIP weights cannot be had here. The message says how to pass local weights."""


def _open_clip():
    import open_clip

    # Registering twice is harmless: open_clip keys configs by file name.
    open_clip.add_model_config(_CONFIG_DIR)
    _quiet_random_init_warning()
    return open_clip


class _NotOpenClipRandomInit(logging.Filter):
    """Drops open_clip's "No pretrained weights loaded ... initialized randomly": vmm builds every
    model with `pretrained=None` and then loads the checkpoint itself (ClipEncoder.load), so the line
    is wrong for a checkpoint; random weights (`none`) get vmm's own warning instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "root" and str(record.msg).startswith("No pretrained weights loaded for model"))


_RANDOM_INIT_FILTER = _NotOpenClipRandomInit()


def _quiet_random_init_warning() -> None:
    # open_clip logs through the root logger; adding the same filter object twice is a no-op.
    logging.getLogger().addFilter(_RANDOM_INIT_FILTER)


@dataclasses.dataclass(frozen=True)
class ClipConfig:
    model_name: str = DEFAULT_MODEL
    pretrained: str = DEFAULT_PRETRAINED  # tag, checkpoint path, or "none"
    device: str = "cpu"  # "cpu", "cuda", "cuda:N", or "auto" (CUDA when available)
    threads: int = 0  # torch intra-op threads; 0 leaves torch's default

    @property
    def is_random(self) -> bool:
        return self.pretrained.lower() == NO_WEIGHTS

    @property
    def is_file(self) -> bool:
        return not self.is_random and (os.sep in self.pretrained or os.path.exists(self.pretrained))


def _config_dirs() -> list[str]:
    """Where open_clip's architecture configs (one JSON file per model) live: ours, then its own."""
    dirs = [_CONFIG_DIR]
    spec = importlib.util.find_spec("open_clip")
    if spec is not None and spec.submodule_search_locations:
        dirs.append(os.path.join(list(spec.submodule_search_locations)[0], "model_configs"))
    return dirs


def model_info(model_name: str) -> dict:
    """open_clip's architecture config (embed_dim, vision_cfg, ...) without building the model.

    Read from the JSON files open_clip itself registers, without importing open_clip (2-4 s with
    torchvision): the launcher of a run needs only these numbers."""
    for folder in _config_dirs():
        path = os.path.join(folder, f"{model_name}.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                cfg = json.load(f)
            if "embed_dim" in cfg and "vision_cfg" in cfg:
                return cfg
    known = sorted({n[:-5] for d in _config_dirs() if os.path.isdir(d) for n in os.listdir(d) if n.endswith(".json")})
    raise ValueError(f"unknown open_clip model {model_name!r} (known include: {', '.join(known[:12])}, ...)")


def image_size(model_name: str) -> int:
    size = model_info(model_name)["vision_cfg"].get("image_size", 224)
    return int(max(size) if isinstance(size, (list, tuple)) else size)


def embed_dim(model_name: str) -> int:
    return int(model_info(model_name)["embed_dim"])


def has_patch_tokens(model_name: str) -> bool:
    """Whether the architecture's vision tower is a ViT (patch tokens), judged from its config."""
    vision = model_info(model_name)["vision_cfg"]
    return "patch_size" in vision and not vision.get("timm_model_name")


def _cached_tag_file(model_name: str, tag: str) -> str | None:
    """The local file holding a pretrained tag's weights, if it was downloaded before."""
    cfg = _open_clip().get_pretrained_cfg(model_name, tag)
    if not cfg:
        return None
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        # open_clip writes "org/repo/" or "org/repo/filename".
        parts = hub.strip("/").split("/")
        repo_id = "/".join(parts[:2])
        names = ["/".join(parts[2:])] if len(parts) > 2 else list(_HF_FILENAMES)
        for name in names:
            found = try_to_load_from_cache(repo_id, name)
            if isinstance(found, str) and os.path.exists(found):
                return found
        return None
    url = cfg.get("url", "")
    if url:
        cache_dir = os.path.expanduser(os.environ.get("OPEN_CLIP_CACHE", "~/.cache/clip"))
        candidate = os.path.join(cache_dir, os.path.basename(urllib.parse.urlparse(url).path))
        return candidate if os.path.exists(candidate) else None
    return None


def weights_id(config: ClipConfig) -> str:
    """What goes into `vmm.clip_weights`: the tag, `none`, or a checkpoint's file name and hash."""
    if config.is_random:
        return NO_WEIGHTS
    if config.is_file:
        digest = file_sha256(config.pretrained)[:16]
        return f"file:{os.path.basename(config.pretrained)}:sha256:{digest}"
    return config.pretrained


def check_weights(config: ClipConfig) -> str:
    """Fails fast (WeightsUnavailable) when the weights cannot be had; returns the weights id.

    Run at pipeline construction so a bad flag never reaches the workers. For a pretrained tag it
    checks the local cache, then whether the hub answers within seconds (a blocked network would
    otherwise spend about a minute in download retries before failing).
    """
    model_info(config.model_name)
    how = (
        "Pass --clip-pretrained /path/to/checkpoint.pt (an open_clip state dict for "
        f"{config.model_name}), or --clip-pretrained none for random weights (testing only)."
    )
    if config.is_random:
        logger.warning(
            "CLIP %s runs with RANDOM weights (--clip-pretrained none): embeddings carry no meaning; "
            "outputs are marked vmm.clip_weights=none",
            config.model_name,
        )
        return NO_WEIGHTS
    if config.is_file:
        if not os.path.isfile(config.pretrained):
            raise WeightsUnavailable(f"CLIP checkpoint {config.pretrained!r} is not a readable file. {how}")
        return weights_id(config)
    tags = _open_clip().list_pretrained_tags_by_model(config.model_name)
    if config.pretrained not in tags:
        raise WeightsUnavailable(
            f"{config.pretrained!r} is neither a file nor an open_clip pretrained tag of "
            f"{config.model_name} (tags: {', '.join(tags) or 'none'}). {how}"
        )
    if _cached_tag_file(config.model_name, config.pretrained) is None and not hub_reachable():
        raise WeightsUnavailable(
            f"CLIP weights {config.model_name}/{config.pretrained} are not in the local cache and the "
            f"model hub cannot be reached from here. {how}"
        )
    return config.pretrained


_INIT_LOCK = threading.Lock()  # held while a model is built, with or without initialisation


@contextlib.contextmanager
def _initialisation_skipped():
    """Inside the block, torch.nn.init's in-place initialisers (which nn.Linear, nn.LayerNorm,
    attention and open_clip's own `init_parameters` call) leave tensors as allocated. For a model
    that a strict checkpoint load fills right after: ViT-B-32 took 2.9 s to build and load, of
    which 2.3 s drew random numbers the checkpoint then overwrote; 0.8 s without. Buffers that no
    checkpoint holds (the text tower's causal mask) are computed as usual. Models are built one at a
    time (`_INIT_LOCK`), so a random initialisation never runs while the initialisers are off."""
    import torch.nn.init as init

    names = [n for n in dir(init) if n.endswith("_") and not n.startswith("_") and callable(getattr(init, n))]
    with _INIT_LOCK:
        saved = {n: getattr(init, n) for n in names}
        try:
            for n in names:
                setattr(init, n, _leave_as_is)
            yield
        finally:
            for n, f in saved.items():
                setattr(init, n, f)


def _leave_as_is(tensor, *args, **kwargs):
    return tensor


def random_model(model_name: str):
    """The model `--clip-pretrained none` stands for: open_clip's random initialisation, seeded so
    every worker process (and the query tower) builds the same one."""
    import torch

    open_clip = _open_clip()
    with _INIT_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(_RANDOM_INIT_SEED)
        return open_clip.create_model(model_name, pretrained=None)


def checkpoint_file(config: ClipConfig) -> tuple[str, dict]:
    """(the local file holding `config`'s weights, open_clip's pretrained config of the tag or {}).
    A tag not in the cache is downloaded by open_clip (check_weights saw the hub answer)."""
    if config.is_random:
        raise ValueError("random weights (none) have no checkpoint file")
    if config.is_file:
        return config.pretrained, {}
    open_clip = _open_clip()
    pre_cfg = open_clip.get_pretrained_cfg(config.model_name, config.pretrained) or {}
    path = _cached_tag_file(config.model_name, config.pretrained)
    if path is None:
        path = open_clip.download_pretrained(pre_cfg)
        if not path:
            raise WeightsUnavailable(f"could not download {config.model_name}/{config.pretrained}")
    return path, pre_cfg


class ClipEncoder:
    """open_clip model + its own eval preprocessing. Cheap constructor; `load()` reads weights."""

    def __init__(self, config: ClipConfig):
        self.config = config
        self.model = None
        self.preprocess = None
        self.tokenizer = None
        self._tower_with_tokens = None
        self.causal_text = False
        self.device = "cpu"
        self.weights_id = weights_id(config) if not config.is_file else None

    def load(self) -> "ClipEncoder":
        import torch

        open_clip = _open_clip()
        cfg = self.config
        started = time.perf_counter()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = resolve_device(cfg.device)
        pre_cfg = {}
        if cfg.is_random:
            model = random_model(cfg.model_name)
            source = "random init (seed %d)" % _RANDOM_INIT_SEED
        else:
            path, pre_cfg = checkpoint_file(cfg)
            from open_clip.factory import load_checkpoint

            with _initialisation_skipped():  # every parameter comes from the checkpoint (strict load)
                model = open_clip.create_model(cfg.model_name, pretrained=None)
            load_checkpoint(model, path, weights_only=True, strict=True)
            source = path
            if cfg.is_file:
                self.weights_id = f"file:{os.path.basename(path)}:sha256:{file_sha256(path)[:16]}"
            else:
                self.weights_id = cfg.pretrained
        model.eval().to(self.device)
        visual_pre = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
        self.preprocess = open_clip.image_transform(
            model.visual.image_size,
            is_train=False,
            mean=pre_cfg.get("mean", visual_pre.get("mean")),
            std=pre_cfg.get("std", visual_pre.get("std")),
            interpolation=pre_cfg.get("interpolation", visual_pre.get("interpolation")),
            resize_mode=pre_cfg.get("resize_mode", visual_pre.get("resize_mode")),
        )
        self.tokenizer = open_clip.get_tokenizer(cfg.model_name)
        visual = model.visual
        if hasattr(visual, "output_tokens") and getattr(visual, "proj", None) is not None:
            # A second view of the vision tower that also returns its patch tokens: a shallow copy
            # shares every parameter and submodule but owns its `output_tokens` attribute. It is
            # made here, before any thread sees the encoder, and never changed afterwards, so no
            # call mutates state that a concurrent call reads (see docs/DESIGN.md, "Threads").
            tower = copy.copy(visual)
            tower.output_tokens = True
            self._tower_with_tokens = tower
        self.model = model
        self.causal_text = self._text_is_causal()  # set before any thread sees the encoder
        logger.info(
            "loaded CLIP %s from %s on %s in %.1fs (torch %s, %d threads)",
            cfg.model_name, source, self.device, time.perf_counter() - started,
            torch.__version__, torch.get_num_threads(),
        )
        return self

    @property
    def dim(self) -> int:
        return embed_dim(self.config.model_name)

    def _require_loaded(self):
        if self.model is None:
            raise RuntimeError("ClipEncoder.load() must be called before encoding")

    def preprocess_images(self, images: list[np.ndarray]):
        """open_clip's eval transform of each frame, stacked: float32 tensor [N, 3, S, S]."""
        import torch
        from PIL import Image

        self._require_loaded()
        return torch.stack([self.preprocess(Image.fromarray(img)) for img in images])

    def encode_images(self, images: list[np.ndarray]) -> np.ndarray:
        """L2-normalised image embeddings, float32 [N, D]."""
        import torch

        self._require_loaded()
        if not images:
            return np.zeros((0, self.dim), np.float32)
        batch = self.preprocess_images(images).to(self.device)
        with torch.no_grad():
            out = self.model.encode_image(batch, normalize=True)
        return out.float().cpu().numpy()

    def patch_grid(self) -> tuple[int, int] | None:
        """(H, W) of the vision tower's patch tokens, or None when the tower has none (CNNs)."""
        self._require_loaded()
        if self._tower_with_tokens is None:
            return None
        grid = getattr(self._tower_with_tokens, "grid_size", None)
        return (int(grid[0]), int(grid[1])) if grid is not None else None

    def encode_images_and_patches(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Frame embeddings [N, D] and patch embeddings [N, H*W, D], both L2-normalised float32.

        Patch tokens are the vision transformer's output tokens after its final LayerNorm, projected
        into the joint space with the same projection as the pooled token, so a patch and a frame
        live in one D-dimensional space (row-major over the H x W grid). One forward pass gives both.
        """
        import torch

        grid = self.patch_grid()
        if grid is None:
            raise ValueError(f"{self.config.model_name} has no patch tokens (not a vision transformer)")
        tower = self._tower_with_tokens
        batch = self.preprocess_images(images).to(self.device)
        with torch.no_grad():
            pooled, tokens = tower(batch)
            patches = tokens @ tower.proj
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
        patches = torch.nn.functional.normalize(patches, dim=-1)
        return pooled.float().cpu().numpy(), patches.float().cpu().numpy()

    def has_text_tokens(self) -> bool:
        """Whether `encode_texts_and_tokens` works: a text transformer whose every position can
        be projected (open_clip's CLIP class; not the HF-text CustomTextCLIP)."""
        self._require_loaded()
        return all(hasattr(self.model, a) for a in ("token_embedding", "transformer", "ln_final", "text_projection"))

    def encode_texts_and_tokens(self, texts: list[str]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Text embeddings [N, D] and, per text, its word tokens in the joint space [T_i, D], both
        L2-normalised float32. The word tokens are the transformer's outputs between the start and
        end markers after the final LayerNorm, projected like the pooled (end-marker) output, so
        they live in the space of the patch tokens (FILIP-style late interaction). One forward pass.
        """
        import torch

        if not self.has_text_tokens():
            raise ValueError(f"{self.config.model_name}'s text tower has no per-token projection")
        if not texts:
            return np.zeros((0, self.dim), np.float32), []
        model = self.model
        tokens = self.tokenizer(texts).to(self.device)
        with torch.no_grad():
            cast = model.transformer.get_cast_dtype()
            x = model.token_embedding(tokens).to(cast) + model.positional_embedding.to(cast)
            x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask))
            proj = model.text_projection
            x = proj(x) if isinstance(proj, torch.nn.Module) else x @ proj
            x = torch.nn.functional.normalize(x, dim=-1).float().cpu().numpy()
        eot = tokens.argmax(dim=-1).cpu().numpy()  # the end marker has the highest id (as encode_text)
        pooled = x[np.arange(len(texts)), eot]
        return pooled, [x[i, 1:max(2, int(eot[i]))] for i in range(len(texts))]

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """L2-normalised text embeddings, float32 [N, D]."""
        import torch

        self._require_loaded()
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        tokens = self.tokenizer(texts).to(self.device)
        with torch.no_grad():
            if self.causal_text:
                out = self._encode_text_to_end(tokens)
            else:
                out = self.model.encode_text(tokens, normalize=True)
        return out.float().cpu().numpy()

    def _text_is_causal(self) -> bool:
        """True when the text tower is open_clip's CLIP text transformer with a causal mask, learned
        absolute positions and the end-of-text token pooled: then a token only sees the tokens
        before it, so the pooled vector does not depend on the padding after the end token, and
        `_encode_text_to_end` may stop the sequence there (exact; tested against encode_text)."""
        import torch
        from open_clip.model import CLIP

        m = self.model
        if type(m) is not CLIP or getattr(m, "text_pool_type", None) not in ("argmax", "eos"):
            return False
        mask = getattr(m, "attn_mask", None)
        if mask is None or mask.dim() != 2:
            return False
        causal = torch.full(mask.shape, float("-inf")).triu_(1)
        return bool(torch.equal(mask.float().cpu(), causal))

    def _encode_text_to_end(self, tokens, blocks=None):
        """`model.encode_text(tokens, normalize=True)` over the tokens up to the last end-of-text
        token of the batch: a short query costs its own length, not the 77-token context.
        `blocks(x, mask)` runs the transformer blocks instead of the model's own (PackedTextTower)."""
        import torch
        from open_clip.transformer import text_global_pool

        m = self.model
        if m.text_pool_type == "argmax":
            ends = tokens.argmax(dim=-1)
        else:
            ends = (tokens == m.text_eos_id).int().argmax(dim=-1)
        n = int(ends.max()) + 1
        tokens = tokens[:, :n]
        cast = m.transformer.get_cast_dtype()
        x = m.token_embedding(tokens).to(cast) + m.positional_embedding[:n].to(cast)
        if blocks is None:
            x = m.transformer(x, attn_mask=m.attn_mask[:n, :n])
        else:
            x = blocks(x, m.attn_mask[:n, :n].to(cast))
        x = m.ln_final(x)
        x = text_global_pool(x, tokens, m.text_pool_type, eos_token_id=getattr(m, "text_eos_id", None))
        x = m.text_projection(x) if isinstance(m.text_projection, torch.nn.Linear) else x @ m.text_projection
        return torch.nn.functional.normalize(x, dim=-1)


def export_checkpoint(model_name: str, source: str, output: str) -> str:
    """Write the plain state dict that `--clip-pretrained PATH` loads; return its weights id.

    `source` is an open_clip pretrained tag of `model_name` (downloaded through open_clip, so run
    this where the model hub or its cache is reachable) or a checkpoint file as open_clip's
    training, the hub or a user saves it: a state dict (`.pt`, `.bin`), a training checkpoint
    (`{"state_dict": ...}`, `module.` prefixes from DataParallel) or `.safetensors`. The model is
    built and loaded strictly, so a file of another architecture is refused rather than written.
    The result loads with `torch.load(weights_only=True)`: no pickled code, as on vmm's workers.
    """
    import torch

    open_clip = _open_clip()
    model_info(model_name)
    if os.path.isfile(source):
        from open_clip.factory import load_checkpoint

        with _initialisation_skipped():
            model = open_clip.create_model(model_name, pretrained=None)
        try:
            load_checkpoint(model, source, weights_only=True, strict=True)
        except (RuntimeError, KeyError, ValueError, AssertionError) as e:  # open_clip asserts on shapes
            raise WeightsUnavailable(f"{source!r} is not a {model_name} checkpoint open_clip can load: "
                                     f"{str(e).splitlines()[0]}") from e
    elif source in open_clip.list_pretrained_tags_by_model(model_name):
        model = open_clip.create_model(model_name, pretrained=source)
    else:
        raise WeightsUnavailable(f"{source!r} is neither a file nor an open_clip pretrained tag of {model_name}")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{output}.tmp-{os.getpid()}"
    try:
        torch.save(state, tmp)
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return weights_id(ClipConfig(model_name, output))


TEXT_PRECISIONS = ("fp32", "bf16")


class PackedTextTower:
    """A CLIP text tower for one short text at a time, its matrix products on weights packed once
    for oneDNN: the query encoder's text path (`vmm search`, `vmm score`).

    Consumes a loaded ClipEncoder whose text tower is open_clip's causal CLIP transformer with
    standard residual blocks (`unsupported` says why not otherwise) and a precision of
    `TEXT_PRECISIONS`. Produces what `ClipEncoder.encode_texts` does, L2-normalised float32 [N, D]:
      * "fp32": the same float32 arithmetic in another summation order (oneDNN's kernels instead
        of MKL's): cosine to `encode_texts` >= 0.999999;
      * "bf16": the weights of the attention and MLP products are bfloat16 copies and the products
        take their inputs in bfloat16, while the residual stream, the LayerNorms, the attention's
        softmax, the final projection and the pooling stay float32 (bfloat16 throughout drifted
        to cosine 0.997 on ViT-B-32; this keeps >= 0.9999).

    Why: a query is a few tokens, so each product is a thin [n, 512] x [512, 2048] that reads its
    whole weight matrix for a few rows of work, and the text tower reads 151 MB of float32 weights
    a query. `F.linear` packs each weight matrix anew on every call: ViT-B-32's 48 products at 8
    tokens took 19.5 ms on 2 cores (7.7 GB/s of weights), and 6.7 ms on weights packed once
    (22.5 GB/s, the memory's speed: bench/README.md, "Search").

    `kernel` is "onednn" when the packed products run here, or "torch" (`F.linear` on the copies)
    where oneDNN is missing, the device is not the CPU, or a packed product does not match
    `F.linear` on a probe at construction; QueryEncoder then encodes fp32 with `encode_texts`.

    Memory: the packed copies sit beside the model's own weights (the image tower and
    `encode_texts_and_tokens` use those): 151 MB more for ViT-B-32 in fp32, 76 MB in bf16.

    Thread safety: the packed copies are made once, here; encoding only reads them.
    """

    def __init__(self, encoder: ClipEncoder, precision: str = "fp32"):
        import torch

        if precision not in TEXT_PRECISIONS:
            raise ValueError(f"text precision must be one of {', '.join(TEXT_PRECISIONS)}, got {precision!r}")
        why = self.unsupported(encoder)
        if why:
            raise ValueError(f"{precision} text tower: {why}")
        self.encoder = encoder
        self.precision = precision
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.kernel = "onednn" if encoder.device == "cpu" and _onednn_linear_works(self.dtype) else "torch"
        m = encoder.model

        def weights(w, b):
            w = w.detach().to(self.dtype).contiguous()
            b = None if b is None else b.detach().to(self.dtype).contiguous()
            if self.kernel == "onednn":
                w = torch.ops.mkldnn._reorder_linear_weight(w, _PACK_ROWS)
            return w, b

        self.blocks = []
        for blk in m.transformer.resblocks:
            attn = blk.attn
            self.blocks.append({
                "ln_1": blk.ln_1, "ls_1": blk.ls_1, "ln_2": blk.ln_2, "ls_2": blk.ls_2, "act": blk.mlp.gelu,
                "heads": attn.num_heads,
                "qkv": weights(attn.in_proj_weight, attn.in_proj_bias),
                "out": weights(attn.out_proj.weight, attn.out_proj.bias),
                "fc": weights(blk.mlp.c_fc.weight, blk.mlp.c_fc.bias),
                "proj": weights(blk.mlp.c_proj.weight, blk.mlp.c_proj.bias),
            })

    @staticmethod
    def unsupported(encoder: ClipEncoder) -> str | None:
        """Why this encoder's text tower cannot run here, or None."""
        import torch
        from open_clip.transformer import ResidualAttentionBlock

        if encoder.model is None:
            return "the model is not loaded"
        if not encoder.causal_text:
            return (f"{encoder.config.model_name}'s text tower is not open_clip's causal CLIP transformer "
                    f"(only that one has a packed path)")
        for blk in encoder.model.transformer.resblocks:
            attn = getattr(blk, "attn", None)
            if (type(blk) is not ResidualAttentionBlock or not isinstance(attn, torch.nn.MultiheadAttention)
                    or not attn.batch_first or not attn._qkv_same_embed_dim or attn.bias_k is not None or attn.add_zero_attn
                    or hasattr(blk, "ln_1_kv") or not all(hasattr(blk.mlp, n) for n in ("c_fc", "gelu", "c_proj"))):
                return f"{encoder.config.model_name}'s text blocks are not standard residual attention blocks"
        return None

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """L2-normalised text embeddings, float32 [N, D], to the end token as `encode_texts`."""
        import torch

        enc = self.encoder
        if not texts:
            return np.zeros((0, enc.dim), np.float32)
        tokens = enc.tokenizer(texts).to(enc.device)
        with torch.no_grad():
            return enc._encode_text_to_end(tokens, blocks=self._blocks).float().cpu().numpy()

    def _linear(self, x, wb):
        """x [..., d_in] float32 through one product: x @ w.T + b, in the tower's precision."""
        import torch
        import torch.nn.functional as F

        x = x.to(self.dtype)
        if self.kernel == "onednn":
            y = torch.ops.mkldnn._linear_pointwise(x.contiguous(), wb[0], wb[1], "none", [], "")
        else:
            y = F.linear(x, *wb)
        return y.float()

    def _blocks(self, x, mask):
        """The residual blocks over x [B, n, d] (float32)."""
        import torch.nn.functional as F

        b, n, d = x.shape
        for blk in self.blocks:
            qkv = self._linear(blk["ln_1"](x), blk["qkv"])
            heads = blk["heads"]
            q, k, v = (t.reshape(b, n, heads, d // heads).transpose(1, 2) for t in qkv.split(d, dim=-1))
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(b, n, d)
            x = x + blk["ls_1"](self._linear(a, blk["out"]))
            h = blk["act"](self._linear(blk["ln_2"](x), blk["fc"]))
            x = x + blk["ls_2"](self._linear(h, blk["proj"]))
        return x


_PACK_ROWS = 16  # the rows oneDNN packs a weight for; any count runs. A generated 3-word query is a median
# 15 tokens: packed for 16, ViT-B-32's fp32 tower took 13.1 ms p50 over 150 of them (for 8: 13.7, p99 24 vs 17)


def _onednn_linear_works(dtype) -> bool:
    """Whether oneDNN's packed linear runs here in `dtype` and matches `F.linear` on a probe (it is
    torch's internal op, the one torch.compile's CPU backend uses for frozen weights)."""
    import torch
    import torch.nn.functional as F

    try:
        if not torch.backends.mkldnn.is_available():
            return False
        gen = torch.Generator().manual_seed(0)
        w = torch.randn(48, 64, generator=gen).to(dtype)
        b = torch.randn(48, generator=gen).to(dtype)
        x = torch.randn(2, 5, 64, generator=gen).to(dtype)
        with torch.no_grad():
            got = torch.ops.mkldnn._linear_pointwise(x, torch.ops.mkldnn._reorder_linear_weight(w, _PACK_ROWS), b,
                                                     "none", [], "").float()
            want = F.linear(x.float(), w.float(), b.float())
    except (AttributeError, RuntimeError, NotImplementedError) as e:
        logger.info("oneDNN packed linear unavailable in %s: %s", dtype, e)
        return False
    tol = 0.05 if dtype == torch.bfloat16 else 1e-4
    if got.shape != want.shape or not bool(torch.allclose(got, want, rtol=tol, atol=tol)):
        logger.warning("oneDNN packed linear disagrees with F.linear in %s: not used", dtype)
        return False
    return True


def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX); elsewhere torch emulates it
    and the bf16 text tower is slower than float32."""
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return False
