"""Caffe's list files and label images, one home for the data layers, the dataset tools and the
metrics.

A list file holds one entry per line, its tokens separated by white space (DenseImageData:
`image label`; ImageData: `image integer_label`); blank lines are skipped. Paths in it are
relative to the data layer's root_folder. A label image is read as Caffe's DenseImageData reads
it: grayscale, HxW uint8.
"""
import os
from pathlib import Path

import cv2


def read_entries(path, parse, what):
    """(line number, parse(tokens)) for each non-blank line of list file `path`. `parse` raises
    ValueError saying what is wrong with a line; that becomes a ValueError naming the file and
    line, with `what` (the expected form of a line) and the line itself."""
    entries = []
    with open(path, encoding="utf-8", errors="surrogateescape") as stream:
        for number, line in enumerate(stream, start=1):
            tokens = line.split()
            if not tokens:
                continue
            try:
                entries.append((number, parse(tokens)))
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: {exc}; expected {what}, got "
                                 f"{line.strip()!r}") from None
    return entries


def parse_pair(tokens):
    """A DenseImageData line's (image, label) paths."""
    if len(tokens) != 2:
        raise ValueError(f"{len(tokens)} field{'' if len(tokens) == 1 else 's'}")
    return tuple(tokens)


def read_list_file(path):
    """The (image, label) pairs of a DenseImageData list file."""
    return [pair for _, pair in read_entries(path, parse_pair, "`image label`")]


def write_list_file(path, pairs):
    """Write a DenseImageData list file: one `image label` pair per line."""
    lines = []
    for image, label in pairs:
        if any(c.isspace() for c in f"{image}{label}"):
            raise ValueError(f'"{image}" / "{label}": Caffe list files cannot hold paths with spaces')
        lines.append(f"{image} {label}\n")
    Path(path).write_text("".join(lines))


def first_image(source, root_folder):
    """The first image path of list file `source` under `root_folder` (None when unreadable)."""
    try:
        entries = read_entries(source, lambda tokens: tokens[0], "an image path")
    except (OSError, ValueError):
        return None
    return root_folder + entries[0][1] if entries else None


def read_label(path):
    """A label image as Caffe's DenseImageData reads it: grayscale, HxW uint8."""
    label = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if label is None:
        reason = "no such file" if not os.path.isfile(path) else "OpenCV cannot decode it"
        raise ValueError(f'cannot read label image "{path}": {reason}')
    return label
