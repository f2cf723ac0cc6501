"""Options that several commands share, defined once."""

from __future__ import annotations

import click

__all__ = ["PRECISION_CHOICES", "precision_option"]

#: ``ddsp_pd.inference.decoder.PRECISIONS``, spelled out so that a command's ``--help``
#: does not import numpy (tests/test_precision.py checks that the two agree).
PRECISION_CHOICES = ("exact", "fast")

precision_option = click.option(
    "--precision",
    type=click.Choice(PRECISION_CHOICES),
    default="exact",
    show_default=True,
    help="Decoder arithmetic: exact float32, or fast (the input stacks tabulated, the GRU's "
    "recurrent weights in 8 bits on CPUs with AVX-512, and in a live stream's steps the "
    "other weights in 16: within 0.3 dB of exact, see docs/performance.md).",
)
