"""Regenerate niqe_reference.json: run the reference NIQE implementations on scikit-image's images.

Not a test and not part of op4ksr: the references are run from their own release archives in a
throwaway environment, never installed into the project (pyiqa's licence is non-commercial, see
docs/QUALITY.md). How niqe_reference.json was made:

    pip download --no-deps --only-binary=:all: -d /tmp/x pyiqa==0.1.16
    pip download --no-deps --no-binary=:all: --no-build-isolation -d /tmp/x basicsr==1.4.2  # from an env with torch
    python3 -m venv /tmp/niqe-ref
    /tmp/niqe-ref/bin/pip install numpy scipy opencv-python-headless torch==2.13.0 scikit-image==0.26.0
    /tmp/niqe-ref/bin/python tests/op4ksr/quality/niqe_reference_scores.py /tmp/x/basicsr-1.4.2.tar.gz \
        /tmp/x/pyiqa-0.1.16-py3-none-any.whl > tests/op4ksr/quality/niqe_reference.json

Only the files each reference's NIQE needs are extracted, unchanged; the package __init__ files are
replaced by empty ones (the real ones import the whole toolbox) and pyiqa's download helpers by stubs
that refuse (the pristine model is passed in: basicsr's niqe_pris_params.npz, the file op4ksr ships).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

IMAGES = ("astronaut", "coffee", "chelsea", "camera", "rocket", "coins", "moon", "page", "brick", "grass",
          "gravel", "hubble_deep_field", "immunohistochemistry")
BASICSR_FILES = ("metrics/niqe.py", "metrics/metric_util.py", "metrics/niqe_pris_params.npz",
                 "utils/matlab_functions.py", "utils/color_util.py", "utils/registry.py")
PYIQA_FILES = ("archs/niqe_arch.py", "archs/func_util.py", "archs/fsim_arch.py", "utils/color_util.py",
               "utils/registry.py", "matlab_utils/")

BASICSR_RUN = """
import json, sys, numpy as np, scipy, cv2, skimage, skimage.data
from basicsr.metrics.niqe import calculate_niqe
out = []
for name in sys.argv[1:]:
    img = getattr(skimage.data, name)()
    if img.ndim == 3:  # basicsr takes BGR, HWC, in [0, 255]
        score = calculate_niqe(img[..., :3][..., ::-1], crop_border=0, input_order="HWC", convert_to="y")
    else:
        score = calculate_niqe(img, crop_border=0, input_order="HW")
    out.append({"image": name, "shape": list(img.shape), "niqe": float(score)})
print(json.dumps({"versions": {"numpy": np.__version__, "scipy": scipy.__version__, "opencv": cv2.__version__,
                               "scikit-image": skimage.__version__}, "scores": out}))
"""
PYIQA_RUN = """
import json, sys, numpy as np, torch, skimage, skimage.data
from pyiqa.archs.niqe_arch import calculate_niqe
params = np.load(sys.argv[1])
mu, cov = torch.from_numpy(params["mu_pris_param"]), torch.from_numpy(params["cov_pris_param"])
out = []
for name in sys.argv[2:]:
    a = getattr(skimage.data, name)()
    x = torch.from_numpy(a.astype(np.float64) / 255)
    x = x.permute(2, 0, 1)[None, :3] if x.dim() == 3 else x[None, None]
    s = calculate_niqe(x, crop_border=0, test_y_channel=True, color_space="ycbcr", mu_pris_param=mu, cov_pris_param=cov)
    out.append({"image": name, "shape": list(a.shape), "niqe": float(s)})
print(json.dumps({"versions": {"torch": torch.__version__, "scikit-image": skimage.__version__}, "scores": out}))
"""


def _extract_basicsr(sdist: Path, root: Path) -> None:
    with tarfile.open(sdist) as tar:
        prefix = tar.getnames()[0].split("/")[0] + "/basicsr/"
        for name in BASICSR_FILES:
            (root / "basicsr" / name).parent.mkdir(parents=True, exist_ok=True)
            (root / "basicsr" / name).write_bytes(tar.extractfile(prefix + name).read())
    for package in ("", "metrics/"):
        (root / "basicsr" / package / "__init__.py").write_text("")
    (root / "basicsr/utils/__init__.py").write_text("from .color_util import bgr2ycbcr\n")


def _extract_pyiqa(wheel: Path, root: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        for name in whl.namelist():
            inner = name.removeprefix("pyiqa/")
            if name.startswith("pyiqa/") and any(inner == f or (f.endswith("/") and inner.startswith(f))
                                                 for f in PYIQA_FILES):
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                (root / name).write_bytes(whl.read(name))
    for package in ("", "archs/", "utils/"):
        (root / "pyiqa" / package / "__init__.py").write_text("")
    (root / "pyiqa/archs/arch_util.py").write_text("def get_url_from_name(name, *a, **k):\n    return name\n")
    (root / "pyiqa/utils/download_util.py").write_text(
        "def load_file_from_url(*a, **k):\n    raise RuntimeError('no downloads in a reference run')\n")


def main(basicsr_sdist: str, pyiqa_wheel: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        b, p = Path(tmp, "basicsr"), Path(tmp, "pyiqa")
        _extract_basicsr(Path(basicsr_sdist), b)
        _extract_pyiqa(Path(pyiqa_wheel), p)
        npz = b / "basicsr/metrics/niqe_pris_params.npz"
        run_b = json.loads(subprocess.run([sys.executable, "-c", BASICSR_RUN, *IMAGES], cwd=b, check=True,
                                          capture_output=True, text=True).stdout)
        run_p = json.loads(subprocess.run([sys.executable, "-c", PYIQA_RUN, str(npz), *IMAGES], cwd=p, check=True,
                                          capture_output=True, text=True).stdout)
    print(json.dumps({
        "how": "tests/op4ksr/quality/niqe_reference_scores.py (its docstring has the commands)",
        "basicsr": {"package": "basicsr 1.4.2 (sdist)",
                    "call": "basicsr.metrics.niqe.calculate_niqe(img_bgr_uint8, crop_border=0, input_order='HWC', "
                            "convert_to='y'); gray images: input_order='HW'", **run_b},
        "pyiqa": {"package": "pyiqa 0.1.16 (wheel)",
                  "call": "pyiqa.archs.niqe_arch.calculate_niqe(x_rgb_float64_0_1, crop_border=0, test_y_channel=True, "
                          "color_space='ycbcr', mu_pris_param, cov_pris_param from basicsr's niqe_pris_params.npz)",
                  **run_p},
    }, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:3])
