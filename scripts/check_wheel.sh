#!/usr/bin/env bash
# Build the wheel and use it as a user would: a fresh venv, `pip install` of the wheel without
# extras, `vafa --help` for every command and a short `vafa demo`; then the napari extra and
# `npe2 validate napari-vafa`. Usage: scripts/check_wheel.sh [WORK_DIR] [TORCH_REQUIREMENT]
# [TORCH_INDEX] (the index pip gets torch from; default: the public one)
set -euo pipefail
WORK=${1:-build/wheel-check}
TORCH=${2:-torch==2.13.0}
TORCH_INDEX=${3:-}
PY=${PYTHON:-.venv/bin/python}
rm -rf "$WORK"
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
"$PY" -m pip wheel --no-deps --no-build-isolation -q -w "$WORK/dist" .
wheel=$(ls "$WORK"/dist/napari_vafa-*.whl)
python3 -m venv "$WORK/venv"
bin="$WORK/venv/bin"
"$bin/python" -m pip install -q --upgrade pip
# the pinned build (from TORCH_INDEX if given) first, else installing the wheel picks a torch itself
"$bin/python" -m pip install -q "$TORCH" ${TORCH_INDEX:+--index-url "$TORCH_INDEX"}
"$bin/python" -m pip install -q "$wheel"
for command in "" demo attack evaluate info train report gui slicer; do
  "$bin/vafa" $command --help >/dev/null
done
out="$WORK/demo"
(cd "$WORK" && "$bin/vafa" demo --steps 2 --quiet --out demo)
test -s "$out/metrics.json" && test -s "$out/adversarial.nii.gz"
"$bin/vafa" slicer install "$WORK/slicer-modules" >/dev/null
xml=$("$WORK/slicer-modules/VAFAAttack" --xml)
[[ "$xml" == "<?xml"* ]]
echo "wheel without extras: vafa --help, vafa demo and vafa slicer install work"
"$bin/python" -m pip install -q "$wheel[napari]"
"$bin/npe2" validate napari-vafa
echo "wheel with [napari]: npe2 validate passes"
