"""The front page and the documentation site: README.md stays short, the site builds strictly
(a broken link, a page left out of the nav or an unknown anchor fails), and every file a command
or a sentence names in backquotes exists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# A path in the repository: a top-level folder, then a file with one of the project's extensions
# (not one at a revision, `git show REV:benchmarks/x.py`: a file the history keeps).
PATH = re.compile(r"(?<![\w/.$~:-])((?:interest_model|ray_jobs|serving|cluster|benchmarks|docs|tests|\.ci)"
                  r"/[\w./-]*\.(?:py|yaml|yml|sh|md|json|png|toml|cfg))\b")


def test_readme_is_a_front_page():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; topics go to docs/"


def test_the_docs_site_builds_strictly(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").is_file()


def test_every_named_file_exists():
    missing = []
    for page in PAGES:
        for n, line in enumerate(page.read_text().splitlines(), start=1):
            for path in PATH.findall(line):
                if not (REPO / path).exists():
                    missing.append(f"{page.relative_to(REPO)}:{n}: {path}")
    assert not missing, "\n".join(missing)


def test_the_results_page_is_generated_from_its_data():
    sys.path.insert(0, str(REPO / "docs"))
    try:
        import results
    finally:
        sys.path.pop(0)
    assert (REPO / "docs" / "results.md").read_text() == results.page(results.load()), \
        "docs/results.md is older than docs/results.json: run python docs/results.py"
