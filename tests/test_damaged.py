"""Index a few hundred damaged, odd and hostile files mixed with good ones: 0 crashes, every good
file indexed, every bad file skipped with a reason; EXIF-rotated copies embed like the original."""

import numpy as np
import pytest
from conftest import real_photo
from PIL import Image

from lookalike import Collection
from lookalike.testing import build_corpus

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    originals = [
        Image.open(p).convert("RGB")
        for cls in ("accordion", "pizza", "camera", "soccer_ball", "umbrella", "lotus")
        for p in real_photo(cls, n=1)
    ]
    root = tmp_path_factory.mktemp("messy") / "corpus"
    kinds = build_corpus(root, originals, seed=0, copies=16)
    col = Collection.create(root.parent / "db")
    report = col.index(root, max_pixels=50_000_000)
    return root, kinds, col, report


def test_at_least_300_files_and_no_crash(indexed):
    root, kinds, col, report = indexed
    assert len(kinds) >= 300
    assert report.added + len(report.skipped) == len([k for k in kinds if not k.startswith("loop")])


def test_every_good_file_indexed_every_bad_file_skipped_with_reason(indexed):
    root, kinds, col, report = indexed
    indexed_paths = set(col.paths)
    reasons = dict(col.errors)
    for rel, kind in kinds.items():
        path = str(root / rel)
        if kind.startswith("good:"):
            assert path in indexed_paths, f"good file not indexed: {rel} ({kind}): {reasons.get(path)}"
        elif kind.startswith("bad:"):
            assert path not in indexed_paths, f"bad file was indexed: {rel} ({kind})"
            assert reasons.get(path), f"bad file has no reason: {rel} ({kind})"
        else:  # either: indexed, or skipped with a reason
            assert path in indexed_paths or reasons.get(path)
    assert any("too many pixels" in r for r in reasons.values())
    assert any("truncated" in r for r in reasons.values())
    assert any("empty" in r for r in reasons.values())
    assert any("not an image" in r for r in reasons.values())


def test_exif_rotated_copies_embed_like_the_original(indexed):
    root, kinds, col, report = indexed
    emb = dict(zip(col.paths, np.asarray(col.embeddings)))
    for n in range(6):
        ref = emb[str(root / f"good/orig_{n}.jpg")]
        for o in range(1, 9):
            v = emb[str(root / f"good/exif/orient{o}_{n}.jpg")]
            assert float(v @ ref) >= 0.99, f"orientation {o} of original {n}: cosine {float(v @ ref):.4f}"


def test_reindex_is_a_no_op_and_keeps_reasons(indexed):
    root, kinds, col, report = indexed
    again = Collection.open(col.path).index(root, max_pixels=50_000_000)
    assert again.added == 0 and again.updated == 0 and again.removed == 0
    assert len(Collection.open(col.path).errors) == len(col.errors)
