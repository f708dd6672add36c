import os
from pathlib import Path

import numpy as np
import pytest

from lookalike.testing import synthetic_image  # noqa: F401 (the tests import it from here)

ROOT = Path(__file__).resolve().parents[1]
# Exported ONNX models are cached across test runs (export takes ~15 s).
os.environ.setdefault("LOOKALIKE_CACHE", str(ROOT / ".pytest_cache" / "lookalike-models"))
DATA = Path(os.environ.get("LOOKALIKE_DATA", ROOT.parent / "shared" / "data"))


def leave_one_out(emb, labels, k, expand=0, alpha=3.0):
    """Reference P@1, P@k and mAP of leave-one-out class retrieval, the plain way: one query at a time.

    With ``expand``: each image's query is itself plus its ``expand`` nearest other images weighted by
    cosine**alpha, normalised (alpha-QE); the other images are ranked by their cosine to the query.
    """
    n = len(labels)
    p1 = pk = mean_ap = 0.0
    for i in range(n):
        others = [j for j in range(n) if j != i]
        q = emb[i]
        if expand:
            near = sorted(others, key=lambda j: -float(emb[i] @ emb[j]))[:expand]
            q = emb[i] + sum(max(float(emb[i] @ emb[j]), 0.0) ** alpha * emb[j] for j in near)
            q = q / np.linalg.norm(q)
        relevant = [labels[j] == labels[i] for j in sorted(others, key=lambda j: -float(q @ emb[j]))]
        p1 += relevant[0]
        pk += sum(relevant[:k]) / k
        hits, precision_sum = 0, 0.0
        for rank, rel in enumerate(relevant, 1):
            if rel:
                hits += 1
                precision_sum += hits / rank
        mean_ap += precision_sum / max(hits, 1)
    return p1 / n, pk / n, mean_ap / n


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """12 distinct JPEG/PNG images in two labelled sub-folders."""
    root = tmp_path / "photos"
    for i in range(12):
        sub = root / ("cats" if i % 2 else "dogs")
        sub.mkdir(parents=True, exist_ok=True)
        ext = "png" if i % 3 == 0 else "jpg"
        synthetic_image(i).save(sub / f"img_{i:02d}.{ext}")
    return root


@pytest.fixture
def dup_db(tmp_path, image_folder):
    """12 synthetic images plus 90%-size copies of images 0, 1 and 2 (three duplicate pairs)."""
    for i, sub in ((0, "dogs"), (1, "cats"), (2, "dogs")):
        synthetic_image(i).resize((144, 108)).save(image_folder / sub / f"copy_{i:02d}.png")
    from lookalike import Collection

    # The float engine: these cartoons' pair scores sit close to the dupes threshold and int8 moves them by
    # up to 0.03 (real photos: cosine 0.996 to float, the same pairs found); the tests using it are about dupes.
    Collection.create(tmp_path / "db", engine="onnx").index(image_folder)
    return tmp_path / "db"


def real_photo(cls: str, n: int = 1) -> list[Path]:
    folder = DATA / "caltech101" / cls
    if not folder.is_dir():
        pytest.skip(f"shared data not found at {folder} (set LOOKALIKE_DATA)")
    return sorted(folder.glob("*.jpg"))[:n]


def hard_copy_db(tmp: Path) -> tuple[Path, list[str]]:
    """A collection of 5 real photos and 2 hard copies of one (watermark, 20-degree turn) that score below the
    dupes threshold against it; returns (db, the sorted names of the original and its two copies)."""
    import shutil

    from PIL import Image

    from lookalike import Collection
    from lookalike import evaluate as ev

    root = tmp / "photos"
    root.mkdir()
    original = real_photo("Leopards")[0]
    for p in [original] + real_photo("airplanes", 2) + real_photo("brain", 2):
        shutil.copy(p, root / f"{p.parent.name}_{p.name}")
    copies = ev.edit_image(Image.open(original).convert("RGB"), np.random.default_rng(0),
                           names=["watermark", "rotate_20"])
    for name, im in copies.items():
        im.save(root / f"copy_{name}.jpg", quality=92)
    Collection.create(tmp / "db").index(root)
    return tmp / "db", sorted([f"Leopards_{original.name}", "copy_rotate_20.jpg", "copy_watermark.jpg"])


@pytest.fixture(scope="session")
def encoder():
    from lookalike.encoders import get_encoder

    return get_encoder("efficientnet-lite0")


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_sessionfinish(session, exitstatus):
    """Under CI (CI=true) a skipped test fails the run: a missing browser, Spark or data set must be noticed."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if _ci() and reporter and reporter.stats.get("skipped") and session.exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    skipped = terminalreporter.stats.get("skipped", [])
    if _ci() and skipped:
        terminalreporter.write_line(f"CI=true: {len(skipped)} test(s) skipped, so the run fails: under CI every "
                                    "test must run (install what it needs, or fix the test).", red=True)
