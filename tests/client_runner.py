"""Run a client script with the camera and the windows stubbed: `python client_runner.py
SCRIPT ARGS...`. cv2.VideoCapture yields the images named in $CLIENT_CAMERA_FRAMES (os.pathsep
separated) and then ends; cv2's window functions do nothing (opencv-python-headless has none);
matplotlib draws off screen (MPLBACKEND=Agg), so plt.show() returns at once."""
import os
import runpy
import sys

import cv2


class FramesCamera:
    """cv2.VideoCapture over a fixed list of image files."""

    def __init__(self, *args, **kwargs):
        paths = os.environ.get("CLIENT_CAMERA_FRAMES", "")
        self.frames = [cv2.imread(p) for p in paths.split(os.pathsep) if p]

    def isOpened(self):
        return True

    def read(self):
        if not self.frames:
            return False, None
        return True, self.frames.pop(0)

    def release(self):
        self.frames = []


def no_window(*args, **kwargs):
    return -1  # waitKey's "no key pressed"


cv2.VideoCapture = FramesCamera
for name in ("namedWindow", "imshow", "waitKey", "destroyAllWindows", "destroyWindow"):
    setattr(cv2, name, no_window)

script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
runpy.run_path(script, run_name="__main__")
