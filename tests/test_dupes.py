import json

import numpy as np
import pytest
from conftest import hard_copy_db, real_photo
from PIL import Image
from typer.testing import CliRunner

from lookalike import Collection
from lookalike.cli import app
from lookalike.dupes import components, exact_pairs, strict_split


@pytest.fixture
def dup_folder(tmp_path):
    """6 real photos; photos 0-2 each have a 3/4-size, recompressed copy."""
    root = tmp_path / "photos"
    root.mkdir()
    classes = ["accordion", "camera", "pizza", "soccer_ball", "strawberry", "umbrella"]
    for i, cls in enumerate(classes):
        im = Image.open(real_photo(cls)[0]).convert("RGB")
        im.save(root / f"orig_{i}.png")
        if i < 3:
            im.resize((im.width * 3 // 4, im.height * 3 // 4)).save(root / f"copy_{i}.jpg", quality=80)
    return root


def test_groups_pair_each_original_with_its_copy(tmp_path, dup_folder):
    col = Collection.create(tmp_path / "db")
    col.index(dup_folder)
    groups = col.duplicates(threshold=0.85)
    names = sorted(sorted(p.rsplit("/", 1)[1] for p in g.paths) for g in groups)
    assert names == [[f"copy_{i}.jpg", f"orig_{i}.png"] for i in range(3)]
    for g in groups:
        keeper_path = g.paths[g.ids.index(g.keeper)]
        assert "orig_" in keeper_path, "the keeper is the one with most pixels"
        assert g.min_score >= 0.85
    # report only: every file is still there
    assert len(list(dup_folder.iterdir())) == 9


def test_exact_pairs_match_brute_force():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 8)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    a, b, s = exact_pairs(X, 0.8)
    full = X @ X.T
    want = {(i, j) for i, j in zip(*np.nonzero(full >= 0.8)) if i < j}
    assert set(zip(a.tolist(), b.tolist())) == want
    assert np.allclose(s, full[a, b])


def test_lsh_pairs_recall_vs_exact():
    from lookalike.datasets import clustered_vectors
    from lookalike.dupes import lsh_pairs
    from lookalike.lsh import LSHIndex

    X = clustered_vectors(3000, 64, n_clusters=30, intrinsic_dim=8, seed=1)
    index = LSHIndex(target_recall=0.98).fit(X)
    a, b, _ = exact_pairs(X, 0.95)
    la, lb, _ = lsh_pairs(index, lambda i: int(i), 0.95)
    exact = set(zip(a.tolist(), b.tolist()))
    found = set(zip(la.tolist(), lb.tolist()))
    assert found <= exact
    assert len(exact) > 50 and len(found & exact) / len(exact) >= 0.9


def test_components_and_strict_split():
    labels = components(5, np.array([0, 1, 3]), np.array([1, 2, 4]))
    assert labels.tolist() == [0, 0, 0, 3, 3]
    # a chain 1-2-3 where 1-3 fails: strict mode splits it
    edges = {(1, 2): 0.95, (2, 3): 0.95}
    groups = strict_split([1, 2, 3], edges)
    assert all(len(g) == 2 for g in groups) and len(groups) == 1


def test_cli_formats_and_sheet(tmp_path, dup_folder):
    runner = CliRunner()
    db = str(tmp_path / "db")
    assert runner.invoke(app, ["index", str(dup_folder), "--db", db]).exit_code == 0
    res = runner.invoke(app, ["dupes", "--db", db, "--threshold", "0.85", "--format", "json"])
    data = json.loads(res.output)
    assert len(data["groups"]) == 3 and all(len(g["ids"]) == 2 for g in data["groups"])
    res = runner.invoke(app, ["dupes", "--db", db, "--threshold", "0.85", "--format", "csv"])
    lines = res.output.strip().splitlines()
    assert lines[0].startswith("group,id,path,keeper,min_score,tier,role,score_to_keeper,") and len(lines) == 7
    sheet = tmp_path / "sheet.png"
    res = runner.invoke(app, ["dupes", "--db", db, "--threshold", "0.85", "--sheet", str(sheet)])
    assert res.exit_code == 0 and "3 duplicate groups" in res.output
    assert Image.open(sheet).height >= 3 * 160
    # --against: the copies folder vs the originals' collection
    copies = tmp_path / "copies"
    copies.mkdir()
    for p in dup_folder.glob("copy_*.jpg"):
        p.rename(copies / p.name)
    assert runner.invoke(app, ["index", str(dup_folder), "--db", db]).exit_code == 0  # drops the moved copies
    db2 = str(tmp_path / "db2")
    assert runner.invoke(app, ["index", str(copies), "--db", db2]).exit_code == 0
    res = runner.invoke(app, ["dupes", "--db", db2, "--against", db, "--threshold", "0.85", "--format", "json"])
    groups = json.loads(res.output)["groups"]  # one group per image of db2, its match in db the keeper
    assert len(groups) == 3 and all(g["tier"] == "near" for g in groups)
    for g in groups:
        roles = {m["role"]: m for m in g["members"]}
        assert "copy_" in roles["act"]["path"] and not roles["act"]["in_other"]
        assert "orig_" in roles["keep"]["path"] and roles["keep"]["in_other"]


def test_strict_with_several_groups(tmp_path, dup_folder):
    """--strict used to crash (KeyError) whenever there were two groups or more."""
    runner = CliRunner()
    db = str(tmp_path / "db")
    assert runner.invoke(app, ["index", str(dup_folder), "--db", db]).exit_code == 0
    res = runner.invoke(app, ["dupes", "--db", db, "--threshold", "0.85", "--strict", "--format", "json"])
    assert res.exit_code == 0, res.output
    groups = json.loads(res.output)["groups"]
    assert len(groups) == 3 and all(len(g["ids"]) == 2 for g in groups)
    loose = Collection.open(db).duplicates(0.85)
    assert sorted(g["ids"] for g in groups) == sorted(g.ids for g in loose)


def test_strict_split_ignores_edges_of_other_components():
    edges = {(1, 2): 0.95, (2, 3): 0.95, (1, 3): 0.93, (7, 8): 0.99}
    assert strict_split([1, 2, 3], edges) == [[1, 2, 3]]
    assert strict_split([7, 8], edges) == [[7, 8]]


def _unit(n, d, seed):
    X = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def test_exact_pairs_blocks_on_both_sides_of_a_float16_memmap(tmp_path, monkeypatch):
    import lookalike.pairs as dupes  # where the scans live (lookalike.dupes re-exports them)

    monkeypatch.setattr(dupes, "PAIR_BLOCK_ROWS", 64)
    monkeypatch.setattr(dupes, "PAIR_OTHER_ROWS", 96)
    X = _unit(500, 6, 1)
    path = tmp_path / "x.npy"
    np.save(path, X.astype(np.float16))
    M = np.load(path, mmap_mode="r")  # float16 memmap, as large collections store it
    seen = []
    a, b, s = exact_pairs(M, 0.9, progress=seen.append)
    X16 = np.asarray(M, np.float32)
    full = X16 @ X16.T
    want = {(i, j) for i, j in zip(*np.nonzero(full >= 0.9)) if i < j}
    assert set(zip(a.tolist(), b.tolist())) == want and len(want) > 100
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) > 10
    # between two matrices, also blockwise
    Y = _unit(130, 6, 2)
    a, b, s = exact_pairs(M, 0.9, Y)
    cross = X16 @ Y.T
    assert set(zip(a.tolist(), b.tolist())) == set(zip(*np.nonzero(cross >= 0.9)))


