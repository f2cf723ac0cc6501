"""The pretrained models Magenta publishes, where they live, and the origin they come from.

Sources of these facts (read, not copied):

- Timbre-transfer checkpoints: magenta/ddsp ``ddsp/colab/demos/timbre_transfer.ipynb`` loads
  ``gs://ddsp/models/timbre_transfer_colab/2021-07-08/solo_%s_ckpt`` for its models 'Violin',
  'Flute', 'Flute2', 'Trumpet', 'Tenor_Saxophone' (that path came with ddsp 1.6.1, commit
  87fff9a of 2021-07-08, so these are ddsp 1.x-era checkpoints). The notebook copies every
  object of the folder and uses the one ``ckpt-N`` in it; N is not fixed here but read from
  Cloud Storage's public JSON listing (``/storage/v1/b/ddsp/o?prefix=...``).
- DDSP-VST models: magenta/ddsp-vst ``scripts/download-models.sh`` fetches
  ``https://storage.googleapis.com/ddsp-vst/releases/DDSP-VST-Models.zip`` and unpacks its
  ``DDSP-VST-Models/`` folder; ``cmake/FileList.cmake`` and ``src/audio/tflite/ModelLibrary.cpp``
  name its 11 instruments (Bassoon ... Vowels).
- Licences: the ddsp repository and its notebook are Apache-2.0; no separate licence is stated
  for the timbre-transfer weights. The DDSP-VST models are Apache-2.0 as their maintainers
  stated in magenta/ddsp-vst issue #32 (2022-11-02), which also added a LICENSE to the zip.
- Training data, as the DDSP authors described it: violin and flute from MusOpen recordings
  (magenta/ddsp issue #34; the Tone Transfer page's credits quoted in issue #392), trumpet
  from the University of Rochester's URMP, saxophone recordings by Kevin Malta.

The origin, ``https://storage.googleapis.com`` by default, can be replaced (``--source URL`` or
``$DDSP_PD_MODEL_SOURCE``); every path below it stays the same, so a mirror is a copy of the
tree (plus, for the listing, a JSON file or a server that answers it).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from ddsp_pd.errors import CheckpointError

__all__ = [
    "DEFAULT_ORIGIN",
    "GROUPS",
    "KIND_DDSP",
    "KIND_VST",
    "PUBLISHED",
    "SOURCE_ENV",
    "PublishedModel",
    "RemoteFile",
    "expand_names",
    "listing_url",
    "object_url",
    "parse_listing",
    "resolve_origin",
]

DEFAULT_ORIGIN = "https://storage.googleapis.com"
SOURCE_ENV = "DDSP_PD_MODEL_SOURCE"
#: Kinds of model, as the manifest and ``models list`` name them.
KIND_DDSP = "ddsp"
KIND_VST = "ddsp-vst"
KIND_TITLES = {KIND_DDSP: "ddsp checkpoint", KIND_VST: "DDSP-VST .tflite"}

_TT_BUCKET = "ddsp"
_TT_FOLDER = "models/timbre_transfer_colab/2021-07-08"
_TT_LICENCE = (
    "Apache-2.0 as the ddsp repository and the timbre_transfer notebook that publishes it; "
    "no separate licence is stated for the weights"
)
_VST_BUCKET = "ddsp-vst"
_VST_ZIP = "releases/DDSP-VST-Models.zip"
_VST_LICENCE = "Apache-2.0 (magenta/ddsp-vst issue #32; LICENSE in the zip)"
#: Listing pages followed at most (GCS returns up to 1000 objects a page; a model folder
#: holds a handful).
MAX_LISTING_PAGES = 10
_MAX_OBJECT_BYTES = 4 << 30


@dataclass(frozen=True)
class PublishedModel:
    """One model that can be downloaded.

    ``path`` is an object name in ``bucket``: a folder prefix (ending in ``/``) for a ddsp
    checkpoint, the release zip for a DDSP-VST model, whose ``member`` is the instrument's
    ``.tflite`` in it.
    """

    name: str
    kind: str
    description: str
    licence: str
    bucket: str
    path: str
    member: str | None = None

    @property
    def is_folder(self) -> bool:
        """True for a checkpoint folder (listed, then fetched file by file)."""
        return self.path.endswith("/")

    def url(self, origin: str) -> str:
        """Where the folder or the zip is below ``origin``."""
        return object_url(origin, self.bucket, self.path)


def _timbre_transfer(name: str, description: str) -> PublishedModel:
    return PublishedModel(
        name=name,
        kind=KIND_DDSP,
        description=description,
        licence=_TT_LICENCE,
        bucket=_TT_BUCKET,
        path=f"{_TT_FOLDER}/solo_{name}_ckpt/",
    )


def _vst(instrument: str) -> PublishedModel:
    # Named vst_<instrument>: violin, flute and trumpet are also timbre-transfer names.
    return PublishedModel(
        name=f"vst_{instrument.lower()}",
        kind=KIND_VST,
        description=f"DDSP-VST plugin's {instrument} (Magenta, 2022; in DDSP-VST-Models.zip)",
        licence=_VST_LICENCE,
        bucket=_VST_BUCKET,
        path=_VST_ZIP,
        member=f"{instrument}.tflite",
    )


_TT_MODELS = (
    _timbre_transfer("violin", "Magenta's solo violin, timbre-transfer notebook (MusOpen data)"),
    _timbre_transfer("flute", "Magenta's solo flute, timbre-transfer notebook (MusOpen data)"),
    _timbre_transfer("flute2", "Magenta's second solo flute, timbre-transfer notebook"),
    _timbre_transfer("trumpet", "Magenta's solo trumpet, timbre-transfer notebook (URMP data)"),
    _timbre_transfer("tenor_saxophone", "Magenta's solo tenor saxophone, timbre-transfer notebook"),
)
#: The DDSP-VST plugin's instruments, as its ModelLibrary.cpp and FileList.cmake name them.
VST_INSTRUMENTS = (
    "Bassoon", "Clarinet", "Flute", "Melodica", "Saxophone", "Sitar", "Trombone", "Trumpet",
    "Tuba", "Violin", "Vowels",
)  # fmt: skip
PUBLISHED: Mapping[str, PublishedModel] = {
    m.name: m for m in (*_TT_MODELS, *(_vst(i) for i in VST_INSTRUMENTS))
}
#: Names that stand for several models on the command line.
GROUPS: Mapping[str, tuple[str, ...]] = {
    "all": tuple(PUBLISHED),
    "vst": tuple(n for n, m in PUBLISHED.items() if m.kind == KIND_VST),
}


def expand_names(names: list[str] | tuple[str, ...]) -> list[PublishedModel]:
    """The published models ``names`` stand for (groups expanded, each once, in order)."""
    out: dict[str, PublishedModel] = {}
    unknown = []
    for name in names:
        if name in GROUPS:
            out.update((n, PUBLISHED[n]) for n in GROUPS[name])
        elif name in PUBLISHED:
            out[name] = PUBLISHED[name]
        else:
            unknown.append(name)
    if unknown:
        raise CheckpointError(
            f"not a published model: {', '.join(unknown)} (see 'ddsp-pd models list'; "
            f"groups: {', '.join(GROUPS)})"
        )
    return list(out.values())


def resolve_origin(source: str | None = None) -> str:
    """The origin to fetch from: ``source``, else ``$DDSP_PD_MODEL_SOURCE``, else Google's.

    An origin is an http(s) URL, optionally with a path (a mirror's folder); no query, no
    fragment, no credentials. The trailing slash is dropped.
    """
    raw = source if source else os.environ.get(SOURCE_ENV, "").strip() or DEFAULT_ORIGIN
    parts = urllib.parse.urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CheckpointError(f"model source must be an http:// or https:// URL, not {raw!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise CheckpointError(
            f"model source must be a plain URL (no query, fragment or credentials): {raw!r}"
        )
    return raw.rstrip("/")


def object_url(origin: str, bucket: str, name: str) -> str:
    """``origin/bucket/name``, the object's public HTTPS form on Cloud Storage."""
    return f"{origin}/{bucket}/{urllib.parse.quote(name, safe='/')}"


def listing_url(origin: str, bucket: str, prefix: str, page_token: str | None = None) -> str:
    """Cloud Storage's JSON API listing of the objects of ``bucket`` under ``prefix``."""
    query = {"prefix": prefix}
    if page_token:
        query["pageToken"] = page_token
    return f"{origin}/storage/v1/b/{bucket}/o?{urllib.parse.urlencode(query)}"


@dataclass(frozen=True)
class RemoteFile:
    """One object to fetch: its file name, URL, and what the listing says of it."""

    name: str
    url: str
    size: int | None = None
    md5: bytes | None = None


def parse_listing(
    data: bytes, origin: str, bucket: str, prefix: str, folder: str | None = None
) -> tuple[list[RemoteFile], str | None]:
    """The files directly in ``folder`` (default: ``prefix``, a folder ending in ``/``) in one
    page of the listing of ``prefix``, and the next page's token.

    The page is a JSON ``storage#objects`` resource: ``items`` (absent when nothing matches)
    with ``name``, ``size`` (a decimal string) and ``md5Hash`` (base64; absent for composite
    objects). Anything else is refused as not a listing.
    """
    folder = prefix if folder is None else folder
    try:
        page = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"the listing of {prefix} is not JSON") from exc
    if not isinstance(page, dict):
        raise CheckpointError(f"the listing of {prefix} is not a JSON object")
    items = page.get("items", [])
    if not isinstance(items, list):
        raise CheckpointError(f"the listing of {prefix} has no list of items")
    files = []
    for item in items:
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or not name.startswith(prefix):
            continue
        rest = name[len(folder) :]
        # Only the folder's own files: nothing nested, no folder placeholders, no dot-files.
        if not rest or "/" in rest or "\\" in rest or rest.startswith(".") or rest == "..":
            continue
        files.append(
            RemoteFile(
                name=rest,
                url=object_url(origin, bucket, name),
                size=_size(item.get("size"), name),
                md5=_md5(item.get("md5Hash")),
            )
        )
    token = page.get("nextPageToken")
    return files, token if isinstance(token, str) and token else None


def _size(value: object, name: str) -> int | None:
    if value is None:
        return None
    try:
        size = int(str(value))
    except ValueError:
        raise CheckpointError(f"the listing gives {name} a size that is not a number") from None
    if size < 0 or size > _MAX_OBJECT_BYTES:
        raise CheckpointError(f"the listing gives {name} an impossible size ({size:,} bytes)")
    return size


def _md5(value: object) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        digest = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return digest if len(digest) == 16 else None
