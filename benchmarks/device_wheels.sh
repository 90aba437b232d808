#!/usr/bin/env bash
# Fetch, here (with the package registries), the wheels benchmarks/device_check.sh needs on a GPU machine that has
# PyTorch but no registry: the project's dependencies that its image lacks, for CPython 3.12 on x86-64, into .whl/
# (git-ignored). Then: device run with carry [".whl"] and command `bash benchmarks/device_check.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
mkdir -p .whl
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
           --platform manylinux_2_27_x86_64 --platform manylinux1_x86_64)
# pure-Python or manylinux wheels; the image already has torch, numpy, h5py, einops, safetensors, tqdm, imageio,
# matplotlib, pyyaml
for pkg in mujoco gymnasium hydra-core omegaconf antlr4-python3-runtime cloudpickle farama-notifications glfw \
           absl-py pyopengl etils; do
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl "$pkg"
done
du -sh .whl
