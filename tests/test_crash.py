"""SIGKILL `lookalike index` at seeded random moments: the collection must always open, and a
re-run must complete to exactly the full set with no duplicate or partial rows."""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import synthetic_image

from lookalike import Collection
from lookalike.testing import run_and_kill

pytestmark = pytest.mark.slow
N_IMAGES = 120
TRIALS = int(os.environ.get("LOOKALIKE_KILL_TRIALS", 4))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill") / "photos"
    for i in range(N_IMAGES):
        (root / f"d{i % 4}").mkdir(parents=True, exist_ok=True)
        synthetic_image(1000 + i).save(root / f"d{i % 4}" / f"{i:03d}.jpg")
    ref = Collection.create(root.parent / "ref")
    ref.index(root)
    return root, dict(zip(ref.paths, np.asarray(ref.embeddings)))


def _index_cmd(root, db):
    return [
        sys.executable,
        "-m",
        "lookalike",
        "index",
        str(root),
        "--db",
        str(db),
        "--no-progress",
        "--batch-size",
        "4",
    ]


@pytest.mark.parametrize("trial", range(TRIALS))
def test_sigkill_during_index_leaves_a_loadable_collection(tmp_path, corpus, trial):
    root, reference = corpus
    db = tmp_path / "db"
    env = dict(os.environ, LOOKALIKE_CHECKPOINT_ROWS="8")
    info = run_and_kill(_index_cmd(root, db), env, db, N_IMAGES, seed=trial)
    assert not info["finished_before_kill"], info
    if (db / "manifest.json").exists():
        col = Collection.open(db)  # verifies every checksum
        assert len(set(col.paths)) == len(col), "duplicate rows after a kill"
        for p, v in zip(col.paths, col.embeddings):
            assert np.abs(v - reference[p]).max() < 1e-5, f"partial/garbled row for {p}"
    done = subprocess.run(_index_cmd(root, db), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    col = Collection.open(db)
    assert sorted(col.paths) == sorted(reference) and len(col) == N_IMAGES
    assert len(set(col.ids.tolist())) == N_IMAGES
    for p, v in zip(col.paths, col.embeddings):
        assert np.abs(v - reference[p]).max() < 1e-5
    leftovers = [f.name for f in db.iterdir() if ".tmp" in f.name]
    assert not leftovers, f"temp files left behind: {leftovers}"
