"""ipfacediff: identity-preserving, text-driven facial video editing with diffusion (IP-FaceDiff)."""

__version__ = "0.1.0"
