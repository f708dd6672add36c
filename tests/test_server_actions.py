"""The acting endpoints: who may act (token, read-only, fixed target), what is accepted, journal and undo."""

import hashlib
import os
import time

import pytest
from fastapi.testclient import TestClient

from lookalike import Collection, actions
from lookalike.server import ServeError, create_app
from lookalike.server.run import resolve_token

TOKEN = "s3cret-token-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MUTATING = ["/api/actions/plan", "/api/actions/apply", "/api/actions/undo", "/api/actions/ignore"]


def _tree(folder) -> dict:
    """Every file under ``folder`` with its content hash (what "nothing on disk changed" compares)."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(dirpath, f)
            out[p] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def _groups(c, threshold=0.88):
    deadline = time.time() + 30
    while True:
        r = c.get(f"/api/duplicates?threshold={threshold}")
        if r.status_code != 202:
            assert r.status_code == 200, r.text
            return r.json()["groups"]
        assert time.time() < deadline
        time.sleep(0.05)


def _choice(g):
    return {"keeper": g["keeper"], "act": [m["id"] for m in g["members"] if not m["keeper"]]}


@pytest.fixture
def acting(dup_db, tmp_path):
    app = create_app(dup_db, token=TOKEN, move_to=tmp_path / "moved", check_interval=0.05)
    with TestClient(app) as c:
        yield c, dup_db, tmp_path


def test_without_a_token_or_with_a_wrong_one_nothing_changes(acting):
    c, db, tmp = acting
    before = _tree(tmp)
    g = _groups(c)[0]
    body = {"groups": [_choice(g)], "threshold": 0.88}
    bodies = {"/api/actions/plan": body, "/api/actions/apply": body, "/api/actions/undo": {},
              "/api/actions/ignore": {"ids": [g["keeper"], _choice(g)["act"][0]]}}
    for url in MUTATING:
        assert c.post(url, json=bodies[url]).status_code == 401, url
        r = c.post(url, json=bodies[url], headers={"Authorization": "Bearer wrong-token"})
        assert r.status_code == 403 and "Wrong token" in r.json()["detail"], url
        assert c.post(url, json=bodies[url], headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401, url
        assert c.post(url, json=bodies[url], headers={"Cookie": f"token={TOKEN}"}).status_code == 401, url
    assert _tree(tmp) == before and not (tmp / "moved").exists()
    assert not (db / "decisions.json").exists()


@pytest.mark.parametrize("body", [
    {"groups": [{"keeper": 0, "act": ["../../etc/passwd"]}]},
    {"groups": [{"keeper": "../photos/dogs/img_00.png", "act": [1]}]},
    {"groups": [{"keeper": 0, "act": [10**6]}]},  # not an id of this collection
    {"groups": [{"keeper": 0, "act": [0]}]},  # the keeper as its own member
    {"groups": [{"keeper": 0, "act": [1]}], "to": "/tmp/elsewhere"},  # the target is fixed at start
    {"groups": [{"keeper": 0, "act": [1]}], "move_to": "/tmp/elsewhere"},
    {"groups": [{"keeper": 0, "act": [1], "path": "/etc/passwd"}]},
    {"groups": [{"keeper": 0, "act": [1.5]}]},
    {"groups": [{"keeper": True, "act": [1]}]},
    {"groups": [], "all": False},
    {"action": "delete", "groups": [{"keeper": 0, "act": [1]}]},
])
def test_traversal_and_foreign_ids_are_refused(acting, body):
    c, _, tmp = acting
    before = _tree(tmp)
    for url in ("/api/actions/plan", "/api/actions/apply"):
        r = c.post(url, json=body, headers=AUTH)
        assert r.status_code == 422, (url, r.text)
    assert _tree(tmp) == before


def test_undo_and_ignore_refuse_bad_bodies(acting):
    c, db, tmp = acting
    before = _tree(tmp)
    assert c.post("/api/actions/undo", json={"run": "../../manifest"}, headers=AUTH).status_code == 422
    assert c.post("/api/actions/undo", json={}, headers=AUTH).status_code == 409  # nothing to undo yet
    assert c.post("/api/actions/ignore", json={"ids": [0, 10**6]}, headers=AUTH).status_code == 422
    assert c.post("/api/actions/ignore", json={"ids": [0]}, headers=AUTH).status_code == 422
    assert c.post("/api/actions/ignore", json={"ids": ["../x", 1]}, headers=AUTH).status_code == 422
    assert _tree(tmp) == before


def test_an_unrelated_image_is_never_moved(acting):
    """The request names a keeper and an image that is no duplicate of it: the server re-scores and leaves it."""
    c, db, tmp = acting
    col = Collection.open(db, read_only=True)
    import numpy as np

    e = np.asarray(col.embeddings, np.float32)
    b_row = int(np.argmin(e @ e[0]))  # the image least like the first
    a, b = int(col.ids[0]), int(col.ids[b_row])
    r = c.post("/api/actions/plan", json={"groups": [{"keeper": a, "act": [b]}]}, headers=AUTH)
    assert r.status_code == 200 and r.json()["files"] == 0
    assert "below" in r.json()["left_out"][0]["reason"]
    before = _tree(tmp)
    r = c.post("/api/actions/apply", json={"groups": [{"keeper": a, "act": [b]}]}, headers=AUTH)
    assert r.status_code == 200 and r.json()["done"] == [] and "below" in r.json()["skipped"][0]["reason"]
    assert {k: v for k, v in _tree(tmp).items() if "/db/" not in k} == {
        k: v for k, v in before.items() if "/db/" not in k}, "only the journal is written"


def test_plan_apply_undo_through_the_journal(acting):
    c, db, tmp = acting
    photos = tmp / "photos"
    before = _tree(photos)
    groups = _groups(c)
    assert len(groups) == 3
    body = {"groups": [_choice(g) for g in groups[:2]], "threshold": 0.88}
    plan = c.post("/api/actions/plan", json=body, headers=AUTH)
    assert plan.status_code == 200, plan.text
    p = plan.json()
    assert p["files"] == 2 and p["groups"] == 2 and p["bytes"] > 0
    assert all(s["dest"].startswith(str(tmp / "moved")) for s in p["steps"])
    assert _tree(photos) == before, "a plan changes nothing"
    r = c.post("/api/actions/apply", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    done = r.json()
    assert len(done["done"]) == 2 and not done["skipped"]
    assert all(not os.path.exists(p) for p in done["done"])
    assert len(_tree(tmp / "moved")) == 2
    assert actions.runs(db)[-1]["run"] == done["run"], "the same journal as the CLI"
    state = c.get("/api/actions").json()
    assert state["enabled"] and state["runs"][0]["run"] == done["run"] and state["move_to"] == str(tmp / "moved")
    # the server follows the new generation; moved files stay indexed at their new place (as in the CLI), and
    # the review leaves out what is in the --move-to folder already
    assert len(_groups(c)) == 1
    again = c.post("/api/actions/plan", json=body, headers=AUTH).json()
    assert again["files"] == 0 and sum("already in the --move-to" in x["reason"] for x in again["left_out"]) == 2
    u = c.post("/api/actions/undo", json={"run": done["run"]}, headers=AUTH)
    assert u.status_code == 200 and sorted(u.json()["done"]) == sorted(done["done"])
    assert _tree(photos) == before
    assert not any(m["path"].startswith(str(tmp / "moved")) for g in _groups(c) for m in g["members"])


def test_apply_all_suggested_keepers(acting):
    c, db, tmp = acting
    _groups(c)
    p = c.post("/api/actions/plan", json={"all": True, "threshold": 0.88}, headers=AUTH).json()
    assert p["files"] == 3 and p["groups"] == 3
    r = c.post("/api/actions/apply", json={"all": True, "threshold": 0.88}, headers=AUTH)
    assert r.status_code == 200 and len(r.json()["done"]) == 3
    assert c.post("/api/actions/undo", json={}, headers=AUTH).status_code == 200


def test_ignore_is_remembered_and_respected(acting):
    c, db, tmp = acting
    g = _groups(c)[0]
    r = c.post("/api/actions/ignore", json={"ids": [m["id"] for m in g["members"]]}, headers=AUTH)
    assert r.status_code == 200 and r.json()["images"] == 2
    assert actions.load_decisions(db)
    assert g["keeper"] not in [x["keeper"] for x in _groups(c)] and len(_groups(c)) == 2


def test_read_only_and_no_token_and_no_target(dup_db, tmp_path):
    before = _tree(tmp_path)
    body = {"groups": [{"keeper": 0, "act": [1]}]}
    for kwargs in ({"token": TOKEN, "read_only": True, "move_to": tmp_path / "moved"},
                   {"token": None, "move_to": tmp_path / "moved"}):
        with TestClient(create_app(dup_db, **kwargs)) as c:
            assert c.get("/api/actions").json()["enabled"] is False
            for url in MUTATING:
                r = c.post(url, json=body, headers=AUTH)
                assert r.status_code == 403 and "Actions are off" in r.json()["detail"], (kwargs, url, r.text)
    with TestClient(create_app(dup_db, token=TOKEN)) as c:  # no --move-to: moves off, undo still possible
        r = c.post("/api/actions/apply", json=body, headers=AUTH)
        assert r.status_code == 403 and "--move-to" in r.json()["detail"]
    assert _tree(tmp_path) == before
    with pytest.raises(ValueError, match="inside the collection"):
        create_app(dup_db, token=TOKEN, move_to=dup_db / "x")


def test_token_rules(monkeypatch):
    monkeypatch.delenv("LOOKALIKE_TOKEN", raising=False)
    token, generated = resolve_token(None, "127.0.0.1", False)
    assert generated and len(token) >= 40
    with pytest.raises(ServeError, match="--token"):
        resolve_token(None, "0.0.0.0", False)
    assert resolve_token(None, "0.0.0.0", True) == (None, False)  # read-only needs none
    assert resolve_token(TOKEN, "0.0.0.0", False) == (TOKEN, False)
    with pytest.raises(ServeError, match="at least 16"):
        resolve_token("short", "127.0.0.1", False)
    monkeypatch.setenv("LOOKALIKE_TOKEN", TOKEN)
    assert resolve_token(None, "10.0.0.1", False) == (TOKEN, False)


def test_ten_thousand_groups_page_quickly(acting):
    """The review asks 20 groups at a time: a page of 10,000 groups costs what a page of 3 does."""
    c, db, tmp = acting
    _groups(c)
    app = c.app
    job = next(iter(app.state.dupes._jobs.values()))
    job.groups = job.groups * 3334  # 10,002 groups (the same three, over and over)
    t0 = time.perf_counter()
    r = c.get("/api/duplicates?threshold=0.88&offset=9980&limit=20")
    took = time.perf_counter() - t0
    assert r.status_code == 200 and r.json()["total_groups"] == 10_002 and len(r.json()["groups"]) == 20
    assert took < 2.0, f"a page took {took:.2f} s"


def test_lookalike_undo_undoes_a_run_of_the_page(acting):
    """One journal: a run made through the server is listed and undone by the CLI."""
    from typer.testing import CliRunner

    from lookalike.cli import app as cli

    c, db, tmp = acting
    before = _tree(tmp / "photos")
    r = c.post("/api/actions/apply", json={"all": True, "threshold": 0.88}, headers=AUTH) if _groups(c) else None
    assert r.status_code == 200 and len(r.json()["done"]) == 3
    listed = CliRunner().invoke(cli, ["undo", "--db", str(db), "--list"])
    assert listed.exit_code == 0 and r.json()["run"] in listed.output
    res = CliRunner().invoke(cli, ["undo", "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert _tree(tmp / "photos") == before


@pytest.fixture
def hard(tmp_path):
    """A server over real photos and two hard copies of one scoring below the threshold (tests/test_server.py)."""
    from conftest import hard_copy_db

    db, group = hard_copy_db(tmp_path)
    app = create_app(db, token=TOKEN, move_to=tmp_path / "moved", check_interval=0.05)
    with TestClient(app) as c:
        col = Collection.open(db, read_only=True)
        by_name = {p.rsplit("/", 1)[1]: int(i) for i, p in zip(col.ids, col.paths)}
        yield c, db, tmp_path, {n: by_name[n] for n in group}


def test_verified_members_of_the_page_are_moved(hard):
    c, db, tmp, ids = hard
    (g,) = _groups(c)
    assert sorted(m["id"] for m in g["members"]) == sorted(ids.values())
    assert g["keeper"] == ids["copy_rotate_20.jpg"] and all(m["verified"] for m in g["members"] if not m["keeper"])
    body = {"groups": [_choice(g)], "threshold": 0.88}
    p = c.post("/api/actions/plan", json=body, headers=AUTH).json()
    assert (p["files"], p["left_out"]) == (2, [])
    assert c.post("/api/actions/plan", json={"all": True, "threshold": 0.88}, headers=AUTH).json()["files"] == 2
    r = c.post("/api/actions/apply", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    moved = sorted(os.path.basename(p) for p in r.json()["done"])
    assert moved == sorted(n for n in ids if n != "copy_rotate_20.jpg") and not r.json()["skipped"]
    assert sorted(os.path.basename(p) for p in _tree(tmp / "moved")) == moved
    assert c.post("/api/actions/undo", json={}, headers=AUTH).status_code == 200
    assert not _tree(tmp / "moved")


def test_a_member_below_the_threshold_is_verified_when_asked_and_not_duplicates_never_acts(hard):
    """No search ran: the server checks each member below the threshold against its keeper itself."""
    c, db, tmp, ids = hard
    keeper = ids["copy_rotate_20.jpg"]
    others = sorted(i for i in ids.values() if i != keeper)
    body = {"groups": [{"keeper": keeper, "act": others}], "threshold": 0.88}
    assert c.post("/api/actions/plan", json=body, headers=AUTH).json()["files"] == 2
    r = c.post("/api/actions/ignore", json={"ids": [keeper, ids["copy_watermark.jpg"]]}, headers=AUTH)
    assert r.status_code == 200
    p = c.post("/api/actions/plan", json=body, headers=AUTH).json()
    assert p["files"] == 1 and os.path.basename(p["steps"][0]["path"]) != "copy_watermark.jpg"
    assert [x["reason"] for x in p["left_out"]] == ["marked not duplicates with its keeper"]


def test_without_verification_members_below_the_threshold_stay(hard, monkeypatch):
    from lookalike import verify as vf

    c, db, tmp, ids = hard
    monkeypatch.setattr(vf, "AUTO_MAX_IMAGES", 6)  # the collection has 7 images: "auto" is off
    assert _groups(c) == []
    keeper = ids["copy_rotate_20.jpg"]
    body = {"groups": [{"keeper": keeper, "act": sorted(i for i in ids.values() if i != keeper)}], "threshold": 0.88}
    p = c.post("/api/actions/plan", json=body, headers=AUTH).json()
    assert p["files"] == 0 and len(p["left_out"]) == 2 and all("below 0.88" in x["reason"] for x in p["left_out"])
    r = c.post("/api/actions/apply", json=body, headers=AUTH)
    assert r.status_code == 200 and r.json()["done"] == [] and not (tmp / "moved").exists()
