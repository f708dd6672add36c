"""Pictures: short names in captions, duplicate sheets sized to their content, the map's colours and labels.

Everything is really drawn (Pillow) and checked by its pixels at known places.
"""

import os

import numpy as np
import pytest
from conftest import synthetic_image
from PIL import Image, ImageDraw

from lookalike import viz
from lookalike.dupes import Group
from lookalike.names import short_names
from lookalike.search import Hit
from lookalike.viz.map import _colour_distance
from lookalike.viz.tiles import _CAPTION, _INK, _KEEP, _PAD, _font, _shorten_name

# --- names -------------------------------------------------------------------------------


def test_short_names_are_folder_and_name_at_least():
    paths = ["/p/cars/image_0001.jpg", "/p/ants/image_0001.jpg", "/p/ants/image_0002.jpg"]
    assert short_names(paths) == ["cars/image_0001.jpg", "ants/image_0001.jpg", "ants/image_0002.jpg"]
    assert short_names(["image_0001.jpg"]) == ["image_0001.jpg"]  # nothing more to show
    assert short_names([]) == []


def test_short_names_go_deeper_only_where_two_share_folder_and_name():
    paths = ["/a/x/cat/1.jpg", "/b/x/cat/1.jpg", "/b/y/cat/2.jpg", "/c/x/dog/1.jpg"]
    assert short_names(paths) == ["a/x/cat/1.jpg", "b/x/cat/1.jpg", "cat/2.jpg", "dog/1.jpg"]
    names = short_names(paths + [paths[0]])  # the same file twice: one name, and it is no longer
    assert names[0] == names[-1] == "a/x/cat/1.jpg"
    assert short_names(["/p/q/1.jpg", "/p/q/1.jpg"]) == ["q/1.jpg", "q/1.jpg"]


def test_short_names_escape_names_that_are_not_utf8():
    latin1 = os.fsdecode(b"/photos/caf\xe9/image_0001.jpg")  # surrogates, as os.listdir gives them
    names = short_names([latin1, "/photos/cafe/image_0001.jpg"])
    assert names == ["caf\\xe9/image_0001.jpg", "cafe/image_0001.jpg"]
    assert all(n.encode("utf-8") for n in names)  # printable and drawable
    with pytest.raises(ValueError, match="at least 1"):
        short_names(["a/b"], min_parts=0)


# --- result grid -------------------------------------------------------------------------


def _same_name_in_two_folders(tmp_path):
    paths = []
    for n, folder in enumerate(["accordion", "airplanes", "accordion"]):
        f = tmp_path / folder / f"image_000{1 + n // 2}.jpg"
        f.parent.mkdir(exist_ok=True)
        synthetic_image(n).save(f)
        paths.append(str(f))
    return paths  # accordion/image_0001.jpg, airplanes/image_0001.jpg, accordion/image_0002.jpg


def _caption_band(line1, line2, side):
    band = Image.new("RGB", (side, _CAPTION), "white")
    viz.draw_caption(ImageDraw.Draw(band), 0, 0, line1, line2, side)
    return np.asarray(band)


def test_grid_names_two_image_0001_apart_and_draws_those_names(tmp_path):
    a1, b1, a2 = _same_name_in_two_folders(tmp_path)
    hits = [Hit(rank=1, score=0.91, id=1, path=b1, label="airplanes"),
            Hit(rank=2, score=0.80, id=2, path=a2, label="accordion")]
    tiles = viz.grid_tiles(a1, hits)
    assert [t.line2 for t in tiles] == ["accordion/image_0001.jpg", "airplanes/image_0001.jpg",
                                        "accordion/image_0002.jpg"]
    out = viz.result_grid(a1, hits, tmp_path / "grid.png", side=160)
    grid = np.asarray(Image.open(out).convert("RGB"))
    for i, t in enumerate(tiles):  # the caption under each thumbnail is exactly those two lines
        x, y = viz.cell_origin(i, len(tiles), 160)
        assert np.array_equal(grid[y + 160 : y + 160 + _CAPTION, x : x + 160], _caption_band(t.line1, t.line2, 160))
    assert not np.array_equal(_caption_band("#1  score 0.910", "image_0001.jpg", 160),
                              _caption_band("#1  score 0.910", "airplanes/image_0001.jpg", 160))


def test_a_long_name_keeps_the_folder_that_tells_it_apart():
    font, name = _font(), "edited/accordion/image_0001.jpg"  # photos/accordion/image_0001.jpg exists too
    assert font.getlength(name) > 200
    assert _shorten_name(name, font, 200) == "edited/…/image_0001.jpg"
    assert _shorten_name("accordion/image_0001.jpg", font, 200) == "accordion/image_0001.jpg"


