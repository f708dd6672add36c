"""Acting on duplicates: dry runs, journaled moves/trash/links/deletes, undo, reference folders, kills."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_image
from PIL import ImageEnhance
from typer.testing import CliRunner

from lookalike import Collection
from lookalike.cli import app

runner = CliRunner()


def _hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (links followed), by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _cli(*args) -> str:
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture
def photos(tmp_path, monkeypatch):
    """4 distinct images; an exact copy of img_0 under backup/, a brightened img_1 (a near duplicate)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))  # the trash of these tests
    root = tmp_path / "photos"
    (root / "a").mkdir(parents=True)
    (root / "backup").mkdir()
    for i in range(4):
        synthetic_image(i).save(root / "a" / f"img_{i}.png")
    time.sleep(0.01)
    shutil.copy(root / "a" / "img_0.png", root / "backup" / "img_0.png")  # newer: the original is the keeper
    ImageEnhance.Brightness(synthetic_image(1)).enhance(1.1).save(root / "a" / "img_1_edit.png")  # cosine ~0.99
    db = tmp_path / "db"
    _cli("index", root, "--db", db)
    return root, db


def _groups(db, *args) -> list[dict]:
    return json.loads(_cli("dupes", "--db", db, "--threshold", "0.9", "--format", "json", *args))["groups"]


def test_exact_tier_first_then_near_with_member_facts(photos):
    root, db = photos
    groups = _groups(db)
    assert [g["tier"] for g in groups] == ["exact", "near"]
    exact, near = groups
    assert exact["min_score"] == 1.0
    by_path = {Path(m["path"]).relative_to(root).as_posix(): m for m in exact["members"]}
    assert by_path["a/img_0.png"]["role"] == "keep" and by_path["backup/img_0.png"]["role"] == "act"
    assert by_path["backup/img_0.png"]["identical"] and by_path["backup/img_0.png"]["score"] == 1.0
    m = by_path["backup/img_0.png"]
    assert m["size"] == (root / "backup" / "img_0.png").stat().st_size
    assert (m["width"], m["height"]) == (160, 120) and m["folder"] == str(root / "backup") and m["modified"]
    names = {Path(m["path"]).name: m for m in near["members"]}
    assert set(names) == {"img_1.png", "img_1_edit.png"}
    assert names["img_1.png"]["role"] == "keep" and not names["img_1_edit.png"]["identical"]
    assert 0.9 <= names["img_1_edit.png"]["score"] < 1.0 and near["min_score"] < 1.0
    assert [g["tier"] for g in _groups(db, "--tier", "exact")] == ["exact"]
    assert [g["tier"] for g in _groups(db, "--tier", "near")] == ["near"]
    # keep rules: shortest-path keeps a/ (shorter than backup/); newest keeps the copy
    newest = _groups(db, "--tier", "exact", "--keep", "newest")[0]
    assert newest["keeper"] == next(m["id"] for m in newest["members"] if "backup" in m["path"])
    csv = _cli("dupes", "--db", db, "--threshold", "0.9", "--format", "csv").splitlines()
    assert csv[0].startswith("group,id,path,keeper,min_score,tier,role,score_to_keeper,identical,size,width,height")
    assert len(csv) == 5
    table = _cli("dupes", "--db", db, "--threshold", "0.9")
    assert "exact" in table and "near" in table and "img_1_edit.png" in table


