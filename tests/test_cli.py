import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import leave_one_out, synthetic_image
from PIL import Image
from typer.testing import CliRunner

from lookalike.cli import app

runner = CliRunner()


@pytest.fixture
def db(tmp_path, image_folder):
    (image_folder / "bad.jpg").write_text("nope")
    res = runner.invoke(app, ["index", str(image_folder), "--db", str(tmp_path / "db")])
    assert res.exit_code == 0, res.output
    assert "12 images" in res.output and "1 skipped" in res.output and "not an image" in res.output
    return tmp_path / "db"


def test_search_piped_prints_one_record_per_line_and_leaves_the_query_out(db, image_folder):
    q = image_folder / "cats" / "img_01.jpg"
    res = runner.invoke(app, ["search", str(q), "--db", str(db), "-k", "3"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert len(lines) == 3 and all(len(line.split("\t")) == 4 for line in lines)
    assert [line.split("\t")[0] for line in lines] == ["1", "2", "3"]
    assert str(q) not in res.output, "an indexed query is left out of its own results"
    assert all(line.split("\t")[3].startswith(str(image_folder)) for line in lines), "paths are whole"
    res = runner.invoke(app, ["search", str(q), "--db", str(db), "-k", "3", "--include-self"])
    assert res.output.splitlines()[0].split("\t")[3] == str(q)
    assert float(res.output.splitlines()[0].split("\t")[1]) >= 0.999  # itself (float16 storage)


def test_search_in_an_80_column_terminal_never_breaks_a_path(db, image_folder, tmp_path):
    import os
    import pty

    q = image_folder / "cats" / "img_01.jpg"
    pid, fd = pty.fork()
    if pid == 0:  # the child: lookalike with its stdout on an 80-column terminal
        os.environ.update(COLUMNS="80", LINES="40")
        os.execv(sys.executable, [sys.executable, "-m", "lookalike", "search", str(q), "--db", str(db), "-k", "3"])
    chunks = []
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.waitpid(pid, 0)
    text = b"".join(chunks).decode()
    import re

    paths = [line.split()[-1] for line in text.splitlines() if re.match(r"^\d+\s+\d\.\d{4}\s", line)]
    assert len(paths) == 3 and all(p.startswith(str(image_folder)) and p.endswith(".jpg") for p in paths), text


def test_search_json_and_paths(db, image_folder):
    q = image_folder / "cats" / "img_01.jpg"
    res = runner.invoke(app, ["search", str(q), "--db", str(db), "-k", "4", "--json"])
    data = json.loads(res.output)
    assert [r["rank"] for r in data["results"]] == [1, 2, 3, 4]
    assert str(q) not in [r["path"] for r in data["results"]]
    assert set(data["results"][0]) == {"rank", "score", "id", "path", "label"}
    assert all(r["score"] == round(r["score"], 6) for r in data["results"])
    from lookalike import Collection  # the same four, by exact cosine against the stored vectors

    col = Collection.open(db, read_only=True)
    vectors, paths = np.asarray(col.embeddings, np.float32), col.paths
    cosine = vectors @ vectors[paths.index(str(q))]
    cosine[paths.index(str(q))] = -np.inf
    top = np.argsort(-cosine)[:4]
    assert [r["path"] for r in data["results"]] == [paths[i] for i in top]
    assert [r["score"] for r in data["results"]] == pytest.approx(cosine[top].tolist(), abs=2e-3)
    res = runner.invoke(app, ["search", str(q), "--db", str(db), "-k", "2", "--paths", "--include-self"])
    assert res.output.splitlines()[0] == str(q) and len(res.output.splitlines()) == 2
    res = runner.invoke(app, ["search", str(q), "--db", str(db), "--paths", "--json"])
    assert res.exit_code == 1 and "exclude each other" in res.output


def test_search_with_a_folder_of_queries_draws_one_grid_each(db, image_folder, tmp_path):
    res = runner.invoke(app, ["search", str(image_folder / "cats"), "--db", str(db), "-k", "2", "--grid",
                              str(tmp_path / "g.png")])
    assert res.exit_code == 0, res.output
    grids = sorted(tmp_path.glob("g-*.png"))
    assert len(grids) == 6 and Image.open(grids[0]).width > 2 * 150


def test_search_grid_png(db, image_folder, tmp_path):
    q = image_folder / "dogs" / "img_00.png"
    out = tmp_path / "grid.png"
    res = runner.invoke(app, ["search", str(q), "--db", str(db), "-k", "5", "--grid", str(out)])
    assert res.exit_code == 0, res.output
    im = Image.open(out)
    assert im.width > 5 * 200 and im.height > 200


def test_info_and_errors(db):
    res = runner.invoke(app, ["info", "--db", str(db), "--errors", "--json"])
    data = json.loads(res.output)
    assert data["images"] == 12 and data["skipped"] == 1
    assert "not an image" in data["skipped_files"][0]["reason"]
    assert data["engine"] == "onnx-int8" and data["int8_calibration"] == "shared"  # the default of new collections


def test_info_names_a_float_engine_without_int8_calibration(tmp_path, image_folder):
    res = runner.invoke(app, ["index", str(image_folder), "--db", str(tmp_path / "f"), "--engine", "onnx"])
    assert res.exit_code == 0, res.output
    data = json.loads(runner.invoke(app, ["info", "--db", str(tmp_path / "f"), "--json"]).output)
    assert data["engine"] == "onnx" and data["int8_calibration"] is None


def test_index_json_report(tmp_path, image_folder):
    res = runner.invoke(app, ["index", str(image_folder), "--db", str(tmp_path / "d2"), "--json"])
    data = json.loads(res.output)
    assert data["added"] == 12 and set(data["seconds"]) >= {"discover", "decode_cpu", "encode", "write", "total"}


def test_errors_are_friendly(tmp_path, db):
    res = runner.invoke(app, ["search", str(tmp_path / "missing.jpg"), "--db", str(db)])
    assert res.exit_code == 1 and "No such query image" in res.output
    q = next((db.parent / "photos" / "cats").glob("*.jpg"))
    res = runner.invoke(app, ["search", str(q), "--db", str(tmp_path / "nodb")])
    assert res.exit_code == 1 and "No collection" in res.output
    res = runner.invoke(app, ["index", str(tmp_path / "nowhere"), "--db", str(db)])
    assert res.exit_code == 1 and "No such folder" in res.output


def test_console_script_runs(tmp_path):
    res = subprocess.run([sys.executable, "-m", "lookalike", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "index" in res.stdout and "search" in res.stdout


def test_index_with_lsh_prints_recall_and_search_modes(tmp_path, image_folder):
    db = tmp_path / "db"
    res = runner.invoke(app, ["index", str(image_folder), "--db", str(db), "--lsh"])
    assert res.exit_code == 0, res.output
    assert "measured recall@10" in res.output
    q = str(image_folder / "cats" / "img_01.jpg")
    for flag, method in (("--lsh", "lsh"), ("--exact", "exact")):
        res = runner.invoke(app, ["search", q, "--db", str(db), "-k", "3", flag, "--json", "--include-self"])
        data = json.loads(res.output)
        assert data["method"] == method and data["results"][0]["path"] == q
    res = runner.invoke(app, ["info", "--db", str(db), "--json"])
    info = json.loads(res.output)
    assert info["lsh"]["recall"] == 1.0  # 12 images: scanned exactly
    assert info["lsh"]["family"] == "hyperplane" and info["lsh"]["indexed_segments"] == 0  # too small to hash
    assert info["images"] == 12 and info["search_method"] == "exact"  # LSH only from 5,000 images on
    assert info["profile"] == "balanced" and info["views"] == ["crop", "full"] and info["dba"] is None
    assert info["rotations"] == []  # off unless turned on


def test_eval_command(tmp_path, image_folder):
    db = str(tmp_path / "db")
    assert runner.invoke(app, ["index", str(image_folder), "--db", db, "--lsh"]).exit_code == 0
    out = tmp_path / "eval.json"
    res = runner.invoke(app, ["eval", "--db", db, "-k", "3", "--near-dup", "4", "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    from lookalike import Collection
    from lookalike.evaluate import near_duplicate_robustness

    col = Collection.open(db, read_only=True)
    p1, pk, mean_ap = leave_one_out(np.asarray(col.embeddings, np.float32), col.labels, k=3)
    cr = data["class_retrieval"]
    assert cr["n"] == 12 and cr["k"] == 3
    assert (cr["p_at_1"], cr["p_at_k"], cr["map"]) == pytest.approx((p1, pk, mean_ap), abs=1e-6)
    nd = data["near_duplicates"]
    assert nd["originals"] == 4 and set(nd["edits"]) >= {"crop", "jpeg_q30", "flip", "text_overlay"}
    again = near_duplicate_robustness(col, n_originals=4, seed=0, k=3)  # the same seeded edits, the library's way
    assert nd["group_map"] == pytest.approx(again["group_map"], abs=1e-4) and nd["found"] == again["found"]
    assert {e: (v["recall_at_1"], v["recall_at_3"]) for e, v in nd["edits"].items()} == {
        e: (v["recall_at_1"], v["recall_at_3"]) for e, v in again["edits"].items()}
    assert nd["edits"]["flip"]["recall_at_1"] == 1.0 and nd["edits"]["gamma"]["recall_at_1"] == 1.0
    assert data["lsh"] == {"recall_at_k": 1.0, "candidates": 12.0, "k": 3}  # 12 images: every one scanned exactly


def test_search_with_a_folder_of_queries(db, image_folder, tmp_path):
    qdir = tmp_path / "queries"
    qdir.mkdir()
    Image.open(image_folder / "cats" / "img_01.jpg").save(qdir / "a.png")
    (qdir / "broken.jpg").write_text("nope")
    res = runner.invoke(app, ["search", str(qdir), "--db", str(db), "-k", "2", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    by_name = {q["query"].rsplit("/", 1)[1]: q for q in data["queries"]}
    assert by_name["a.png"]["results"][0]["path"].endswith("img_01.jpg")
    assert by_name["broken.jpg"]["results"] is None and "not an image" in by_name["broken.jpg"]["error"]
    res = runner.invoke(app, ["search", str(qdir), "--db", str(db), "-k", "2", "--paths"])
    assert len(res.output.strip().splitlines()) == 2


def test_map_png(db, tmp_path):
    out = tmp_path / "map.png"
    res = runner.invoke(app, ["map", str(out), "--db", str(db), "--size", "600"])
    assert res.exit_code == 0, res.output
    width, height = Image.open(out).size
    assert height == 600 and 600 < width < 600 + 260  # two labels: a legend as wide as its entries


def test_index_dba_then_search_and_eval(tmp_path, image_folder):
    db = str(tmp_path / "db")
    res = runner.invoke(app, ["index", str(image_folder), "--db", db, "--dba", "3", "--lsh"])
    assert res.exit_code == 0, res.output
    from lookalike import Collection

    col = Collection.open(db)
    assert col.manifest["dba"]["n"] == 3 and col.lsh is not None and col.resolve_method("auto") == "exact"
    res = runner.invoke(app, ["search", str(image_folder / "dogs" / "img_04.jpg"), "--db", db, "-k", "3",
                              "--expand", "2", "--json"])
    assert res.exit_code == 0, res.output
    hits = json.loads(res.output)["results"]
    assert [h["rank"] for h in hits] == [1, 2, 3] and not any(h["path"].endswith("img_04.jpg") for h in hits)
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    out = tmp_path / "e.json"
    res = runner.invoke(app, ["eval", "--db", db, "-k", "3", "--near-dup", "0", "--expand", "2", "--dba", "3",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    from lookalike.evaluate import class_retrieval

    expected = class_retrieval(np.asarray(col.embeddings), col.labels, k=3, expand=2, dba=3)  # raw vectors
    assert data["class_retrieval_dba"] == pytest.approx(expected, abs=1e-6)
    assert data["class_retrieval_expanded"] == pytest.approx(class_retrieval(np.asarray(col.embeddings), col.labels,
                                                                             k=3, expand=2), abs=1e-6)
    # re-indexing a changed folder refreshes the augmented vectors (setting kept)
    synthetic_image(77).save(image_folder / "cats" / "extra.png")
    assert runner.invoke(app, ["index", str(image_folder), "--db", db]).exit_code == 0
    col = Collection.open(db)
    assert not col.dba_stale and len(col.search_matrix) == 13


def test_first_hour_small_things(tmp_path, image_folder, db):
    """Issue 16, item 7: each of these was seen by a new user."""
    # a failed --encoder run leaves no empty db folder behind
    bad = tmp_path / "bad-db"
    res = runner.invoke(app, ["index", str(image_folder), "--db", str(bad), "--encoder", "no-such-encoder"])
    assert res.exit_code == 1 and not bad.exists()
    # info prints values, not Python reprs; --errors says when there are none
    res = runner.invoke(app, ["info", "--db", str(db)])
    assert res.exit_code == 0 and "None" not in res.output and "['" not in res.output
    assert "lsh: none" in res.output
    clean = tmp_path / "clean"
    assert runner.invoke(app, ["index", str(image_folder / "cats"), "--db", str(clean)]).exit_code == 0
    res = runner.invoke(app, ["info", "--db", str(clean), "--errors"])
    assert "no skipped files" in res.output
    # help shows a flag as a flag, without a <bool> type
    res = runner.invoke(app, ["dupes", "--help"], env={"COLUMNS": "120"})
    assert "--strict" in res.output and "<bool>" not in res.output


def test_dupes_groups_strongest_first_one_record_per_line_when_piped(tmp_path, image_folder):
    for i, q in ((1, 95), (2, 30)):  # two copies: a light and a heavy recompression
        from PIL import Image

        Image.open(image_folder / "dogs" / f"img_{2 * i:02d}.jpg").save(image_folder / f"copy{i}.jpg", quality=q)
    db = tmp_path / "db"
    assert runner.invoke(app, ["index", str(image_folder), "--db", str(db)]).exit_code == 0
    res = runner.invoke(app, ["dupes", "--db", str(db), "--threshold", "0.8"])
    assert res.exit_code == 0, res.output
    lines = [line.split("\t") for line in res.stdout.splitlines()]
    assert lines and all(len(f) == len(lines[0]) for f in lines), "one record per line"
    from lookalike import Collection

    groups = Collection.open(db).duplicates(0.8)
    assert [g.min_score for g in groups] == sorted((g.min_score for g in groups), reverse=True)


def test_cli_default_db_is_the_library_default():
    """The CLI keeps its own copy (help must not load the collection code): the two must agree."""
    from pathlib import Path

    from lookalike.cli.options import DEFAULT_DB
    from lookalike.collection import DEFAULT_DB as LIBRARY_DEFAULT_DB

    assert DEFAULT_DB == Path(LIBRARY_DEFAULT_DB)


def test_ctrl_c_exits_130_saying_what_was_kept(tmp_path, image_folder, monkeypatch):
    from lookalike import Collection

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Collection, "index", interrupted)
    res = runner.invoke(app, ["index", str(image_folder), "--db", str(tmp_path / "db")])
    assert res.exit_code == 130 and "interrupted: the images embedded so far are saved" in res.output
    assert "Traceback" not in res.output


def test_eval_says_when_it_measured_the_default_re_ranking(db, tmp_path, monkeypatch):
    monkeypatch.setattr("lookalike.evaluate.reranks", lambda n: True)  # as for 1,000-20,000 images
    out = tmp_path / "e.json"
    res = runner.invoke(app, ["eval", "--db", str(db), "-k", "3", "--near-dup", "0", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "leave-one-out, re-ranked as search does by default)" in " ".join(res.output.split())
    assert json.loads(out.read_text())["class_retrieval"]["reranked"] is True


def test_help_shows_the_extras_to_install():
    """Rich help reads [torch] as markup: the help texts escape it, so the pip command is shown whole."""
    text = " ".join(runner.invoke(app, ["index", "--help"], env={"COLUMNS": "200"}).output.split())
    assert "pip install 'lookalike[lite2]'" in text and "pip install 'lookalike[torch]'" in text
