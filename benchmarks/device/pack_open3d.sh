#!/usr/bin/env bash
# Pack what a lent GPU machine lacks to render the demo teacher's scenes there, into OUT_DIR:
#   open3d-cpXY-stripped.tar.xz  Open3D (CPU build) without its examples, web/notebook assets and
#                                 TensorFlow/PyTorch op libraries, plus the system libraries it links
#                                 that a bare image may lack (in open3d/_syslib), ~40 MB
#   wheels/                       pydantic and its dependencies (the device image lacks them)
# Why: the device machine reaches no package index and a call carries at most 64 MiB; the
# Open3D wheel is 105 MB. Scenes rendered there with this copy are bit-identical to this
# machine's (benchmarks/NOTES.md, "On a lent H200"). Use on the device: benchmarks/device/train_teacher.sh.
#
# usage: benchmarks/device/pack_open3d.sh OUT_DIR [PYTHON_VERSION]   (default 3.12, the device image's)
set -euo pipefail
out=${1:?usage: pack_open3d.sh OUT_DIR [PYTHON_VERSION]}
py=${2:-3.12}
tag=cp${py/./}
pip=${PIP:-pip}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "downloading open3d-cpu for Python $py" >&2
"$pip" download -q --no-deps --only-binary=:all: --python-version "$py" --platform manylinux_2_35_x86_64 \
    -d "$work/whl" "open3d-cpu==0.20.*"
python3 -m zipfile -e "$work"/whl/open3d_cpu-*.whl "$work/x"
o=$work/x/open3d

echo "stripping" >&2
rm -rf "$o/resources" "$o/examples" "$o/labextension"
find "$o" \( -name '*tf_ops*' -o -name '*torch_ops*' \) -exec rm -rf {} +
# plotly and dash are not carried: their three imports become optional
python3 - "$o/visualization/__init__.py" <<'PY'
import sys
path = sys.argv[1]
text = open(path).read()
lines = [l for l in text.splitlines() if l.startswith("from .draw_plotly import")]
if len(lines) != 3:
    sys.exit(f"{path}: expected 3 draw_plotly imports, found {len(lines)} (another Open3D version?)")
block = "\n".join(lines)
text = text.replace(block, "try:  # depthdata device copy: plotly and dash are not carried\n"
                    + "\n".join("    " + l for l in lines) + "\nexcept ImportError:\n    pass")
open(path, "w").write(text)
PY

echo "copying the system libraries Open3D links" >&2
mkdir -p "$o/_syslib"
wanted='libEGL|libGL|libGLX|libGLdispatch|libX11|libxcb|libXau|libXdmcp|libbsd|libmd|libudev|libusb-1.0|libidn2|libunistring'
ldd "$o"/libOpen3D.so.* | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | while read -r name path; do
    if [[ $name =~ ^($wanted)\.so ]]; then cp -L "$path" "$o/_syslib/$name"; fi
done

tarball="$out/open3d-$tag-stripped.tar.xz"
echo "compressing to $tarball" >&2
tar -C "$work/x" -cf - open3d | xz -9 -T2 > "$tarball"
"$pip" download -q --only-binary=:all: --python-version "$py" --platform manylinux_2_17_x86_64 \
    -d "$out/wheels" pydantic
du -sh "$tarball" "$out/wheels" >&2
