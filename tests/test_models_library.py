"""``ddsp-pd models``: the library, downloads from a local stand-in for Cloud Storage, import,
remove, and models used by name everywhere.

The origin is tests/model_server.py on 127.0.0.1 (``DDSP_PD_MODEL_SOURCE``), the library a
temporary folder (``DDSP_PD_MODELS_DIR``): nothing reaches beyond this machine or touches
the real home. The published "violin" is the shipped default checkpoint; the DDSP-VST zip
holds small files that pass the basic .tflite check.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from ddsp_pd import catalog
from ddsp_pd.cli import main
from ddsp_pd.library import download
from ddsp_pd.library.published import GROUPS, PUBLISHED, VST_INSTRUMENTS
from tests.conftest import VST_REFERENCE, needs_fixtures
from tests.model_server import Fault, ModelServer, serving

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "checkpoints" / "default"
TT = "ddsp/models/timbre_transfer_colab/2021-07-08"
VIOLIN = f"{TT}/solo_violin_ckpt"
VST_ZIP = "ddsp-vst/releases/DDSP-VST-Models.zip"
CKPT_FILES = (
    "operative_config-0.gin",
    "dataset_statistics.pkl",
    "ckpt-1600.index",
    "ckpt-1600.data-00000-of-00001",
)
DATA = f"{VIOLIN}/ckpt-1600.data-00000-of-00001"


def fake_tflite(name: str) -> bytes:
    """Bytes that pass the basic check: TFL3 at bytes 4-8 and an appended zip with
    metadata.json (what ddsp_export writes), nothing a real interpreter would run."""
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as zf:
        # A fixed entry date: writestr(name) stamps the current time, and two calls that
        # straddle a two-second boundary would give different bytes.
        entry = zipfile.ZipInfo("metadata.json", date_time=(2021, 1, 1, 0, 0, 0))
        zf.writestr(entry, json.dumps({"export_time": name, "num_harmonics": 60}))
    return b"\x1c\x00\x00\x00TFL3" + name.encode().ljust(120, b"\0") + packed.getvalue()


def vst_zip(instruments=VST_INSTRUMENTS, extra: dict[str, bytes] | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for instrument in instruments:
            zf.writestr(f"DDSP-VST-Models/{instrument}.tflite", fake_tflite(instrument))
        zf.writestr("DDSP-VST-Models/LICENSE", "Apache License 2.0 (test)\n")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return out.getvalue()


def publish_checkpoint(server: ModelServer, folder: str, src: Path = DEFAULT) -> None:
    for name in CKPT_FILES:
        server.put(f"{folder}/{name}", (src / name).read_bytes())
    # What a training folder also holds: an index without its data, a TensorBoard log.
    server.put(f"{folder}/ckpt-2000.index", (src / "ckpt-1600.index").read_bytes())
    server.put(f"{folder}/events.out.tfevents.1625000000.host", b"not a model")


def run(*args: object, input: str | None = None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)


def one_line_error(result, *words: str) -> str:
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def installed_names(lib: Path) -> set[str]:
    if not lib.exists():
        return set()
    return {p.name for p in lib.iterdir() if not p.name.startswith(".")} - {"manifest.json"}


def manifest(lib: Path) -> dict:
    return json.loads((lib / "manifest.json").read_text())["models"]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    lib = tmp_path / "library"
    monkeypatch.setenv("DDSP_PD_MODELS_DIR", str(lib))
    server = ModelServer()
    publish_checkpoint(server, VIOLIN)
    server.put(VST_ZIP, vst_zip())
    with serving(server):
        monkeypatch.setenv("DDSP_PD_MODEL_SOURCE", server.origin)
        yield SimpleNamespace(lib=lib, server=server, tmp=tmp_path)


def tone(path: Path, seconds: float = 1.0, rate: int = 16000) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), rate)
    return path


# ------------------------------------------------------------------ download


def test_download_installs_the_model_with_its_manifest_entry(env) -> None:
    result = run("models", "download", "violin")
    assert result.exit_code == 0, result.output
    folder = env.lib / "violin"
    assert sorted(p.name for p in folder.iterdir()) == sorted(CKPT_FILES)
    for name in CKPT_FILES:  # byte for byte what was published
        assert (folder / name).read_bytes() == (DEFAULT / name).read_bytes()
    entry = manifest(env.lib)["violin"]
    assert entry["kind"] == "ddsp"
    assert entry["source"] == f"{env.server.origin}/{VIOLIN}/"
    assert entry["size"] == sum((DEFAULT / n).stat().st_size for n in CKPT_FILES)
    assert len(entry["sha256"]) == 64 and entry["date"].endswith("+00:00")
    assert set(entry["files"]) == set(CKPT_FILES)
    # Only the newest complete ckpt and the model's files were fetched.
    fetched = {r.path.rsplit("/", 1)[1] for r in env.server.object_requests()}
    assert fetched == set(CKPT_FILES)
    assert not (env.lib / ".downloads" / "ddsp").exists()  # nothing left behind


def test_render_and_info_take_a_downloaded_model_by_name(env) -> None:
    assert run("models", "download", "violin", "-q").exit_code == 0
    out = env.tmp / "out.wav"
    result = run("render", tone(env.tmp / "in.wav"), "-c", "violin", "-o", out)
    assert result.exit_code == 0, result.output
    assert "checkpoint: violin" in result.output
    audio, rate = sf.read(str(out))
    assert rate == 16000 and len(audio) > 8000 and np.max(np.abs(audio)) > 0.1
    info = run("info", "violin")
    assert info.exit_code == 0, info.output
    assert f"checkpoint: {(env.lib / 'violin').resolve()}" in info.output


def test_info_takes_the_shipped_default_by_name(env) -> None:
    # Before names went through the catalog, `info default` said "checkpoint not found".
    result = run("info", "default")
    assert result.exit_code == 0, result.output
    assert "chosen: ckpt-1600" in result.output


def test_a_second_download_is_a_no_op(env) -> None:
    assert run("models", "download", "violin").exit_code == 0
    before = len(env.server.object_requests())
    stamp = (env.lib / "violin").stat().st_mtime_ns
    result = run("models", "download", "violin")
    assert result.exit_code == 0, result.output
    assert "already installed" in result.output
    assert len(env.server.object_requests()) == before  # not a byte fetched again
    assert (env.lib / "violin").stat().st_mtime_ns == stamp


def test_force_downloads_again_and_replaces(env) -> None:
    assert run("models", "download", "violin").exit_code == 0
    result = run("models", "download", "violin", "--force")
    assert result.exit_code == 0, result.output
    assert "replaced violin" in result.output
    assert installed_names(env.lib) == {"violin"}
    assert not any((env.lib / ".trash").iterdir())


def test_download_resumes_after_a_cut_connection(env) -> None:
    env.server.faults["/" + DATA] = Fault(cut_after=300_000, times=1)
    result = run("models", "download", "violin")
    assert result.exit_code == 0, result.output
    ranges = [r.headers.get("Range") for r in env.server.requests_for(DATA)]
    assert ranges[0] is None and ranges[1].startswith("bytes=") and ranges[1] != "bytes=0-"
    data = (env.lib / "violin" / "ckpt-1600.data-00000-of-00001").read_bytes()
    assert data == (DEFAULT / "ckpt-1600.data-00000-of-00001").read_bytes()


def test_a_body_cut_every_time_installs_nothing_and_resumes_later(env) -> None:
    env.server.faults["/" + DATA] = Fault(cut_after=400_000)
    result = run("models", "download", "violin", "--retries", "1")
    one_line_error(result, "failed after 2 attempts", "run the command again to resume")
    assert installed_names(env.lib) == set()
    assert not (env.lib / "manifest.json").exists() or "violin" not in manifest(env.lib)
    parts = list((env.lib / ".downloads").rglob("*.part"))
    assert [p.name for p in parts] == ["ckpt-1600.data-00000-of-00001.part"]
    kept = parts[0].stat().st_size
    assert kept > 0
    # Later, with the connection fine: only the rest of the file is asked for.
    del env.server.faults["/" + DATA]
    env.server.log.clear()
    result = run("models", "download", "violin")
    assert result.exit_code == 0, result.output
    assert [r.headers.get("Range") for r in env.server.requests_for(DATA)] == [f"bytes={kept}-"]
    assert (env.lib / "violin" / "ckpt-1600.data-00000-of-00001").stat().st_size == (
        DEFAULT / "ckpt-1600.data-00000-of-00001"
    ).stat().st_size


def test_a_missing_model_is_a_clear_error(env) -> None:
    one_line_error(run("models", "download", "flute"), "nothing is published", "solo_flute_ckpt")
    assert installed_names(env.lib) == set()


def test_a_listed_file_that_is_gone_is_a_404_error(env) -> None:
    env.server.faults["/" + DATA] = Fault(status=404)
    one_line_error(run("models", "download", "violin"), "not found", "HTTP 404")
    assert installed_names(env.lib) == set()
    assert not any((env.lib / ".downloads").rglob("*.part"))


def test_a_file_shorter_than_its_listing_is_refused(env, monkeypatch) -> None:
    original = env.server.objects.get

    # The object as served is cut to 5000 bytes while the listing still gives its full size.
    class Short(dict):
        def get(self, key, default=None):
            value = original(key, default)
            return value[:5000] if key == f"/{DATA}" else value

    monkeypatch.setattr(env.server, "objects", Short(env.server.objects))
    result = run("models", "download", "violin")
    one_line_error(result, "truncated or not the one listed")
    assert installed_names(env.lib) == set()
    assert not any((env.lib / ".downloads").rglob("*.part"))


def test_an_html_page_instead_of_a_file_is_refused(env) -> None:
    env.server.faults["/" + DATA] = Fault(html=True)
    one_line_error(run("models", "download", "violin"), "web page (HTML)")
    assert installed_names(env.lib) == set()
    assert not any((env.lib / ".downloads").rglob("*.part"))


def test_damaged_weights_with_matching_sizes_are_refused(env) -> None:
    data = bytearray((DEFAULT / "ckpt-1600.data-00000-of-00001").read_bytes())
    data[1000:1100] = bytes(100)  # same size, same MD5 in the listing: only the CRCs tell
    env.server.put(DATA, bytes(data))
    one_line_error(run("models", "download", "violin"), "do not load")
    assert installed_names(env.lib) == set()
    assert not any((env.lib / ".staging").iterdir())


def test_a_full_library_refuses_before_downloading(env, monkeypatch) -> None:
    from ddsp_pd.library import store

    usage = shutil.disk_usage(env.tmp)
    monkeypatch.setattr(store.shutil, "disk_usage", lambda _p: usage._replace(free=1_000_000))
    one_line_error(run("models", "download", "violin"), "not enough free space")
    assert env.server.object_requests() == []
    assert installed_names(env.lib) == set()


class _FillsUp(io.FileIO):
    room = 200_000

    def write(self, data) -> int:  # type: ignore[override]
        if self.tell() + len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def test_a_disk_that_fills_up_mid_download_installs_nothing(env, monkeypatch) -> None:
    monkeypatch.setattr(download, "_open_part", lambda path, mode: _FillsUp(path, mode[0]))
    one_line_error(run("models", "download", "violin"), "no space left")
    assert installed_names(env.lib) == set()
    assert not any((env.lib / ".downloads").rglob("*.part"))


def test_a_read_only_library_is_one_clear_error(env, monkeypatch) -> None:
    # Root ignores permission bits, so the refusal the OS would give is made here.
    real_open = os.open
    lib = str(env.lib)

    def refusing_open(path, flags, *args, **kwargs):
        if str(path).startswith(lib) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args, **kwargs)

    env.lib.mkdir()
    monkeypatch.setattr(os, "open", refusing_open)
    error = one_line_error(run("models", "download", "violin"), "cannot write to the model library")
    assert "DDSP_PD_MODELS_DIR" in error
    assert env.server.object_requests() == []


@contextlib.contextmanager
def _tmpfs(where: Path, *options: str):
    where.mkdir()
    opts = ",".join(("size=1m", *options))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root and mount rights)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_a_real_full_and_a_real_read_only_file_system(env, monkeypatch) -> None:
    from ddsp_pd.library import store

    # 1 MB of tmpfs for a 1.8 MB model: ENOSPC from the kernel (the pre-check told it lies).
    with _tmpfs(env.tmp / "small") as small:
        monkeypatch.setenv("DDSP_PD_MODELS_DIR", str(small / "lib"))
        usage = shutil.disk_usage(env.tmp)
        monkeypatch.setattr(store.shutil, "disk_usage", lambda _p: usage)
        one_line_error(run("models", "download", "violin"), "no space left")
        assert installed_names(small / "lib") == set()
        assert not any((small / "lib").rglob("*.part"))
    monkeypatch.undo()
    with _tmpfs(env.tmp / "ro", "ro") as ro:
        monkeypatch.setenv("DDSP_PD_MODELS_DIR", str(ro / "lib"))
        one_line_error(run("models", "download", "violin"), "cannot write to the model library")


def test_download_without_a_listing_reads_the_checkpoint_file(env) -> None:
    env.server.listing = False  # a plain copy of the tree, no JSON API
    env.server.put(f"{VIOLIN}/checkpoint", (DEFAULT / "checkpoint").read_bytes())
    result = run("models", "download", "violin")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (env.lib / "violin").iterdir()) == sorted(CKPT_FILES)


def test_listing_pages_are_followed(env) -> None:
    env.server.page_size = 2
    assert run("models", "download", "violin").exit_code == 0
    pages = [r for r in env.server.log if r.path.startswith("/storage/")]
    assert len(pages) >= 3


def test_source_option_overrides_the_environment(env, monkeypatch) -> None:
    monkeypatch.setenv("DDSP_PD_MODEL_SOURCE", "http://127.0.0.1:9/nothing-here")
    result = run("models", "download", "violin", "--source", env.server.origin + "/")
    assert result.exit_code == 0, result.output
    one_line_error(run("models", "download", "violin", "--source", "ftp://x"), "http")


def test_vst_download_installs_each_instrument_from_one_zip(env) -> None:
    result = run("models", "download", "vst")
    assert result.exit_code == 0, result.output
    names = {f"vst_{i.lower()}" for i in VST_INSTRUMENTS}
    assert installed_names(env.lib) == names
    assert len(env.server.requests_for(VST_ZIP)) == 1
    violin = env.lib / "vst_violin"
    assert (violin / "vst_violin.tflite").read_bytes() == fake_tflite("Violin")
    assert (violin / "LICENSE").read_text().startswith("Apache")
    entry = manifest(env.lib)["vst_violin"]
    assert entry["kind"] == "ddsp-vst"
    assert entry["source"] == f"{env.server.origin}/{VST_ZIP}#DDSP-VST-Models/Violin.tflite"
    assert not (env.lib / ".downloads" / "ddsp-vst").exists()  # the zip is not kept
    # Each is a model by name for every command (and for the server's list).
    found = {e.name: e.path for e in catalog.find_checkpoints()}
    assert names <= set(found) and found["vst_violin"] == violin.resolve()


def test_a_zip_with_an_unsafe_member_is_refused(env) -> None:
    env.server.put(VST_ZIP, vst_zip(extra={"../../evil.tflite": b"x"}))
    one_line_error(run("models", "download", "vst_violin"), "unsafe path")
    assert installed_names(env.lib) == set()
    assert not (env.tmp / "evil.tflite").exists()


def test_a_zip_member_that_is_not_a_tflite_fails_only_its_model(env) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("DDSP-VST-Models/Violin.tflite", fake_tflite("Violin"))
        zf.writestr("DDSP-VST-Models/Flute.tflite", b"<html>oops</html>")
    env.server.put(VST_ZIP, out.getvalue())
    result = run("models", "download", "vst_violin", "vst_flute", "vst_tuba")
    one_line_error(result, "2 of 3 models could not be installed", "vst_flute", "vst_tuba")
    assert installed_names(env.lib) == {"vst_violin"}


def test_unknown_names_are_refused_before_any_request(env) -> None:
    one_line_error(run("models", "download", "violin", "cello"), "not a published model", "cello")
    assert env.server.log == []


def test_groups_name_every_published_model() -> None:
    assert set(GROUPS["all"]) == set(PUBLISHED)
    assert len(GROUPS["vst"]) == 11
    assert {"violin", "flute", "flute2", "trumpet", "tenor_saxophone"} <= set(PUBLISHED)


def test_an_unreachable_source_stops_at_the_first_model(env, monkeypatch) -> None:
    with serving(ModelServer()) as gone:
        origin = gone.origin
    monkeypatch.setenv("DDSP_PD_MODEL_SOURCE", origin)
    result = run("models", "download", "violin", "flute", "--retries", "0")
    one_line_error(result, "2 of 2 models could not be installed")
    assert result.output.count("cannot connect") == 2


# ------------------------------------------------------------------ list, path, names


def test_list_shows_installed_and_published_with_sizes(env) -> None:
    assert run("models", "download", "violin").exit_code == 0
    result = run("models", "list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    installed = next(line for line in lines if line.strip().startswith("violin") and "from" in line)
    assert "ddsp checkpoint" in installed and "1.8 MB" in installed
    published = [line for line in lines if line.strip().startswith("vst_tuba")]
    zip_size = len(env.server.objects["/" + VST_ZIP])
    assert published and f"{zip_size / 1e3:.0f} kB zip" in published[0]
    assert any(line.strip().startswith("default") and "shipped" in line for line in lines)
    offline = run("models", "list", "--offline")
    assert offline.exit_code == 0 and "vst_tuba" in offline.output


def test_path_prints_the_library_and_a_model(env) -> None:
    assert run("models", "path").output.strip() == str(env.lib)
    assert run("models", "download", "violin").exit_code == 0
    assert run("models", "path", "violin").output.strip() == str((env.lib / "violin").resolve())
    one_line_error(run("models", "path", "nothing"), "no model named")


def test_the_library_is_a_default_checkpoint_folder(env, monkeypatch) -> None:
    assert catalog.library_dir() == env.lib
    assert catalog.default_checkpoint_dirs() == [catalog.SHIPPED_DIR, env.lib]
    if sys.platform.startswith("linux"):  # platformdirs follows XDG there
        monkeypatch.delenv("DDSP_PD_MODELS_DIR")
        monkeypatch.setenv("XDG_DATA_HOME", str(env.tmp / "xdg"))
        assert catalog.library_dir() == env.tmp / "xdg" / "ddsp-pd" / "checkpoints"


def test_hidden_entries_of_the_library_are_not_models(env) -> None:
    # The library's own .staging/.downloads/.trash, and macOS's AppleDouble "._x.zip" files.
    env.lib.mkdir()
    shutil.copytree(DEFAULT, env.lib / ".staging")
    (env.lib / "._fiddle.zip").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (env.lib / ".fiddle.tflite").write_bytes(fake_tflite("x"))
    shutil.copytree(DEFAULT, env.lib / "real")
    assert [e.name for e in catalog.find_checkpoints([env.lib])] == ["real"]


def test_a_published_name_not_installed_says_how_to_get_it(env) -> None:
    error = one_line_error(run("info", "trumpet"), "ddsp-pd models download trumpet")
    assert "not installed" in error


def test_the_server_lists_library_models_by_name(env) -> None:
    from ddsp_pd.server.app import OscService, ServerConfig
    from tests.test_server_support import FakeEngine, OscClient, identity_settings

    assert run("models", "download", "violin", "vst_tuba").exit_code == 0
    cfg = ServerConfig(port=0, host="127.0.0.1", output_dir=env.tmp / "out")
    service = OscService(FakeEngine(), cfg, settings_factory=identity_settings)
    service.start()
    client = OscClient(("127.0.0.1", service.address[1]))
    try:
        start = client.mark()
        client.send("/ddsp/checkpoints")
        client.wait_for("/ddsp/checkpoints_end", start)
        entries = {e.args[1]: e.args[2] for e in client.since(start, "/ddsp/checkpoint_entry")}
    finally:
        service.stop()
        client.close()
    assert entries["violin"] == str((env.lib / "violin").resolve())
    assert entries["vst_tuba"] == str((env.lib / "vst_tuba").resolve())
    assert "default" in entries


# ------------------------------------------------------------------ import, remove


def test_import_a_checkpoint_folder(env) -> None:
    src = env.tmp / "my_training"
    shutil.copytree(DEFAULT, src)
    (src / "ckpt-800.index").write_bytes(b"an older ckpt, not chosen")
    result = run("models", "import", src, "--name", "mine")
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (env.lib / "mine").iterdir())
    assert names == sorted([*CKPT_FILES, "MODEL_CARD.md"])
    assert manifest(env.lib)["mine"]["source"] == str(src.resolve())
    assert (src / "ckpt-1600.index").exists()  # copied, not moved
    assert run("info", "mine").exit_code == 0


def test_import_a_zip_of_a_checkpoint(env) -> None:
    archive = env.tmp / "fiddle.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in CKPT_FILES:
            zf.write(DEFAULT / name, f"fiddle/{name}")
    result = run("models", "import", archive)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (env.lib / "fiddle").iterdir()) == sorted(CKPT_FILES)


def test_import_a_tflite_file(env) -> None:
    src = env.tmp / "Oboe.tflite"
    src.write_bytes(fake_tflite("Oboe"))
    result = run("models", "import", src)
    assert result.exit_code == 0, result.output
    assert (env.lib / "Oboe" / "Oboe.tflite").read_bytes() == fake_tflite("Oboe")
    assert manifest(env.lib)["Oboe"]["kind"] == "ddsp-vst"


@needs_fixtures
def test_import_the_ddsp_export_folder(env) -> None:
    result = run("models", "import", VST_REFERENCE / "export", "--name", "clarinet")
    assert result.exit_code == 0, result.output
    folder = env.lib / "clarinet"
    assert sorted(p.name for p in folder.iterdir()) == [
        "clarinet.tflite", "metadata.json", "reverb_ir_16000_hz.wav",
    ]  # fmt: skip
    src = VST_REFERENCE / "export" / "tflite" / "clarinet.tflite"
    assert (folder / "clarinet.tflite").read_bytes() == src.read_bytes()


def test_import_the_vst_release_zip_gives_the_published_names(env) -> None:
    archive = env.tmp / "DDSP-VST-Models.zip"
    archive.write_bytes(vst_zip())
    result = run("models", "import", archive)
    assert result.exit_code == 0, result.output
    assert installed_names(env.lib) == {f"vst_{i.lower()}" for i in VST_INSTRUMENTS}
    one_line_error(run("models", "import", archive, "--name", "x"), "--name cannot be given")


@pytest.mark.parametrize(
    "content, words",
    [
        (b"<!DOCTYPE html><html>404</html>", ("web page",)),
        (b"\x00" * 64, ("not a TFLite model",)),
        (b"\x1c\x00\x00\x00TFL3" + b"\x00" * 64, ("without DDSP-VST metadata",)),
    ],
)
def test_import_refuses_what_is_not_a_model(env, content: bytes, words) -> None:
    src = env.tmp / "bad.tflite"
    src.write_bytes(content)
    one_line_error(run("models", "import", src), *words)
    assert installed_names(env.lib) == set()


def test_import_refuses_a_taken_name_unless_forced(env) -> None:
    src = env.tmp / "violin"
    shutil.copytree(DEFAULT, src)
    assert run("models", "import", src).exit_code == 0
    one_line_error(run("models", "import", src), "already in the library", "--force")
    assert run("models", "import", src, "--force").exit_code == 0
    one_line_error(run("models", "import", src, "--name", "default"), "shipped with ddsp-pd")
    one_line_error(run("models", "import", src, "--name", "../x"), "cannot name a model")
    one_line_error(run("models", "import", env.lib / "violin"), "already in")


def test_remove_a_downloaded_model(env) -> None:
    assert run("models", "download", "violin").exit_code == 0
    result = run("models", "remove", "violin")
    assert result.exit_code == 0, result.output
    assert installed_names(env.lib) == set()
    assert "violin" not in manifest(env.lib)
    one_line_error(run("models", "remove", "violin"), "no such model")
    one_line_error(run("models", "remove", "default"), "shipped with ddsp-pd")


def test_remove_asks_before_deleting_a_model_put_there_by_hand(env) -> None:
    env.lib.mkdir()
    shutil.copytree(DEFAULT, env.lib / "handmade")
    one_line_error(run("models", "remove", "handmade"), "--yes")
    assert (env.lib / "handmade").exists()
    assert run("models", "remove", "handmade", "--yes").exit_code == 0
    assert not (env.lib / "handmade").exists()


def test_remove_clears_a_partial_download(env) -> None:
    env.server.faults["/" + DATA] = Fault(cut_after=400_000)
    run("models", "download", "violin", "--retries", "0")
    assert any((env.lib / ".downloads").rglob("*.part"))
    result = run("models", "remove", "violin")
    assert result.exit_code == 0 and "partial download" in result.output
    assert not any((env.lib / ".downloads").rglob("*.part"))


def test_import_a_ddsp_export_folder_with_metadata_beside(env) -> None:
    export = env.tmp / "oboe"
    (export / "tflite").mkdir(parents=True)
    bare = b"\x1c\x00\x00\x00TFL3" + bytes(200)  # no packed metadata.json
    (export / "tflite" / "oboe.tflite").write_bytes(bare)
    (export / "metadata.json").write_text('{"mean_min_pitch_note": 60}')
    (export / "reverb_ir_16000_hz.wav").write_bytes(b"RIFF....WAVE")
    result = run("models", "import", export)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (env.lib / "oboe").iterdir()) == [
        "metadata.json", "oboe.tflite", "reverb_ir_16000_hz.wav",
    ]  # fmt: skip


def test_a_damaged_manifest_is_kept_aside_not_lost(env) -> None:
    env.lib.mkdir()
    (env.lib / "manifest.json").write_text("{not json")
    listed = run("models", "list", "--offline")
    assert listed.exit_code == 0 and "damaged" in listed.output
    assert run("models", "download", "violin").exit_code == 0
    kept = list(env.lib.glob("manifest.json.damaged-*"))
    assert [p.read_text() for p in kept] == ["{not json"]
    assert set(manifest(env.lib)) == {"violin"}


def test_origins_and_names_are_checked() -> None:
    from ddsp_pd.errors import CheckpointError
    from ddsp_pd.library.published import resolve_origin
    from ddsp_pd.library.store import check_name

    assert resolve_origin("https://mirror.example/ddsp-copy/") == "https://mirror.example/ddsp-copy"
    for bad in ("file:///tmp", "https://u:p@host", "https://host/?q=1", "host-only"):
        with pytest.raises(CheckpointError):
            resolve_origin(bad)
    assert check_name("my_violin-2.1") == "my_violin-2.1"
    for bad in ("", ".hidden", "a/b", "all", "VST", "x.zip", "a" * 65, "ü"):
        with pytest.raises(CheckpointError):
            check_name(bad)


def test_a_listing_keeps_only_the_folders_own_files() -> None:
    from ddsp_pd.errors import CheckpointError
    from ddsp_pd.library.published import parse_listing

    page = {
        "kind": "storage#objects",
        "items": [
            {"name": "m/f/ckpt-1.index", "size": "10", "md5Hash": "AAAAAAAAAAAAAAAAAAAAAA=="},
            {"name": "m/f/sub/other.index", "size": "5"},
            {"name": "m/f/.DS_Store", "size": "5"},
            {"name": "m/f/", "size": "0"},
            {"name": "elsewhere/x", "size": "1"},
        ],
        "nextPageToken": "p2",
    }
    files, token = parse_listing(json.dumps(page).encode(), "https://o", "b", "m/f/")
    assert [(f.name, f.size, f.url) for f in files] == [
        ("ckpt-1.index", 10, "https://o/b/m/f/ckpt-1.index")
    ]
    assert files[0].md5 == bytes(16) and token == "p2"
    assert parse_listing(b'{"kind": "storage#objects"}', "https://o", "b", "m/")[0] == []
    with pytest.raises(CheckpointError):
        parse_listing(b"<html>", "https://o", "b", "m/")
    with pytest.raises(CheckpointError, match="impossible size"):
        parse_listing(b'{"items": [{"name": "m/x", "size": "-1"}]}', "https://o", "b", "m/")
