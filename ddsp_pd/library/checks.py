"""What a file must look like before it enters the model library.

Two stages: the first bytes of each download (an HTML error or login page is refused at
once, and a ``.tflite`` or ``.zip`` must start as one), then the whole model in its staging
folder: a ddsp checkpoint must be described by :func:`ddsp_pd.checkpoint.inspect_checkpoint`
(gin, index, data sizes) and load (every model tensor's checksum, finite values); a DDSP-VST
model must pass :func:`check_tflite`.

:func:`check_tflite` is a basic check only (a TFLite flatbuffer whose appended zip holds
``metadata.json``, as ddsp_export writes and the DDSP-VST plugin reads); opening the model
against the plugin's tensor contract is :mod:`ddsp_pd.kinds.tflite`'s job.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from ddsp_pd.errors import CheckpointError, DdspPdError

__all__ = [
    "FLATBUFFER_ID",
    "METADATA_NAME",
    "TFLITE_MAX_BYTES",
    "check_checkpoint_folder",
    "check_tflite",
    "head_check",
    "looks_like_html",
    "read_zip_member",
]

#: The identifier a TFLite flatbuffer carries at bytes 4-8.
FLATBUFFER_ID = b"TFL3"
METADATA_NAME = "metadata.json"
#: The plugin's models are 7.5 MB; a file past this is not one.
TFLITE_MAX_BYTES = 256 << 20
_METADATA_MAX_BYTES = 1 << 20
_HTML_MARKS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml")
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def looks_like_html(head: bytes, content_type: str = "") -> bool:
    """Whether a body that should be a model file is a web page (or an XML error)."""
    if content_type.split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml"):
        return True
    start = head[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return start.startswith(_HTML_MARKS)


def head_check(file_name: str):
    """A check of the first bytes of the download of ``file_name`` (see ``Fetcher.download``)."""
    suffix = PurePosixPath(file_name).suffix.lower()

    def check(head: bytes, content_type: str) -> None:
        from ddsp_pd.library.download import DownloadError

        if looks_like_html(head, content_type):
            raise DownloadError(
                f"the server sent a web page (HTML) instead of {file_name}: an error or "
                "login page, not a model"
            )
        if suffix == ".tflite" and len(head) >= 8 and head[4:8] != FLATBUFFER_ID:
            raise DownloadError(f"{file_name} is not a TFLite model (no TFL3 identifier)")
        if suffix == ".zip" and len(head) >= 4 and head[:4] not in _ZIP_MAGIC:
            raise DownloadError(f"{file_name} is not a zip archive")

    return check


def check_tflite(data: bytes, where: str, *, metadata_beside: bool = False) -> None:
    """Refuse bytes that are not a DDSP-VST model: a TFLite flatbuffer (``TFL3`` at bytes
    4-8) whose appended zip holds ``metadata.json``, unless ``metadata_beside`` (a
    ``metadata.json`` found next to it). Raises :class:`CheckpointError`."""
    if len(data) > TFLITE_MAX_BYTES:
        raise CheckpointError(f"{where} is {len(data):,} bytes, over the {TFLITE_MAX_BYTES:,}")
    if looks_like_html(data[:512]):
        raise CheckpointError(f"{where} is a web page (HTML), not a TFLite model")
    if len(data) < 8 or data[4:8] != FLATBUFFER_ID:
        raise CheckpointError(f"{where} is not a TFLite model (no TFL3 identifier at byte 4)")
    if _embedded_metadata(data, where) or metadata_beside:
        return
    raise CheckpointError(
        f"{where} is a TFLite model without DDSP-VST metadata (no metadata.json packed in it "
        "or beside it): not a ddsp_export model"
    )


def _embedded_metadata(data: bytes, where: str) -> bool:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return False
    try:
        with zf:
            info = next((i for i in zf.infolist() if i.filename == METADATA_NAME), None)
            if info is None:
                return False
            if info.file_size > _METADATA_MAX_BYTES:
                raise CheckpointError(f"{where}: its packed metadata.json is too large")
            with zf.open(info) as src:
                text = src.read(_METADATA_MAX_BYTES + 1)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, RuntimeError,
            NotImplementedError) as exc:  # fmt: skip
        raise CheckpointError(f"{where}: its packed metadata.json is damaged ({exc})") from exc
    if len(text) > _METADATA_MAX_BYTES or not text.lstrip().startswith(b"{"):
        raise CheckpointError(f"{where}: its packed metadata.json is not a JSON object")
    return True


def check_checkpoint_folder(folder: Path) -> list[str]:
    """Refuse a staged folder that is not a whole, loadable ddsp checkpoint; return warnings.

    Warnings (the model installs): an era ddsp-pd cannot render, no or unusable statistics.
    """
    from ddsp_pd.checkpoint import inspect_checkpoint, load_checkpoint

    info = inspect_checkpoint(folder)
    if not info.has_data:
        raise CheckpointError(
            f"the checkpoint's weights are incomplete: {'; '.join(info.data_problems)}"
        )
    warnings = []
    if info.refusal:
        warnings.append(f"ddsp-pd cannot render it: {info.refusal}")
    else:
        try:
            # Reads every model tensor: checksums and finite values, not just sizes.
            load_checkpoint(folder).close()
        except DdspPdError as exc:
            raise CheckpointError(f"the checkpoint's weights do not load: {exc}") from exc
    if info.statistics_size is None:
        warnings.append("it has no dataset_statistics.pkl: auto-adjust is unavailable")
    elif info.statistics_problem:
        warnings.append(f"its statistics are unusable: {info.statistics_problem}")
    return warnings


def read_zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, where: str) -> bytes:
    """A zip member's bytes, at most ``limit``, counted as they stream (the zip's own sizes
    are not trusted); reading to the end checks its CRC. Raises :class:`CheckpointError`."""
    if info.file_size > limit:
        raise CheckpointError(f"{where} is {info.file_size:,} bytes, over the {limit:,} allowed")
    try:
        with zf.open(info) as src:
            data = src.read(limit + 1)
            if len(data) > limit or src.read(1):
                raise CheckpointError(f"{where} is over the {limit:,} bytes allowed")
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, RuntimeError,
            NotImplementedError) as exc:  # fmt: skip
        raise CheckpointError(f"{where} is damaged ({exc})") from exc
    return data