@pytest.mark.parametrize("action", ["move", "trash", "hardlink", "symlink"])
def test_action_dry_run_then_yes_then_undo(photos, tmp_path, action):
    root, db = photos
    before = _hashes(root)
    target = tmp_path / "dupes-out"
    extra = ["--to", target] if action == "move" else []
    plan = _cli("dupes", "--db", db, "--threshold", "0.9", "--apply", action, *extra)
    assert "Nothing was changed" in plan and "2 files of 2 groups" in plan
    assert _hashes(root) == before and not (db / "journal").exists() and not target.exists()
    out = _cli("dupes", "--db", db, "--threshold", "0.9", "--apply", action, *extra, "--yes")
    assert "done for 2 files" in out
    copy, near = root / "backup" / "img_0.png", root / "a" / "img_1_edit.png"
    keeper0, keeper1 = root / "a" / "img_0.png", root / "a" / "img_1.png"
    trash = tmp_path / "xdg" / "Trash"
    if action == "move":
        assert not copy.exists() and not near.exists()
        assert _hashes(target) == {"backup/img_0.png": before["backup/img_0.png"],
                                   "a/img_1_edit.png": before["a/img_1_edit.png"]}
    elif action == "trash":
        assert not copy.exists() and not near.exists()
        assert sorted(p.name for p in (trash / "files").iterdir()) == ["img_0.png", "img_1_edit.png"]
        info = (trash / "info" / "img_0.png.trashinfo").read_text()
        assert f"Path={copy}" in info and "DeletionDate=" in info
    elif action == "hardlink":
        assert copy.samefile(keeper0) and near.samefile(keeper1) and not copy.is_symlink()
    else:
        assert copy.is_symlink() and os.readlink(copy) == str(keeper0) and near.resolve() == keeper1
    col = Collection.open(db)
    paths = set(col.paths)
    if action == "move":
        assert str(target / "backup" / "img_0.png") in paths and str(copy) not in paths
    elif action == "trash":
        assert str(copy) not in paths and str(near) not in paths
    else:
        assert str(copy) in paths and str(near) in paths
        assert _groups(db) == [], "linked copies are no duplicates any more"
    out = _cli("undo", "--db", db)
    assert "2 files restored, 0 not" in out
    assert _hashes(root) == before and not copy.is_symlink() and not copy.samefile(keeper0)
    assert os.stat(copy).st_nlink == 1
    if action == "move":
        assert not any(p.is_file() for p in target.rglob("*")), "undo leaves no file (nor folder) behind"
    if action != "move":
        assert not any((trash / "files").iterdir()) and not any((trash / "info").iterdir())
    assert sorted(Collection.open(db).paths) == sorted(str(root / p) for p in before)
    runs = _cli("undo", "--db", db, "--list")
    assert "undone" in runs
    res = runner.invoke(app, ["undo", "--db", str(db)])
    assert res.exit_code == 1 and "No run to undo" in res.output


def test_delete_needs_yes_and_is_final(photos):
    root, db = photos
    before = _hashes(root)
    plan = _cli("dupes", "--db", db, "--threshold", "0.9", "--tier", "exact", "--apply", "delete")
    assert "deletes are final" in plan and "1 files of 1 groups" in plan
    assert _hashes(root) == before
    data = json.loads(_cli("dupes", "--db", db, "--threshold", "0.9", "--tier", "exact", "--apply", "delete",
                           "--format", "json"))
    assert data["dry_run"] and data["final"] and data["files"] == 1 and data["bytes"] > 0
    _cli("dupes", "--db", db, "--threshold", "0.9", "--tier", "exact", "--apply", "delete", "--yes")
    assert not (root / "backup" / "img_0.png").exists() and (root / "a" / "img_0.png").exists()
    assert str(root / "backup" / "img_0.png") not in Collection.open(db).paths
    out = _cli("undo", "--db", db)
    assert "0 files restored, 1 not" in out and "deletes are final" in out
    assert not (root / "backup" / "img_0.png").exists()


def test_reference_folder_is_kept_and_untouched(photos, tmp_path):
    root, db = photos
    backup = _hashes(root / "backup")
    stats = {p: os.stat(p).st_mtime_ns for p in (root / "backup").iterdir()}
    groups = _groups(db, "--reference", root / "backup")
    exact = groups[0]
    keeper = next(m for m in exact["members"] if m["role"] == "keep")
    assert "backup" in keeper["path"], "a file under a reference folder is preferred as keeper"
    _cli("dupes", "--db", db, "--threshold", "0.9", "--reference", root / "backup", "--apply", "move",
         "--to", tmp_path / "out", "--yes")
    assert _hashes(root / "backup") == backup and {p: os.stat(p).st_mtime_ns for p in stats} == stats
    assert not (root / "a" / "img_0.png").exists() and (tmp_path / "out" / "a" / "img_0.png").exists()
    # a whole group under reference folders: nothing to act on
    out = _cli("dupes", "--db", db, "--threshold", "0.9", "--reference", root, "--reference", tmp_path / "out",
               "--apply", "trash")
    assert "0 files of 0 groups" in out


