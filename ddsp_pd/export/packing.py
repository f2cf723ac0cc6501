"""Pack ``metadata.json`` into a ``.tflite`` the way the DDSP-VST plugin reads it back.

ddsp_export runs TFLite Support's ``MetadataPopulator``, which appends a zip archive to the
flatbuffer: the fixture export ends in one stored (uncompressed) member ``metadata.json``
whose local header starts right after the flatbuffer, a central directory and the end
record, with offsets counted from the start of the whole file. TFLite ignores bytes after
the flatbuffer; the plugin opens the whole file with ``juce::ZipFile`` and reads the member
by name. This writes the same layout (the populator's other addition, a TFLite metadata
table inside the flatbuffer, is not read by the plugin nor by ddsp-pd and is left out).
"""

from __future__ import annotations

import datetime
import io
import zipfile

from ddsp_pd.kinds.tflite_files import has_flatbuffer_id
from ddsp_pd.kinds.vst_metadata import METADATA_NAME

__all__ = ["pack_metadata"]


def pack_metadata(
    flatbuffer: bytes, metadata: bytes, when: datetime.datetime | None = None
) -> bytes:
    """``flatbuffer`` followed by a zip holding ``metadata`` as ``metadata.json``.

    Offsets in the zip are absolute, as in ddsp's exports, so a reader that takes the file
    for a zip finds every member. ``when`` stamps the member (default now).
    """
    if not has_flatbuffer_id(flatbuffer[:8]):
        raise ValueError("not a TFLite flatbuffer")
    stamp = (when or datetime.datetime.now()).timetuple()[:6]
    buffer = io.BytesIO()
    buffer.write(flatbuffer)
    # Writing from the end of the flatbuffer makes zipfile count offsets from byte 0.
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        info = zipfile.ZipInfo(METADATA_NAME, date_time=max(stamp, (1980, 1, 1, 0, 0, 0)))
        info.create_system = 3  # Unix, as in ddsp's files
        info.external_attr = 0o644 << 16
        archive.writestr(info, metadata)
    return buffer.getvalue()