def test_grid_draws_a_name_that_is_not_utf8(tmp_path):
    folder = os.fsencode(tmp_path) + b"/caf\xe9"
    os.mkdir(folder)
    path = os.fsdecode(folder + b"/image_0001.jpg")
    synthetic_image(3).save(path, format="JPEG")
    tiles = viz.grid_tiles(b"query-bytes", [Hit(rank=1, score=0.5, id=0, path=path, label="caf\\xe9")])
    assert [t.line2 for t in tiles] == ["uploaded image", "caf\\xe9/image_0001.jpg"]
    out = viz.result_grid(path, [Hit(1, 0.5, 0, path, "x")], tmp_path / "g.png")  # draws, no UnicodeEncodeError
    assert Image.open(out).size == (2 * (viz.THUMB + _PAD) + _PAD, viz.THUMB + _CAPTION + 2 * _PAD)


# --- duplicate sheet ---------------------------------------------------------------------


def _green_box(arr):
    ys, xs = np.nonzero(np.all(arr == _KEEP, axis=-1))
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def test_sheet_of_pairs_is_as_wide_as_two_large_thumbnails(tmp_path):
    a1, b1, a2 = _same_name_in_two_folders(tmp_path)
    groups = [Group(ids=[1, 2], paths=[a1, b1], keeper=2, pairs=[(1, 2, 0.97)]),
              Group(ids=[3, 4], paths=[a2, a1], keeper=3, pairs=[(3, 4, 0.93)])]
    sheet = np.asarray(Image.open(viz.duplicate_sheet(groups, tmp_path / "s.png")).convert("RGB"))
    height, width = sheet.shape[:2]
    assert 400 <= width <= 600  # was 1,352 px for pairs
    assert viz.SHEET_THUMB >= 200 and 2 * viz.SHEET_THUMB <= width <= 2 * viz.SHEET_THUMB + 4 * _PAD
    # the keeper's green frame encloses a thumbnail at least 200 px a side, in the first column
    x0, y0, x1, y1 = _green_box(sheet[: height // 2])
    assert x1 - x0 >= 200 and y1 - y0 >= 200 and x0 <= _PAD
    x0, _, x1, _ = _green_box(sheet[height // 2 :])  # one keeper mark in the second group too
    assert x0 <= _PAD and x1 - x0 <= viz.SHEET_THUMB


def test_sheet_tiles_carry_keeper_mark_score_and_short_name(tmp_path):
    a1, b1, a2 = _same_name_in_two_folders(tmp_path)
    # 2 is the keeper; 1 is linked to it directly, 3 only through 1; group without pairs: no scores known
    g = Group(ids=[1, 2, 3], paths=[a1, b1, a2], keeper=2, pairs=[(1, 3, 0.95), (1, 2, 0.92)])
    tiles = viz.group_tiles(g)
    assert [t.source for t in tiles] == [b1, a1, a2]
    assert tiles[0].badge == "KEEP" and tiles[0].frame == _KEEP
    assert tiles[1].badge == "0.920" and "to keeper" in tiles[1].line1
    assert tiles[2].badge == "via 0.920" and "via others" in tiles[2].line1  # the chain's weakest step
    assert [t.line2 for t in tiles] == ["airplanes/image_0001.jpg", "accordion/image_0001.jpg",
                                        "accordion/image_0002.jpg"]
    # a chain 2 -0.97- 1 -0.95- 3 beside a weaker branch 1 -0.90- 4: 3 shows 0.95, not the group's 0.90
    chain = Group(ids=[1, 2, 3, 4], paths=[a1, b1, a2, a1 + "x"], keeper=2,
                  pairs=[(1, 2, 0.97), (1, 3, 0.95), (1, 4, 0.90)])
    assert [t.badge for t in viz.group_tiles(chain)] == ["KEEP", "0.970", "via 0.950", "via 0.900"]
    bare = Group(ids=[1, 2], paths=[a1, b1], keeper=1)
    assert [t.badge for t in viz.group_tiles(bare)] == ["KEEP", "via"]
    sheet = Image.open(viz.duplicate_sheet([g], tmp_path / "s.png", side=200)).convert("RGB")
    assert sheet.width == 3 * (200 + _PAD) + _PAD
    arr = np.asarray(sheet)
    # the badge on the second thumbnail: white score text on a dark plate at its top-left corner
    x, y = viz.cell_origin(1, 3, 200)
    corner = arr[28 + y : 28 + y + 20, x : x + 60]
    assert (np.all(corner > 240, axis=-1)).sum() > 20 and (np.all(corner < 60, axis=-1)).sum() > 200


def test_sheet_says_so_when_empty_and_counts_groups_left_out(tmp_path):
    assert Image.open(viz.duplicate_sheet([], tmp_path / "e.png")).width < 600
    a1, b1, _ = _same_name_in_two_folders(tmp_path)
    groups = [Group(ids=[1, 2], paths=[a1, b1], keeper=1, pairs=[(1, 2, 0.9)])] * 3
    one = Image.open(viz.duplicate_sheet(groups, tmp_path / "m.png", max_groups=1))
    two = Image.open(viz.duplicate_sheet(groups[:1], tmp_path / "n.png"))
    assert one.height > two.height  # the footer line


# --- map ---------------------------------------------------------------------------------


def _clustered(image_folder, n_labels, size):
    """4 points round each label's centre on a grid; returns points, paths, labels, centres in pixels."""
    sources = sorted(str(p) for p in image_folder.rglob("*.*"))
    cols = 5
    points, paths, labels, centres = [], [], [], {}
    for k in range(n_labels):
        cx, cy = (0.1 + 0.8 * (k % cols) / (cols - 1), 0.1 + 0.8 * (k // cols) / max(1, (n_labels - 1) // cols))
        lab = f"class{k:02d}"
        for dx, dy in ((-1, -1), (1, -1), (-1, 1), (1, 1)):
            points.append((cx + dx * 0.05, cy + dy * 0.05))
            paths.append(sources[len(paths) % len(sources)])
            labels.append(lab)
        centres[lab] = (cx, cy)
    return np.array(points), paths, labels, centres


def _px(xy, size, thumb):
    return thumb + np.asarray(xy) * (size - 2 * thumb)


def test_map_frames_neighbouring_clusters_in_clearly_different_colours(image_folder):
    size, thumb = 1600, 40
    points, paths, labels, centres = _clustered(image_folder, 20, size)
    arr = np.asarray(viz.draw_map(points, paths, labels, size=size, thumb=thumb))
    frame_colour = {}
    for (px, py), lab in zip(_px(points, size, thumb), labels):
        x, y = int(px - thumb / 2), int(py - thumb / 2)
        frame_colour.setdefault(lab, set()).add(tuple(arr[y + thumb // 2, x - 1]))
    assert all(len(c) == 1 for c in frame_colour.values())
    colour = {lab: c.pop() for lab, c in frame_colour.items()}
    assert len(set(colour.values())) == 20  # a 16-colour palette cycled repeats four
    grid = {centres[lab]: lab for lab in centres}
    xs, ys = sorted({c[0] for c in grid}), sorted({c[1] for c in grid})
    closest = min(_colour_distance(colour[grid[(xs[i], ys[j])]], colour[grid[(xs[i + di], ys[j + dj])]])
                  for i in range(len(xs)) for j in range(len(ys)) for di, dj in ((1, 0), (0, 1), (1, 1))
                  if i + di < len(xs) and j + dj < len(ys))
    assert closest > 150, closest  # side by side, no two clusters in near-identical colours


def test_map_names_each_cluster_at_its_centre(image_folder):
    size, thumb = 1600, 40
    points, paths, labels, centres = _clustered(image_folder, 8, size)
    picture = viz.draw_map(points, paths, labels, size=size, thumb=thumb)
    arr = np.asarray(picture)
    ink = np.all(arr == _INK, axis=-1)
    for lab, c in centres.items():
        cx, cy = (int(v) for v in _px(c, size, thumb))
        near = ink[cy - 30 : cy + 30, cx - 120 : cx + 120]
        ys, xs = np.nonzero(near)
        assert len(xs) > 100, lab  # the name's strokes, drawn dark on a white outline
        assert abs((xs.min() + xs.max()) / 2 - 120) < 40 and xs.max() - xs.min() > 50  # centred, a word wide
    # 8 labels: a legend on the right with entries about as tall as the centre names
    assert picture.width > size
    legend = ink[:, size:]
    rows = np.nonzero(legend.any(axis=1))[0]
    first = rows[rows > rows.min() + 30]  # skip the title line
    run = first[: np.argmax(np.diff(first) > 1) + 1] if (np.diff(first) > 1).any() else first
    assert run.max() - run.min() >= 20  # glyph height of "class.. (4)" in px: readable at a glance


def test_map_drops_the_legend_for_many_labels_and_keeps_the_names(image_folder):
    size = 1200
    points, paths, labels, _ = _clustered(image_folder, viz.LEGEND_MAX + 1, size)
    picture = viz.draw_map(points, paths, labels, size=size, thumb=24)
    assert picture.size == (size, size)
    ink = np.all(np.asarray(picture) == _INK, axis=-1)
    assert ink.sum() > 100 * (viz.LEGEND_MAX + 1)


def test_embedding_map_end_to_end(image_folder, tmp_path):
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(3, 32))
    X = np.repeat(basis, 10, axis=0) + 0.05 * rng.normal(size=(30, 32))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    sources = sorted(str(p) for p in image_folder.rglob("*.*"))
    paths = [sources[i % len(sources)] for i in range(30)]
    labels = [f"cluster{i // 10}" for i in range(30)]
    out = viz.embedding_map(X.astype(np.float32), paths, labels, tmp_path / "map.png", size=600, thumb=30)
    picture = np.asarray(Image.open(out).convert("RGB"))
    assert picture.shape[0] == 600 and picture.shape[1] > 600  # 3 labels: a legend
    pick, points = viz.map_layout(X.astype(np.float32), seed=0)  # the same seeded layout
    assert len(pick) == 30
    ink = np.all(picture == (20, 20, 20), axis=-1)
    for c in range(3):
        cx, cy = (int(v) for v in np.median(_px(points[pick // 10 == c], 600, 30), axis=0))
        assert ink[max(0, cy - 20) : cy + 20, max(0, cx - 90) : cx + 90].sum() > 15  # "cluster0", ... there
