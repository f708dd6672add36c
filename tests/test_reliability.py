"""No lost work (issue 18, collection side): one writer at a time for real, hostile names, clear errors."""

import errno
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_image
from typer.testing import CliRunner

from lookalike import Collection, CollectionError, CorruptCollectionError
from lookalike.cli import app
from lookalike.collection import store

runner = CliRunner()
LOOKALIKE = [sys.executable, "-m", "lookalike"]


def _folder(root: Path, n: int, start: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        synthetic_image(i).save(root / f"img_{i:03d}.jpg")
    return root


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")
    return env


def test_a_writer_that_opened_before_another_committed_does_not_write_its_stale_view(tmp_path):
    """Two real processes: A opens, pauses before it locks; B indexes and commits; A resumes and indexes."""
    db = tmp_path / "db"
    a_dir, b_dir = _folder(tmp_path / "a", 3), _folder(tmp_path / "b", 4, start=10)
    Collection.create(db)
    go = tmp_path / "go"
    script = (
        "import sys, time, pathlib\n"
        "from lookalike import Collection\n"
        f"col = Collection.open({str(db)!r})\n"
        "print('opened', flush=True)\n"
        f"while not pathlib.Path({str(go)!r}).exists(): time.sleep(0.05)\n"
        f"r = col.index({str(a_dir)!r})\n"
        "print('added', r.added, len(col), flush=True)\n"
    )
    a = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=_env())
    assert a.stdout.readline().strip() == "opened"
    b = subprocess.run(LOOKALIKE + ["index", str(b_dir), "--db", str(db)], capture_output=True, text=True,
                       env=_env())
    assert b.returncode == 0, b.stderr
    go.touch()
    out, _ = a.communicate(timeout=120)
    assert a.returncode == 0 and out.split() == ["added", "3", "7"]
    col = Collection.open(db)
    assert len(col) == 7 and {Path(p).parent.name for p in col.paths} == {"a", "b"}