def test_exact_pairs_cap_keeps_the_best(monkeypatch):
    import lookalike.pairs as dupes  # where the scans live (lookalike.dupes re-exports them)

    monkeypatch.setattr(dupes, "PAIR_BLOCK_ROWS", 50)
    monkeypatch.setattr(dupes, "PAIR_OTHER_ROWS", 70)
    X = _unit(400, 4, 3)
    a_all, b_all, s_all = exact_pairs(X, 0.0)
    a, b, s = exact_pairs(X, 0.0, max_pairs=300)
    assert len(s) == 300 and len(s_all) > 10_000
    assert np.isclose(s.min(), np.sort(s_all)[-300])
    found = dupes._exact_scan(X, 0.0, max_pairs=300)
    assert found.truncated and not dupes._exact_scan(X, 0.999, max_pairs=300).truncated


def test_lsh_pairs_in_query_blocks_match_the_self_query(monkeypatch):
    import lookalike.pairs as dupes  # where the scans live (lookalike.dupes re-exports them)
    from lookalike.datasets import clustered_vectors
    from lookalike.lsh import LSHIndex

    monkeypatch.setattr(dupes, "LSH_QUERY_ROWS", 700)
    X = clustered_vectors(3000, 64, n_clusters=30, intrinsic_dim=8, seed=1)
    index = LSHIndex(target_recall=0.98).fit(X)
    a, b, _ = exact_pairs(X, 0.95)
    seen = []
    la, lb, ls = dupes.lsh_pairs(index, lambda i: int(i), 0.95, vectors=X, ids=np.arange(3000), progress=seen.append)
    exact = set(zip(a.tolist(), b.tolist()))
    found = set(zip(la.tolist(), lb.tolist()))
    assert found <= exact and len(found) == len(la)  # each pair once, row a < row b
    assert len(found & exact) / len(exact) >= 0.9
    assert seen[-1] == 1.0 and len(seen) >= 5
    top = dupes.lsh_pairs(index, lambda i: int(i), 0.95, vectors=X, ids=np.arange(3000), max_pairs=50)[2]
    assert len(top) == 50 and np.isclose(top.min(), np.sort(ls)[-50])


