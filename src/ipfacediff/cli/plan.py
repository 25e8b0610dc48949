"""`ipfacediff plan`: see ipfacediff.plan."""

from ..plan import register, run  # noqa: F401
