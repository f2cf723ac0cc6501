"""The per-user model library behind ``ddsp-pd models``.

- :mod:`ddsp_pd.library.published`: the models Magenta publishes, where they are, and the
  origin they are fetched from (``--source`` / ``$DDSP_PD_MODEL_SOURCE``).
- :mod:`ddsp_pd.library.download`: HTTP downloads with resume, retries and size checks.
- :mod:`ddsp_pd.library.checks`: what a downloaded or imported file must look like.
- :mod:`ddsp_pd.library.store`: the library folder, its manifest, atomic install and remove.
- :mod:`ddsp_pd.library.install`: a published model from the origin into the library.
- :mod:`ddsp_pd.library.importer`: a checkpoint folder, zip or ``.tflite`` into the library.

The library folder itself is :func:`ddsp_pd.catalog.library_dir`; every model in it is found
by name by :func:`ddsp_pd.catalog.resolve_checkpoint`.
"""