def test_one_default_threshold_everywhere():
    """The CLI, the library, the server and the page all use dupes.DEFAULT_THRESHOLD (0.88, calibrated)."""
    import inspect

    import typer

    from lookalike import cli
    from lookalike.collection import Collection
    from lookalike.dupes import DEFAULT_THRESHOLD, review_groups
    from lookalike.server.action_schemas import ActIn

    assert DEFAULT_THRESHOLD == 0.88
    assert inspect.signature(Collection.duplicates).parameters["threshold"].default == DEFAULT_THRESHOLD
    assert inspect.signature(review_groups).parameters["threshold"].default == DEFAULT_THRESHOLD
    assert ActIn.model_fields["threshold"].default == DEFAULT_THRESHOLD
    root = typer.main.get_command(cli.app)
    for command in (root.commands["dupes"], root.commands["spark"].commands["dupes"]):
        option = next(p for p in command.params if p.name == "threshold")
        assert option.default == DEFAULT_THRESHOLD, command.name


def test_merged_scans_keep_each_pair_once_with_its_best_score():
    """Rotations add scans whose pairs may repeat (either order): one row per pair, its best score."""
    from lookalike.pairs import _exact_scan, _TopPairs

    X = _unit(300, 5, 4)
    Y = X[::-1].copy()  # "variants": row i of Y is row 299 - i of X
    found = _TopPairs(0.8, None, symmetric=True)
    _exact_scan(X, 0.8, found=found)
    _exact_scan(Y, 0.8, X, found=found, skip_diagonal=True)
    a, b, s = found.result()
    assert (a < b).all() and len(set(zip(a.tolist(), b.tolist()))) == len(a)
    V = Y @ X.T
    np.fill_diagonal(V, -1)  # an image's variant against itself is no pair
    best = np.maximum(X @ X.T, V)
    best = np.maximum(best, best.T)
    np.fill_diagonal(best, -1)
    want = {(i, j) for i, j in zip(*np.nonzero(best >= 0.8)) if i < j}
    assert set(zip(a.tolist(), b.tolist())) == want
    assert np.allclose(s, best[a, b], atol=1e-6)


def test_dupes_still_exports_its_api():
    """Issue 17 split dupes.py into pairs, grouping and review; ``lookalike.dupes`` keeps every name."""
    import lookalike.dupes as dupes

    for name in dupes.__all__:
        assert hasattr(dupes, name), name
    assert dupes.find_pairs.__module__ == "lookalike.pairs" and dupes.review_groups.__module__ == "lookalike.dupes"


def test_verify_groups_hard_copies_a_threshold_misses(tmp_path):
    """dupes --verify: a watermarked and a 20-degree turned copy score below the threshold; the geometric
    check groups them with their original (acted on), and unrelated photos stay out."""
    from pathlib import Path

    from lookalike.dupes import DEFAULT_THRESHOLD, review_groups

    db, group = hard_copy_db(tmp_path)
    col = Collection.open(db)
    names = [Path(p).name for p in col.paths]
    E = np.asarray(col.embeddings, np.float32)
    o = names.index(group[0])
    for name in group[1:]:  # the copies are below the threshold: a threshold alone misses them
        assert E[o] @ E[names.index(name)] < DEFAULT_THRESHOLD
    assert not any(group[0] in map(lambda m: Path(m).name, g.paths) for g in review_groups(col, verify=False))

    groups = review_groups(col, verify=True)
    assert len(groups) == 1
    g = groups[0]
    assert sorted(Path(p).name for p in g.paths) == group
    assert sorted(m.role for m in g.members) == ["act", "act", "keep"]
    assert sorted((m.role, m.verified) for m in g.members) == [("act", True), ("act", True), ("keep", False)]
    # the default ("auto": OpenCV is installed, 6 images) verifies too
    assert [(x.ids, x.keeper) for x in review_groups(col)] == [(g.ids, g.keeper)]
