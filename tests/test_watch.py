"""`lookalike watch`: a real watchdog observer over real files in tmp_path."""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import synthetic_image

from lookalike import Collection
from lookalike.watch import Watcher

SETTLE = 0.5
TIMEOUT = 60  # seconds for a change to show up (a loaded 2-core machine embeds slowly)


@pytest.fixture
def watching(image_folder, tmp_path):
    """A Watcher running in a thread over image_folder (caught up), its db, and its batch reports."""
    db = tmp_path / "db"
    reports = []
    w = Watcher(image_folder, db, settle=SETTLE, on_batch=reports.append, workers=1)
    w.start()
    w.catch_up()
    errors = []

    def loop():
        try:
            w.run(catch_up=False)
        except BaseException as e:  # noqa: BLE001 - surfaced by the test below
            errors.append(e)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    yield w, db, reports
    w.stop()
    t.join(timeout=60)
    w.close()
    assert not t.is_alive()
    assert not errors, errors


def wait_for(predicate, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def paths(db):
    return set(Collection.open(db, read_only=True).paths)


def test_catch_up_indexes_the_folder(watching, image_folder):
    _, db, reports = watching
    assert reports[0].catch_up and reports[0].added == 12
    assert len(paths(db)) == 12


def test_new_file_appears(watching, image_folder):
    _, db, reports = watching
    new = image_folder / "dogs" / "new.jpg"
    synthetic_image(100).save(new)
    assert wait_for(lambda: str(new) in paths(db))
    assert any(r.added == 1 and not r.catch_up for r in reports)


def test_removed_file_disappears(watching, image_folder):
    _, db, _ = watching
    gone = image_folder / "cats" / "img_01.jpg"
    assert str(gone) in paths(db)
    gone.unlink()
    assert wait_for(lambda: str(gone) not in paths(db))
    assert len(paths(db)) == 11


def test_moved_file_is_repointed(watching, image_folder):
    _, db, _ = watching
    src, dst = image_folder / "cats" / "img_03.png", image_folder / "dogs" / "renamed.png"
    before = Collection.open(db, read_only=True)
    vec = before.embeddings[before.paths.index(str(src))].copy()
    os.rename(src, dst)
    assert wait_for(lambda: str(dst) in paths(db) and str(src) not in paths(db))
    after = Collection.open(db, read_only=True)
    assert len(after) == 12
    assert abs(float(after.embeddings[after.paths.index(str(dst))] @ vec) - 1) < 1e-3  # float16 storage


def test_moved_folder_is_repointed(watching, image_folder):
    _, db, _ = watching
    os.rename(image_folder / "cats", image_folder / "kittens")
    moved = {str(image_folder / "kittens" / f"img_{i:02d}.{'png' if i % 3 == 0 else 'jpg'}") for i in range(1, 12, 2)}
    assert wait_for(lambda: moved <= paths(db))
    assert not any("/cats/" in p for p in paths(db))
    assert len(paths(db)) == 12


def test_non_image_and_hidden_files_are_ignored(watching, image_folder):
    _, db, _ = watching
    (image_folder / "notes.txt").write_text("not an image")
    synthetic_image(7).save(image_folder / ".hidden.jpg")
    (image_folder / "fake.jpg").write_bytes(b"this is not a jpeg")  # an image name: recorded as unreadable
    new = image_folder / "dogs" / "real.png"
    synthetic_image(101).save(new)
    assert wait_for(lambda: str(new) in paths(db) and any(p.endswith("fake.jpg") for p, _ in
                                                          Collection.open(db, read_only=True).errors))
    col = Collection.open(db, read_only=True)
    seen = set(col.paths) | {p for p, _ in col.errors}
    assert str(image_folder / "notes.txt") not in seen and str(image_folder / ".hidden.jpg") not in seen
    assert len(col) == 13


def test_file_written_slowly_is_indexed_once_complete(watching, image_folder, tmp_path):
    _, db, _ = watching
    synthetic_image(102, size=(400, 300)).save(tmp_path / "whole.jpg", quality=95)
    data = (tmp_path / "whole.jpg").read_bytes()
    target = image_folder / "dogs" / "slow.jpg"
    with open(target, "wb") as f:
        for i in range(0, len(data), len(data) // 10 + 1):
            f.write(data[i : i + len(data) // 10 + 1])
            f.flush()
            time.sleep(0.1)
    assert wait_for(lambda: str(target) in paths(db))
    col = Collection.open(db, read_only=True)
    row = col.paths.index(str(target))
    assert col.metadata_columns()["size"][row] == len(data)
    assert not any(p == str(target) for p, _ in col.errors)


def test_busy_collection_is_retried(image_folder, tmp_path, monkeypatch):
    """A write refused by the lock is retried later, not fatal."""
    from lookalike.collection import CollectionError

    w = Watcher(image_folder, tmp_path / "db", settle=0.0, retry=0.0, workers=1)
    with w:
        w.catch_up()
        real_add = type(w.collection).add
        calls = []

        def busy_once(self, paths, **kwargs):
            calls.append(list(paths))
            if len(calls) == 1:
                raise CollectionError(f"Another process is writing to {self.path}; wait for it to finish.")
            return real_add(self, paths, **kwargs)

        monkeypatch.setattr(type(w.collection), "add", busy_once)
        new = image_folder / "new.jpg"
        synthetic_image(103).save(new)
        deadline = time.monotonic() + TIMEOUT
        while str(new) not in paths(tmp_path / "db") and time.monotonic() < deadline:
            w.step()
        assert len(calls) >= 2 and str(new) in paths(tmp_path / "db")


def test_cli_watch_stops_on_sigint(image_folder, tmp_path):
    db = tmp_path / "db"
    proc = subprocess.Popen([sys.executable, "-m", "lookalike", "watch", str(image_folder), "--db", str(db),
                             "--settle", "0.5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        _read_until(proc, "catch-up", lines, 120)
        assert any("catch-up: +12 added" in x for x in lines), "".join(lines) + proc.stderr.read()
        shutil.copy(image_folder / "dogs" / "img_00.png", image_folder / "copy.png")
        _read_until(proc, "batch:", lines, TIMEOUT)
        assert any("batch: +1 added" in x for x in lines), "".join(lines)
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc in (0, 130), proc.stderr.read()
    col = Collection.open(db)
    assert len(col) == 13


def _read_until(proc, marker, lines, timeout):
    """Append ``proc``'s output lines to ``lines`` up to one with ``marker`` (or its end, or ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if marker in line or not line:
            return
