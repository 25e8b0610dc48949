"""Packaged weights: located inside their package and refused when they are not the pinned file."""

from __future__ import annotations

import dataclasses

import pytest

from ipfacediff.errors import InputError
from ipfacediff.fsio import sha256_file
from ipfacediff.packaged import FACE_MESH, SELFIE_SEGMENTATION, SFACE, YUNET, locate


def test_packaged_face_models_are_the_pinned_files():
    for entry in (YUNET, SFACE, FACE_MESH, SELFIE_SEGMENTATION):
        assert sha256_file(locate(entry)) == entry.sha256


def test_wrong_hash_missing_file_and_missing_package_are_one_line_errors():
    with pytest.raises(InputError, match="does not match the pinned"):
        locate(dataclasses.replace(SFACE, sha256="0" * 64))
    with pytest.raises(InputError, match="missing from the installed package"):
        locate(dataclasses.replace(SFACE, relpath="models/nope.onnx"))
    with pytest.raises(InputError, match="package missing"):
        locate(dataclasses.replace(SFACE, package="no_such_package_here"))
