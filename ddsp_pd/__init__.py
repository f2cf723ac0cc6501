"""ddsp-pd: DDSP timbre transfer for Pure Data, without the ddsp library."""

__version__ = "0.1.0"