def test_a_second_index_waits_for_the_first_including_its_lsh_build(tmp_path):
    db = tmp_path / "db"
    big, one = _folder(tmp_path / "big", 40), _folder(tmp_path / "one", 1, start=500)
    first = subprocess.Popen(LOOKALIKE + ["index", str(big), "--db", str(db), "--lsh", "--batch-size", "4"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    while not (db / store.MANIFEST).exists():
        time.sleep(0.05)
    second = subprocess.run(LOOKALIKE + ["index", str(one), "--db", str(db)], capture_output=True, text=True,
                            env=_env())
    out, errs = first.communicate(timeout=300)
    assert first.returncode == 0, errs
    assert second.returncode == 0, second.stderr
    col = Collection.open(db)
    assert len(col) == 41
    assert col.verify()  # every file the manifest names exists and matches
    assert col.lsh is not None and len(col.lsh) == 41


def test_rebuild_waits_for_the_writer_and_deleting_dot_lock_changes_nothing(tmp_path, image_folder):
    db = tmp_path / "db"
    col = Collection.create(db)
    col.index(image_folder)
    (db / ".lock").unlink(missing_ok=True)  # nothing to delete: the lock is on the folder itself
    done = []
    with store.Lock(db):
        t = threading.Thread(target=lambda: done.append(Collection.create(db, overwrite=True)))
        t.start()
        time.sleep(0.5)
        assert not done, "--rebuild must wait for the writer holding the lock"
        with pytest.raises(CollectionError, match="Another process is writing"):
            with store.Lock(db, wait=False):
                pass
    t.join(30)
    assert done and len(Collection.open(db)) == 0
    assert Collection.open(db).generation > col.generation, "a rebuild is a new generation (servers notice)"


def test_a_file_name_that_is_not_utf8_is_indexed_and_shown_escaped(tmp_path, image_folder):
    name = os.fsdecode(b"caf\xe9.jpg")  # Latin-1, as old Windows/Samba archives have
    bad = image_folder / "cats" / name
    synthetic_image(77).save(bad, format="JPEG")
    db = tmp_path / "db"
    res = runner.invoke(app, ["index", str(image_folder), "--db", str(db)])
    assert res.exit_code == 0, res.output
    col = Collection.open(db)
    assert len(col) == 13 and str(bad) in col.paths
    assert col.search(bad, k=1)[0].path == str(bad)  # the raw name round-trips to the file
    res = runner.invoke(app, ["search", str(bad), "--db", str(db), "-k", "1", "--include-self"])
    assert res.exit_code == 0 and "caf\\xe9.jpg" in res.output
    res = runner.invoke(app, ["search", str(bad), "--db", str(db), "-k", "1", "--json", "--include-self"])
    assert res.exit_code == 0 and json.loads(res.output)["results"][0]["path"].endswith("caf\\xe9.jpg")
    r = col.index(image_folder)
    assert (r.added, r.removed, r.unchanged) == (0, 0, 13)


def test_readers_racing_commits_never_see_a_damaged_collection(tmp_path, image_folder):
    db = tmp_path / "db"
    Collection.create(db).index(image_folder)
    extra = _folder(tmp_path / "extra", 2, start=900)
    stop, failures = threading.Event(), []

    def writer():
        w = Collection.open(db)
        while not stop.is_set():
            w.add(extra.iterdir())
            w.remove(extra.iterdir())

    t = threading.Thread(target=writer)
    t.start()
    try:
        deadline = time.monotonic() + 8
        opened = 0
        while time.monotonic() < deadline:
            try:
                col = Collection.open(db, read_only=True)
                assert len(col) in (12, 14)
                col.search(np.asarray(col.embeddings[0]), k=2)
                opened += 1
            except CorruptCollectionError as e:  # pragma: no cover - the failure this test is about
                failures.append(str(e))
    finally:
        stop.set()
        t.join(60)
    assert not failures, failures[:3]
    assert opened > 10


def test_an_unlistable_folder_keeps_its_images(tmp_path, image_folder, monkeypatch):
    db = tmp_path / "db"
    Collection.create(db).index(image_folder)
    real_scandir = os.scandir
    cats = str(image_folder / "cats")

    def scandir(path="."):
        if str(path) == cats:
            raise PermissionError(errno.EACCES, "Permission denied", cats)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    r = Collection.open(db).index(image_folder)
    assert r.removed == 0 and r.stale == 6 and r.unreadable_folders == [cats]
    assert len(Collection.open(db)) == 12


def test_a_very_deep_tree_is_indexed(tmp_path):
    deep = tmp_path / "deep"
    path = str(deep)
    os.mkdir(path)
    for _ in range(1_100):  # one level at a time (os.makedirs itself recurses)
        path += "/d"
        os.mkdir(path)
    synthetic_image(5).save(path + "/x.jpg")
    try:
        res = runner.invoke(app, ["index", str(deep), "--db", str(tmp_path / "db")])
        assert res.exit_code == 0, res.output
        assert len(Collection.open(tmp_path / "db")) == 1
    finally:  # remove it level by level (shutil.rmtree, and so pytest's clean-up, recurses)
        os.remove(path + "/x.jpg")
        while path != str(deep):
            os.rmdir(path)
            path = os.path.dirname(path)
        os.rmdir(path)


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "No space left"), (errno.EROFS, "Cannot write")])
def test_a_full_disk_or_read_only_db_is_one_clear_sentence(tmp_path, image_folder, monkeypatch, code, words):
    db = tmp_path / "db"
    Collection.create(db).index(image_folder)
    synthetic_image(99).save(image_folder / "new.jpg")
    from lookalike import storage

    def fail(*a, **k):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(storage, "atomic_write", fail)
    monkeypatch.setattr("lookalike.collection.segment.SegmentWriter.finish", fail)
    res = runner.invoke(app, ["index", str(image_folder), "--db", str(db)])
    assert res.exit_code == 1 and words in res.output and "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    monkeypatch.undo()
    assert len(Collection.open(db)) == 12  # the last commit is intact


def test_db_that_is_a_file_is_a_clear_error(tmp_path, image_folder):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for args in (["index", str(image_folder), "--db", str(afile)], ["search", str(afile), "--db", str(afile)]):
        res = runner.invoke(app, args)
        assert res.exit_code == 1 and "is a file" in res.output, res.output
        assert res.exception is None or isinstance(res.exception, SystemExit)  # no traceback


def _rewrite(db: Path, change) -> None:
    m = json.loads((db / store.MANIFEST).read_text())
    m.pop("manifest_sha256")
    change(m)
    store.write_manifest(db, m)  # a recomputed checksum: the hand edit "looks" valid


@pytest.mark.parametrize("edit, words", [
    (lambda m: m.update(files={}), "unknown fields"),
    (lambda m: m["segments"][0]["meta"].update(name="../../outside.parquet"), "not a collection file name"),
    (lambda m: m["segments"][0]["emb"].pop("xxh3"), "file entry"),
    (lambda m: m.update(count=999), "count 999"),
])
def test_a_hand_edited_manifest_is_refused(tmp_path, image_folder, edit, words):
    db = tmp_path / "db"
    Collection.create(db).index(image_folder)
    _rewrite(db, edit)
    with pytest.raises(CorruptCollectionError, match=words):
        Collection.open(db)
