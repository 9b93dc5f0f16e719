"""Static package metadata: nothing is imported at build time."""
from setuptools import find_packages, setup

setup(
    name="atbsn",
    version="0.1.0",
    description="Self-supervised real-world image denoising: AT-BSN, D-BSN, C-BSN, Neighbor2Neighbor",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["atbsn", "atbsn.*"]),
    install_requires=[
        "torch>=2.1", "numpy>=1.24", "pyyaml>=6.0", "opencv-python-headless>=4.8", "scipy>=1.10",
        "scikit-image>=0.21", "h5py>=3.8", "tqdm>=4.60", "tensorboard>=2.12", "Pillow>=9.1",
    ],
    extras_require={"test": ["pytest>=7"], "vision": ["torchvision"], "heif": ["pillow-heif>=0.10"],
                    "onnx": ["onnx>=1.14", "onnxruntime>=1.16"]},
    entry_points={"console_scripts": [
        "atbsn-train=atbsn.cli:train_main",
        "atbsn-valid=atbsn.cli:valid_main",
        "atbsn-test=atbsn.cli:test_main",
    ]},
    license="MIT",
)