def test_changed_files_are_skipped(photos, tmp_path):
    root, db = photos
    near = root / "a" / "img_1_edit.png"
    with open(near, "ab") as f:
        f.write(b"more")  # size changed
    copy = root / "backup" / "img_0.png"
    st = copy.stat()
    data = bytearray(copy.read_bytes())
    data[-1] ^= 0xFF  # same size, same modified time, other bytes: only the hash tells
    copy.write_bytes(bytes(data))
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns))
    before = _hashes(root)
    res = runner.invoke(app, ["dupes", "--db", str(db), "--threshold", "0.9", "--apply", "move", "--to",
                              str(tmp_path / "out"), "--yes", "--format", "json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["done"] == []
    reasons = {Path(s["path"]).name: s["reason"] for s in data["skipped"]}
    assert "size or modified time" in reasons["img_1_edit.png"] and "content changed" in reasons["img_0.png"]
    assert _hashes(root) == before


def test_a_chained_member_is_not_acted_on(tmp_path):
    """A ~ B and B ~ C pass, A ~ C does not: with C the keeper, B may go, A must stay."""
    from lookalike.actions import make_plan
    from lookalike.datasets import write_spark_output
    from lookalike.dupes import review_groups

    col = Collection.create(tmp_path / "db")
    m = col.manifest
    theta = np.arccos(0.95)
    vecs = np.zeros((3, m["dim"]), np.float32)
    for i in range(3):  # in one plane: cos(A, B) = cos(B, C) = 0.95, cos(A, C) = cos(2 theta) = 0.805
        vecs[i, 0], vecs[i, 1] = np.cos(i * theta), np.sin(i * theta)
    files = [str(tmp_path / f"img_{i}.jpg") for i in range(3)]
    src = write_spark_output(tmp_path / "emb", 3, vectors=vecs, paths=files,
                             info={"encoder": m["encoder"], "weights_sha256": m["weights_sha256"], "dim": m["dim"],
                                   "flip_average": False})
    col.import_parquet(src)
    (group,) = review_groups(col, 0.9)
    roles = {Path(mb.path).name: (mb.role, round(mb.score, 3)) for mb in group.members}
    assert roles == {"img_2.jpg": ("keep", 1.0), "img_1.jpg": ("act", 0.95), "img_0.jpg": ("chained", 0.805)}
    assert [s.path for s in make_plan(col, [group], "trash").steps] == [files[1]]
    plan = json.loads(_cli("dupes", "--db", tmp_path / "db", "--threshold", "0.9", "--apply", "trash", "--format",
                           "json"))
    assert [s["path"] for s in plan["steps"]] == [files[1]] and plan["files"] == 1


def test_not_duplicates_remembered_across_reindex(photos):
    root, db = photos
    near = _groups(db, "--tier", "near")[0]
    out = runner.invoke(app, ["dupes", "--db", str(db), "--threshold", "0.9", "--format", "json",
                              "--ignore", ",".join(str(i) for i in near["ids"])])
    assert out.exit_code == 0 and "remembered" in out.stderr
    assert [g["tier"] for g in json.loads(out.stdout)["groups"]] == ["exact"]
    assert (db / "decisions.json").exists()
    _cli("index", root, "--db", db, "--rebuild")  # new ids; the decision is keyed by content
    assert [g["tier"] for g in _groups(db)] == ["exact"]
    exact = _groups(db)[0]
    _cli("dupes", "--db", db, "--ignore", exact["ids"][0], "--ignore", exact["ids"][1])
    assert _groups(db) == [], "byte-identical copies marked as meant to be there"


def test_against_gives_groups(photos, tmp_path):
    root, db = photos
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(root / "a" / "img_2.png", other / "mine.png")
    db2 = tmp_path / "db2"
    _cli("index", other, "--db", db2)
    groups = _groups(db2, "--against", db)
    assert len(groups) == 1 and groups[0]["tier"] == "exact"
    roles = {Path(m["path"]).name: (m["role"], m["in_other"]) for m in groups[0]["members"]}
    assert roles == {"mine.png": ("act", False), "img_2.png": ("keep", True)}
    _cli("dupes", "--db", db2, "--against", db, "--apply", "trash", "--yes")
    assert not (other / "mine.png").exists() and (root / "a" / "img_2.png").exists()
    _cli("undo", "--db", db2)
    assert (other / "mine.png").exists()


KILL_SCRIPT = """
import os, sys, time
for name in ("link", "unlink", "fsync", "rename", "symlink"):
    def slow(*a, _f=getattr(os, name), **k):
        time.sleep(0.002)
        return _f(*a, **k)
    setattr(os, name, slow)
from lookalike.cli import app
sys.argv = ["lookalike"] + sys.argv[1:]
app()
"""


def test_sigkill_during_move_then_undo_restores_every_file(tmp_path):
    """60 moves killed at seeded moments (between journal lines, inside a move); undo restores all."""
    root = tmp_path / "photos"
    for i in range(20):
        (root / "orig").mkdir(parents=True, exist_ok=True)
        synthetic_image(100 + i, size=(64, 48)).save(root / "orig" / f"p{i:02d}.png")
        for c in range(3):
            (root / f"copy{c}").mkdir(exist_ok=True)
            shutil.copy(root / "orig" / f"p{i:02d}.png", root / f"copy{c}" / f"p{i:02d}.png")
    db, target = tmp_path / "db", tmp_path / "moved"
    _cli("index", root, "--db", db)
    before = _hashes(root)
    assert len(before) == 80
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    cmd = [sys.executable, "-c", KILL_SCRIPT, "dupes", "--db", str(db), "--tier", "exact", "--keep",
           "shortest-path", "--apply", "move", "--to", str(target), "--yes"]
    rng = np.random.default_rng(0)
    # journal lines: begin, then intent + done per file, end (122): kill after line k; after 122 the
    # collection is being re-pointed to the moved files
    moments = sorted(rng.integers(1, 121, 3).tolist()) + [122]
    for k in moments:
        known = set((db / "journal").glob("*.jsonl")) if (db / "journal").exists() else set()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def journal_lines(known=known) -> int:
            new = set((db / "journal").glob("*.jsonl")) - known if (db / "journal").exists() else set()
            return next(iter(new)).read_bytes().count(b"\n") if new else 0

        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline and journal_lines() < k:
            time.sleep(0.0005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        lines = journal_lines()
        assert lines >= k, f"stopped at journal line {lines}, wanted {k}: {proc.stderr.read()[-2000:]}"
        moved = [p for p in target.rglob("*") if p.is_file()] if target.exists() else []
        assert len(moved) <= 60 and len(moved) + len(_hashes(root)) >= 80  # never a file lost, even mid-move
        out = _cli("undo", "--db", db)
        assert "restored" in out
        assert _hashes(root) == before, f"after a kill at journal line {k}"
        assert not target.exists() or not any(p.is_file() for p in target.rglob("*"))
    # the run to its end, then undo
    _cli("dupes", "--db", db, "--tier", "exact", "--keep", "shortest-path", "--apply", "move", "--to", target,
         "--yes")
    assert len([p for p in target.rglob("*") if p.is_file()]) == 60 and len(_hashes(root)) == 20
    _cli("undo", "--db", db)
    assert _hashes(root) == before
    assert sorted(Collection.open(db).paths) == sorted(str(root / p) for p in before)


class _Killed(BaseException):
    """Stands for a SIGKILL at one point of a run (nothing after it runs)."""


@pytest.mark.parametrize("action,step", [("trash", "rename"), ("hardlink", "link"), ("symlink", "symlink"),
                                         ("hardlink", "fsync")])
def test_a_run_stopped_between_its_steps_is_undone(photos, monkeypatch, action, step):
    """Stopped after the trash name was reserved, or after the original went to the trash but before the link."""
    import lookalike.actions as actions
    from lookalike.dupes import review_groups

    root, db = photos
    before = _hashes(root)
    col = Collection.open(db)
    plan = actions.make_plan(col, review_groups(col, 0.9, tier="exact"), action)
    real, calls = getattr(os, step), []

    def stop(*a, **k):
        calls.append(a)
        # fsync: the journal folder, begin, intent, .trashinfo, the trash folder, then the original's folder
        if step != "fsync" or len(calls) == 6:
            raise _Killed
        return real(*a, **k)

    monkeypatch.setattr(os, step, stop)
    with pytest.raises(_Killed):
        actions.apply_plan(col, plan)
    monkeypatch.setattr(os, step, real)
    assert ("0" if step == "rename" else "1") + " files restored" in _cli("undo", "--db", db)
    assert _hashes(root) == before and not (root / "backup" / "img_0.png").is_symlink()
    trash = Path(os.environ["XDG_DATA_HOME"]) / "Trash"
    assert not any((trash / "files").iterdir()) and not any((trash / "info").iterdir())


def test_move_to_another_file_system_copies_then_undo(photos, tmp_path, monkeypatch):
    """Where a hard link cannot be made (another file system: EXDEV) a move copies, keeps the mtime, then unlinks."""
    import errno

    root, db = photos
    before = _hashes(root)
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}

    def no_link(*a, **k):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    _cli("dupes", "--db", db, "--threshold", "0.9", "--apply", "move", "--to", tmp_path / "out", "--yes")
    copy = root / "backup" / "img_0.png"
    assert not copy.exists() and (tmp_path / "out" / "backup" / "img_0.png").stat().st_mtime_ns == mtimes[copy]
    _cli("undo", "--db", db)
    assert _hashes(root) == before and {p: p.stat().st_mtime_ns for p in mtimes} == mtimes


def test_undo_after_a_journal_line_cut_by_a_kill(photos):
    root, db = photos
    before = _hashes(root)
    _cli("dupes", "--db", db, "--threshold", "0.9", "--tier", "exact", "--apply", "trash", "--yes")
    (journal,) = (db / "journal").glob("*.jsonl")
    with open(journal, "ab") as f:
        f.write(b'{"n": 7, "op": "int')  # killed mid-write: that action never started
    assert "1 files restored" in _cli("undo", "--db", db)
    assert _hashes(root) == before and "undone" in _cli("undo", "--db", db, "--list")
