#!/usr/bin/env bash
# Installs what building and testing attnc needs, from Debian's packages.
# Idempotent and quiet when everything is already there.
set -euo pipefail

packages=(
  cmake ninja-build python3 python3-numpy python3-dev python3-pybind11 pybind11-dev python3-pytest
  python3-torch python3-pip python3-setuptools python3-wheel python3-venv
  llvm-22-dev llvm-22-tools libmlir-22-dev mlir-22-tools clang-22 libclang-rt-22-dev libomp-22-dev
  libhalide14-0-dev
  googletest libgtest-dev
)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "setup: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
