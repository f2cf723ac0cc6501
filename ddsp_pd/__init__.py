"""ddsp-pd: DDSP timbre transfer for Pure Data, without the ddsp library."""

import os as _os

# A long decode shares its rows and its GRU between two threads of its own
# (ddsp_pd/inference/decoder.py). OpenBLAS's own threads would only compete with them:
# after each product they spin for a while, and a spinning BLAS thread halves the speed of
# the GRU that follows. One BLAS thread per caller, then, unless the user chose otherwise
# (this takes effect only where numpy is first imported after ddsp_pd; the decoder also
# limits BLAS while it runs).
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
