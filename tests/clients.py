"""Running real client code (../shared/clients) against segnet_caffe, changing only what is
mechanical. Every change made to someone else's file is one of the rules below."""
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import SHARED_DIR

CLIENTS = SHARED_DIR / "clients"
BVLC_TESTS = CLIENTS / "BVLC-caffe" / "python" / "caffe" / "test"
TUTORIAL = CLIENTS / "SegNet-Tutorial"
CAMVID = SHARED_DIR / "data" / "camvid"
REPO = Path(__file__).resolve().parents[1]

# The import line: `import caffe` (or `import caffe.draw`) and `from caffe[.x] import`.
IMPORT_RULES = [
    (r"^(\s*)import caffe(\.\w+)?\s*$", r"\1import segnet_caffe as caffe"),
    (r"^(\s*)from caffe(\.[\w.]+)? import", r"\1from segnet_caffe\2 import"),
]
# Python 2 to 3, for the SegNet tutorial's scripts: nothing else.
PYTHON2_RULES = [
    (r"^(\s*)print (.+?)\s*$", r"\1print(\2)"),  # the print statement
    (r"^(\s*)print\s*$", r"\1print()"),
    (r"\bxrange\(", "range("),
]
# The tutorial's absolute paths, pointed at the shared data and a scratch folder.
TUTORIAL_CAMVID = "/SegNet/CamVid"


def port(text, python2=False):
    """`text` with the import line rewritten; for Python 2 code also tabs expanded (Python 2
    puts a tab at the next multiple of 8 columns) and PYTHON2_RULES applied. Integer division:
    none of the tutorial's divisions depends on Python 2's `/` (each divides a float, or numpy
    integers that divide exactly), so no rule rewrites `/`."""
    lines = text.splitlines()
    if python2:
        lines = [line.expandtabs(8) for line in lines]
    rules = IMPORT_RULES + (PYTHON2_RULES if python2 else [])
    for pattern, replacement in rules:
        lines = [re.sub(pattern, replacement, line) for line in lines]
    return "\n".join(lines) + "\n"


def port_file(source, destination, python2=False):
    destination = Path(destination)
    destination.write_text(port(Path(source).read_text(encoding="utf-8"), python2), encoding="utf-8")
    return destination


def camvid_list(destination, split, count):
    """The tutorial's list file for `split` cut to its first `count` lines, with its
    /SegNet/CamVid paths pointed at the shared CamVid."""
    lines = (TUTORIAL / "CamVid" / f"{split}.txt").read_text().splitlines()[:count]
    Path(destination).write_text("\n".join(lines).replace(TUTORIAL_CAMVID, str(CAMVID)) + "\n")
    return Path(destination)


def tutorial_file(name, destination, replacements):
    """A tutorial Models/ or Example_Models/ file with `replacements` (old -> new) applied:
    the absolute paths and, for a quick run, a batch size."""
    text = (TUTORIAL / name).read_text()
    for old, new in replacements.items():
        if old not in text:
            raise AssertionError(f"{name} no longer contains {old!r}")
        text = text.replace(old, new)
    Path(destination).write_text(text)
    return Path(destination)


def run_client(script, args, cwd, frames=None, timeout=900):
    """Run a ported client script as `python script args...` in `cwd` through
    tests/client_runner.py, which stubs the camera (with `frames`, image paths) and windows."""
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    if frames is not None:
        env["CLIENT_CAMERA_FRAMES"] = os.pathsep.join(str(f) for f in frames)
    command = [sys.executable, str(REPO / "tests" / "client_runner.py"), str(script)]
    return subprocess.run(command + [str(a) for a in args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=timeout)
