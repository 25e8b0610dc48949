"""The editing methods now live in ipfacediff.registry (METHODS, with labels and table order); the
edit stage in ipfacediff.editing. This module keeps the old import path working."""

from ..registry import METHODS, Method, get_method

__all__ = ["METHODS", "Method", "get_method"]
