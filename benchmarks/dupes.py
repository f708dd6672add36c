"""Duplicates against imagededup (issue 14): pair precision / recall / F1 on a seeded Caltech-101 set.

The set (written to a temp folder, seeded): N originals (Caltech-101 files, byte for byte), nine
edited copies of each (lookalike.evaluate.edit_image: crop 75-90 % of the side, JPEG q30, 50 %
downscale, +-10 deg rotation with white corners, 90 deg rotation, mirror, colour/brightness, caption
bar, white border; saved as JPEG q95), byte-identical copies of some originals in another folder,
burst-like pairs (two crops of one photo 4-8 % apart, one slightly brighter: consecutive shots with
a little camera motion; the photo itself is not in the set) and distractors: other Caltech-101
photos (most classes of the originals among them) and all of caltech101_background_distractors.
Faces_easy is left out (crops of Faces), and a pixel check (32x32 grey thumbnails correlating
>= lookalike.evaluate.TWIN_CORRELATION, or >= TWIN_CROP for a crop or mirror image of one against
the other) drops source photos that are copies of one already taken, so that every pair the ground
truth calls false is really two different photos. It does not depend on the tools measured.

Ground truth: every two files of the same photo (original, its copies and its exact copies; a
burst pair) are a true pair, every other pair is false. Each tool's answer becomes pairs two ways:

* groups -- all pairs inside the connected components of what the tool reports (lookalike:
  the groups of ``lookalike dupes --format json``, exact and near tiers joined where they share
  a file; imagededup: components of its ``find_duplicates`` map). This is what a clean-up acts on,
  and the headline.
* direct -- the pairs the tool scores as duplicates itself (lookalike: the pairs at or above the
  threshold, ``lookalike.dupes.find_pairs``; imagededup: the ``find_duplicates`` map).

Per edit type: recall over the (original, copy) pairs of that edit; precision over every reported
pair that has a file of that type in it. Exact tier: ``lookalike dupes --tier exact`` against the
byte-identical pairs of the set (hashed here).

lookalike runs as a user runs it: ``lookalike index DIR --db X`` then ``lookalike dupes --db X
--format json`` (the default profile and DEFAULT_THRESHOLD), timed end to end. imagededup runs
PHash, DHash and WHash with their default ``max_distance_threshold`` (10), timed as hashing
(``encode_images``) + finding (``find_duplicates``). Its CNN method is left out: it downloads model
weights (and needs torchvision). A threshold sweep is reported for every method too; the best F1
of a sweep is picked on this very set, so it is an optimistic ("oracle") figure for each tool.

imagededup install: its wheel requires torch and torchvision although the hashing methods use
neither, and a plain ``pip install imagededup`` pulls a CUDA torch. Install it without its deps:

    pip install '.[bench]'            # includes PyWavelets and scikit-learn (the hashing path)
    pip install --no-deps imagededup  # 0.3.3.post1 has cp311 manylinux wheels

Importing ``imagededup.methods.hashing`` normally runs ``imagededup/methods/__init__.py`` (imports the
CNN module: torch) and ``imagededup/utils/__init__.py`` (matplotlib and torchvision); this script
registers those two packages as empty namespace modules first (``_import_hashing``), so only the
hashing code and its real dependencies (numpy, scipy, PyWavelets, scikit-learn, tqdm, Pillow) load.

    python benchmarks/dupes.py [--originals 150] [--distractors 500] [--skip-rotations]
"""

import argparse
import hashlib
import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import types
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from lookalike import evaluate as ev
from lookalike.dupes import DEFAULT_THRESHOLD

DATA = Path(os.environ.get("LOOKALIKE_DATA", ROOT.parent / "shared" / "data"))
# The edit types -> the edit of lookalike.evaluate that makes them.
EDITS = {"crop": "crop", "jpeg": "jpeg_q30", "scale": "downscale_50", "rotate_10": "rotate_10",
         "rotate_90": "rotate_90", "mirror": "flip", "colour": "colour", "caption": "text_overlay",
         "border": "border"}
TYPES = ("exact", *EDITS, "burst")
HASHES = ("PHash", "DHash", "WHash")
IMAGEDEDUP_DEFAULT = 10  # find_duplicates' default max_distance_threshold
LOOKALIKE_SWEEP = tuple(round(t, 2) for t in np.arange(0.80, 0.9601, 0.01))
HASH_SWEEP = tuple(range(0, 21))
LOOKALIKE = [sys.executable, "-m", "lookalike"]


# ---------------------------------------------------------------- the set
# Pixel twins: the plain 32x32 check of lookalike.evaluate (>= TWIN_CORRELATION), plus crops (80-90 % of
# the side, at nine positions) and mirror images of one side against the whole other at >= TWIN_CROP
# (Caltech-101 holds mirrored and recropped copies of some photos, e.g. Leopards 0083/0183, revolver
# 0047/0077; different photos of one scene reach 0.83 with crops, a copy 0.97-1.0).
TWIN_CROP = 0.9


def _thumbs(path):
    """The whole image's grey 32x32 thumbnail, then those of its crops and mirror images."""
    from PIL import ImageOps

    with Image.open(path) as im:
        im = im.convert("RGB")
    w, h = im.size
    views = [im]
    for f in (0.9, 0.8):
        cw, ch = int(w * f), int(h * f)
        for x in (0, (w - cw) // 2, w - cw):  # the nine positions: centre, edges, corners
            for y in (0, (h - ch) // 2, h - ch):
                views.append(im.crop((x, y, x + cw, y + ch)))
    views += [ImageOps.mirror(v) for v in views]
    return np.stack([ev._thumb(v) for v in views])


class TwinCheck:
    """Greedy: a photo is dropped when it is a pixel twin of one kept before it."""

    def __init__(self, capacity: int):
        self.n, self.dropped = 0, []
        self.whole = np.zeros((capacity, 1024), np.float32)
        self.views = np.zeros((capacity, 38, 1024), np.float32)

    def add(self, path) -> bool:
        t = _thumbs(path).astype(np.float32)
        whole, views = self.whole[:self.n], self.views[:self.n]
        plain = whole @ t[0]
        a = (whole @ t.T).max(axis=1, initial=-1.0)  # its crops and mirror images against the kept photos
        b = (views.reshape(-1, 1024) @ t[0]).reshape(self.n, 38).max(axis=1, initial=-1.0)  # and theirs against it
        if ((plain >= ev.TWIN_CORRELATION) | (np.maximum(a, b) >= TWIN_CROP)).any():
            self.dropped.append(str(path))
            return False
        self.whole[self.n], self.views[self.n] = t[0], t
        self.n += 1
        return True


def pick_sources(rng, n_orig, n_burst, n_distract, n_bg=-1):
    """Caltech-101 photos for originals, burst sources and distractors, with no pixel twins."""
    rows = [line.split(",") for line in (DATA / "caltech101" / "labels.csv").read_text().splitlines()[1:]]
    rows = [(p, c) for p, c, *_ in rows if c != "Faces_easy"]
    order = rng.permutation(len(rows))
    bg = sorted((DATA / "caltech101_background_distractors").glob("*.jpg"))
    bg = bg if n_bg < 0 else bg[:n_bg]
    need = n_orig + n_burst + n_distract
    twins, kept = TwinCheck(need + len(bg)), []
    for i in order:
        if len(kept) == need:
            break
        if twins.add(DATA / "caltech101" / rows[i][0]):
            kept.append(rows[i])
    bg_kept = [p for p in bg if twins.add(p)]
    dropped = len(twins.dropped)
    return kept[:n_orig], kept[n_orig:n_orig + n_burst], kept[n_orig + n_burst:], bg_kept, dropped


def burst_pair(im, rng):
    """Two crops of one photo a little apart (4-8 % of the side), the second slightly brighter."""
    w, h = im.size
    f = 0.88
    cw, ch = int(w * f), int(h * f)
    dx, dy = (rng.uniform(0.04, 0.08, 2) * (w, h) * rng.choice([-1, 1], 2)).astype(int)
    x0, y0 = (w - cw) // 2 - dx // 2, (h - ch) // 2 - dy // 2
    a = im.crop((x0, y0, x0 + cw, y0 + ch))
    b = im.crop((x0 + dx, y0 + dy, x0 + dx + cw, y0 + dy + ch))
    return a, ImageEnhance.Brightness(b).enhance(float(rng.uniform(1.03, 1.1)))


def build_set(root: Path, args):
    """Write the set under ``root``; return the files (relative paths) and their ground truth."""
    rng = np.random.default_rng(args.seed)
    origs, bursts, distract, bg, dropped = pick_sources(rng, args.originals, args.bursts, args.distractors,
                                                          args.background)
    files, photo, kind, source = [], [], [], []

    def add(rel, ph, k, src=None):
        files.append(rel); photo.append(ph); kind.append(k); source.append(src)

    name = lambda p: p.replace("/", "_")  # noqa: E731
    exact_of = set(rng.choice(len(origs), size=args.exact, replace=False).tolist())
    for n, (p, _) in enumerate(origs):
        rel = f"photos/{name(p)}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DATA / "caltech101" / p, root / rel)
        add(rel, n, "original", n)
        if n in exact_of:
            rel2 = f"backup/old_phone/{name(p)}"
            (root / rel2).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / rel, root / rel2)
            add(rel2, n, "exact", n)
        with Image.open(root / rel) as im:
            copies = ev.edit_image(im.convert("RGB"), rng, list(EDITS.values()))
        for t, e in EDITS.items():
            rel2 = f"edits/{t}/{Path(name(p)).stem}.jpg"
            (root / rel2).parent.mkdir(parents=True, exist_ok=True)
            copies[e].save(root / rel2, quality=95)
            add(rel2, n, t, n)
    ph = len(origs)
    (root / "burst").mkdir()
    for p, _ in bursts:
        with Image.open(DATA / "caltech101" / p) as im:
            a, b = burst_pair(im.convert("RGB"), rng)
        stem = Path(name(p)).stem
        a.save(root / f"burst/{stem}_1.jpg", quality=92); b.save(root / f"burst/{stem}_2.jpg", quality=92)
        add(f"burst/{stem}_1.jpg", ph, "burst"); add(f"burst/{stem}_2.jpg", ph, "burst")
        ph += 1
    orig_classes = {c for _, c in origs}
    for p, c in distract:
        rel = f"other/{name(p)}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DATA / "caltech101" / p, root / rel)
        add(rel, ph, "distractor_same_class" if c in orig_classes else "distractor"); ph += 1
    (root / "background").mkdir()
    for p in bg:
        shutil.copyfile(p, root / "background" / p.name)
        add(f"background/{p.name}", ph, "background"); ph += 1
    digest = [hashlib.sha256((root / f).read_bytes()).hexdigest() for f in files]
    meta = {"originals": len(origs), "edited_copies": len(origs) * len(EDITS), "exact_copies": args.exact,
            "burst_pairs": len(bursts), "distractors": len(distract), "background": len(bg),
            "twins_dropped": dropped, "files": len(files), "kinds": dict(Counter(kind))}
    return files, np.array(photo), np.array(kind), source, digest, meta


# ---------------------------------------------------------------- scoring
def _prf(tp, n_pred, n_true, found=None):
    p = tp / n_pred if n_pred else 1.0
    r = (tp if found is None else found) / n_true if n_true else 1.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / (p + r) if p + r else 0.0, 4),
            "reported": int(n_pred), "true": int(n_true), "found": int(tp if found is None else found)}


def _c2(x):
    x = np.asarray(x, np.int64)
    return int((x * (x - 1) // 2).sum())


def as_arrays(pairs):
    """(i, j) pairs -> two int arrays, i < j, no repeats."""
    if not len(pairs):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    p = np.asarray(list(pairs), np.int64).reshape(-1, 2)
    p = np.unique(np.sort(p, axis=1), axis=0)
    p = p[p[:, 0] != p[:, 1]]
    return p[:, 0], p[:, 1]


def components(n, pairs):
    """Connected-component label of each file (scipy's csgraph)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    a, b = as_arrays(pairs)
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def wanted_pairs(kind, source) -> dict:
    """Per type, the true pairs it is scored on: (original, copy); a burst's two files."""
    orig_of = {int(s): i for i, s in enumerate(source) if kind[i] == "original"}
    out = {}
    for t in TYPES:
        mine = np.flatnonzero(kind == t)
        if t == "burst":
            out[t] = (mine[::2], mine[1::2])
        else:
            out[t] = (np.array([orig_of[source[i]] for i in mine], np.int64), mine)
    return {t: (np.minimum(a, b), np.maximum(a, b)) for t, (a, b) in out.items()}


def same_partition(c1, c2) -> bool:
    """Whether two component labellings group the files alike."""
    return len(np.unique(c1)) == len(np.unique(c2)) == np.unique(np.stack([c1, c2]), axis=1).shape[1]


def score_pairs(pairs, truth) -> dict:
    """Precision / recall / F1 of reported pairs, overall and per type (pairs touching a file of that type)."""
    photo, kind = truth["photo"], truth["kind"]
    a, b = as_arrays(pairs)
    same = photo[a] == photo[b]
    out = {"overall": _prf(int(same.sum()), len(a), truth["n_true"])}
    keys = a * len(photo) + b
    for t, (wa, wb) in truth["wanted"].items():
        touch = (kind[a] == t) | (kind[b] == t)
        found = int(np.isin(wa * len(photo) + wb, keys).sum())
        out[t] = _prf(int((touch & same).sum()), int(touch.sum()), len(wa), found)
    false = Counter(" / ".join(sorted(k)) for k in zip(kind[a[~same]].tolist(), kind[b[~same]].tolist()))
    out["false_pairs_by_kinds"] = dict(false.most_common())
    return out


def score_groups(comp, truth) -> dict:
    """The same for groups: every two files with one component label are a reported pair."""
    photo, kind = truth["photo"], truth["kind"]
    comp = np.asarray(comp, np.int64)
    size = np.bincount(comp)
    _, cell_inv, cell_n = np.unique(comp * (photo.max() + 1) + photo, return_inverse=True, return_counts=True)
    out = {"overall": _prf(_c2(cell_n), _c2(size), truth["n_true"])}
    for t, (wa, wb) in truth["wanted"].items():
        m = kind == t
        both = _c2(np.bincount(comp[m]))  # pairs with both ends of this type, counted twice below
        both_true = _c2(np.unique(cell_inv[m], return_counts=True)[1])
        pred = int((size[comp[m]] - 1).sum()) - both
        tp = int((cell_n[cell_inv[m]] - 1).sum()) - both_true
        out[t] = _prf(tp, pred, len(wa), int((comp[wa] == comp[wb]).sum()))
    out["largest_group"] = int(size.max())
    return out


# ---------------------------------------------------------------- lookalike
def run_cli(args, timeout=3600):
    t0 = time.perf_counter()
    res = subprocess.run(LOOKALIKE + args, capture_output=True, text=True, timeout=timeout,
                         env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    if res.returncode:
        raise RuntimeError(f"lookalike {' '.join(args)} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return res.stdout, time.perf_counter() - t0


def rotations_available() -> bool:
    out, _ = run_cli(["index", "--help"])
    return "--rotations" in out


def group_pairs(groups, index_of):
    """Pairs inside the union of the groups (a file in an exact and a near group joins them)."""
    pairs = []
    for g in groups:
        ids = [index_of[p] for p in g["paths"]]
        pairs += [(ids[0], j) for j in ids[1:]]
    return pairs


def bench_lookalike(root, work, files, truth, rotations=False):
    db = work / ("db-rot" if rotations else "db")
    index_of = {str((root / f).resolve()): i for i, f in enumerate(files)}
    extra = ["--rotations"] if rotations else []
    log, t_index = run_cli(["index", str(root), "--db", str(db), "--no-progress", *extra])
    out, t_dupes = run_cli(["dupes", "--db", str(db), "--format", "json"])
    report = json.loads(out)
    groups = report["groups"]
    res = {"index_s": round(t_index, 2), "dupes_s": round(t_dupes, 2), "index_log": log.strip()[-400:],
           "groups": len(groups), "groups_by_tier": dict(Counter(g.get("tier", "near") for g in groups))}
    n = len(files)
    missing = [p for g in groups for p in g["paths"] if p not in index_of]
    if missing:
        raise RuntimeError(f"dupes reported paths outside the set: {missing[:3]}")
    reported = group_pairs(groups, index_of)
    res["groups_score"] = score_groups(components(n, reported), truth)
    out, t_exact = run_cli(["dupes", "--db", str(db), "--format", "json", "--tier", "exact"])
    ex_groups = json.loads(out)["groups"]
    ex_pairs = {tuple(sorted(p)) for g in ex_groups
                for p in itertools.combinations([index_of[x] for x in g["paths"]], 2)}
    want = truth["identical"]
    res["exact_tier"] = {"groups": len(ex_groups), "pairs": len(ex_pairs), "recall": round(len(ex_pairs & want) / len(want), 4),
                         "false_pairs": len(ex_pairs - want), "dupes_s": round(t_exact, 2)}
    # direct pairs and the sweep, from the library on the same collection (not timed)
    from lookalike import Collection
    from lookalike.dupes import find_pairs

    col = Collection.open(db)
    found = find_pairs(col, min(LOOKALIKE_SWEEP))
    scored = [(index_of[str(Path(p.path_a).resolve())], index_of[str(Path(p.path_b).resolve())], p.score)
              for p in found]
    direct = [(a, b) for a, b, s in scored if s >= DEFAULT_THRESHOLD]
    res["direct_score"] = score_pairs(direct, truth)
    c_direct, c_cli = components(n, direct), components(n, reported)
    res["same_groups_as_cli"] = same_partition(c_direct, c_cli)
    if not res["same_groups_as_cli"]:  # which pairs one grouping has and the other not
        def mates(c):
            return {p for g in np.unique(c) for p in itertools.combinations(np.flatnonzero(c == g).tolist(), 2)}
        m_direct, m_cli = mates(c_direct), mates(c_cli)
        res["groups_only_in_cli"] = [[files[a], files[b]] for a, b in sorted(m_cli - m_direct)[:10]]
        res["groups_only_in_direct"] = [[files[a], files[b]] for a, b in sorted(m_direct - m_cli)[:10]]
        res["groups_differ_pairs"] = [len(m_cli - m_direct), len(m_direct - m_cli)]
    res["sweep"] = {}
    for t in LOOKALIKE_SWEEP:
        ps = [(a, b) for a, b, s in scored if s >= t - 1e-9]
        res["sweep"][f"{t:.2f}"] = {"groups_f1": score_groups(components(n, ps), truth)["overall"]["f1"],
                                    "direct_f1": score_pairs(ps, truth)["overall"]["f1"]}
    res["top_false_pairs"] = sorted(([round(s, 4), files[a], files[b]] for a, b, s in scored
                                     if s >= DEFAULT_THRESHOLD and truth["photo"][a] != truth["photo"][b]),
                                    reverse=True)[:15]
    return res


# ---------------------------------------------------------------- imagededup
def _import_hashing():
    """imagededup's hashing module without running the package __init__ files that import torch,
    torchvision and matplotlib (imagededup.methods imports the CNN; imagededup.utils the plotter and models)."""
    import imagededup

    base = Path(imagededup.__path__[0])
    for sub in ("methods", "utils"):
        mod = types.ModuleType(f"imagededup.{sub}")
        mod.__path__ = [str(base / sub)]
        sys.modules.setdefault(f"imagededup.{sub}", mod)
    from imagededup.methods import hashing

    for name in list(logging.root.manager.loggerDict):  # its loggers print every step at INFO
        if name.startswith("imagededup"):
            logging.getLogger(name).setLevel(logging.WARNING)
    return hashing, imagededup.__version__


def bench_hash(hashing, name, root, files, truth):
    index_of = {f: i for i, f in enumerate(files)}
    n = len(files)
    h = getattr(hashing, name)(verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        enc = h.encode_images(image_dir=str(root.resolve()), recursive=True)
        t1 = time.perf_counter()
        dup = h.find_duplicates(encoding_map=enc, max_distance_threshold=IMAGEDEDUP_DEFAULT, scores=True)
        t2 = time.perf_counter()
        wide = h.find_duplicates(encoding_map=enc, max_distance_threshold=max(HASH_SWEEP), scores=True)
    res = {"hash_s": round(t1 - t0, 2), "find_s": round(t2 - t1, 2), "hashed": len(enc),
           "max_distance_threshold": IMAGEDEDUP_DEFAULT}
    direct = {tuple(sorted((index_of[k], index_of[d]))) for k, v in dup.items() for d, _ in v}
    res["direct_score"] = score_pairs(direct, truth)
    res["groups_score"] = score_groups(components(n, direct), truth)
    scored = {tuple(sorted((index_of[k], index_of[d]))): int(s) for k, v in wide.items() for d, s in v}
    res["sweep"] = {}
    for t in HASH_SWEEP:
        ps = [p for p, s in scored.items() if s <= t]
        res["sweep"][str(t)] = {"groups_f1": score_groups(components(n, ps), truth)["overall"]["f1"],
                                "direct_f1": score_pairs(ps, truth)["overall"]["f1"]}
    res["top_false_pairs"] = sorted(([s, files[a], files[b]] for (a, b), s in scored.items()
                                     if s <= IMAGEDEDUP_DEFAULT and truth["photo"][a] != truth["photo"][b]))[:15]
    return res


# ---------------------------------------------------------------- report
def best(sweep, key):
    t, v = max(sweep.items(), key=lambda kv: (kv[1][key], -abs(float(kv[0]))))
    return t, v[key]


def table(results, n_files, view="groups_score"):
    cols = ["overall P", "R", "F1", *TYPES, "s / 10k"]
    print(f"\n{view.split('_')[0]} pairs -- per type: F1 (recall); s / 10k = wall seconds per 10,000 images")
    print(f"{'method':<28}" + "".join(f"{c:>13}" for c in cols))
    for name, r in results.items():
        if r.get("todo"):
            print(f"{name:<28}  TODO: {r['todo']}")
            continue
        s = r[view]
        cells = [f"{s['overall']['precision']:.3f}", f"{s['overall']['recall']:.3f}", f"{s['overall']['f1']:.3f}"]
        cells += [f"{s[t]['f1']:.2f} ({s[t]['recall']:.2f})" for t in TYPES]
        cells.append(f"{r['per_10k_s']:.0f}")
        print(f"{name:<28}" + "".join(f"{c:>13}" for c in cells))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--originals", type=int, default=150)
    ap.add_argument("--exact", type=int, default=60, help="originals that get a byte-identical copy")
    ap.add_argument("--bursts", type=int, default=60, help="burst-like pairs")
    ap.add_argument("--distractors", type=int, default=500, help="other Caltech-101 photos")
    ap.add_argument("--background", type=int, default=-1, help="background distractors (-1: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-rotations", action="store_true", help="no `index --rotations` row even if available")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "dupes.json"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lookalike-dupes-"))
    root = work / "set"
    load = [os.getloadavg()]
    t0 = time.perf_counter()
    files, photo, kind, source, digest, meta = build_set(root, args)
    by_digest = {}
    for i, d in enumerate(digest):
        by_digest.setdefault(d, []).append(i)
    identical = {p for ids in by_digest.values() for p in itertools.combinations(ids, 2)}
    truth = {"photo": photo, "kind": kind, "identical": identical,
             "n_true": _c2(list(Counter(photo.tolist()).values())), "wanted": wanted_pairs(kind, source)}
    meta.update(build_s=round(time.perf_counter() - t0, 1), identical_pairs=len(identical), seed=args.seed)
    print(f"set: {meta}", flush=True)
    n = len(files)
    results = {}
    try:
        r = bench_lookalike(root, work, files, truth)
        r["per_10k_s"] = (r["index_s"] + r["dupes_s"]) / n * 1e4
        results["lookalike"] = r
        print(f"lookalike: index {r['index_s']} s, dupes {r['dupes_s']} s, exact tier {r['exact_tier']}", flush=True)
        load.append(os.getloadavg())
        if args.skip_rotations:
            results["lookalike --rotations"] = {"todo": "skipped (--skip-rotations)"}
        elif rotations_available():
            r = bench_lookalike(root, work, files, truth, rotations=True)
            r["per_10k_s"] = (r["index_s"] + r["dupes_s"]) / n * 1e4
            results["lookalike --rotations"] = r
            print(f"lookalike --rotations: index {r['index_s']} s, dupes {r['dupes_s']} s", flush=True)
            load.append(os.getloadavg())
        else:
            results["lookalike --rotations"] = {"todo": "`lookalike index --rotations` is not in this build yet"}
        hashing, version = _import_hashing()
        meta["imagededup"] = version
        for h in HASHES:
            r = bench_hash(hashing, h, root, files, truth)
            r["per_10k_s"] = (r["hash_s"] + r["find_s"]) / n * 1e4
            results[f"imagededup {h}"] = r
            print(f"imagededup {h}: hash {r['hash_s']} s, find {r['find_s']} s", flush=True)
        load.append(os.getloadavg())
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")
    table(results, n, "groups_score")
    table(results, n, "direct_score")
    print("\nbest F1 over a threshold sweep on this set (oracle, optimistic for every tool):")
    for name, r in results.items():
        if "sweep" in r:
            tg, fg = best(r["sweep"], "groups_f1"); td, fd = best(r["sweep"], "direct_f1")
            r["oracle"] = {"groups": {"threshold": tg, "f1": fg}, "direct": {"threshold": td, "f1": fd}}
            print(f"  {name:<26} groups F1 {fg:.3f} at {tg:>4}   direct F1 {fd:.3f} at {td:>4}")
    la = results["lookalike"]
    hashes_f1 = max(results[f"imagededup {h}"]["groups_score"]["overall"]["f1"] for h in HASHES)
    targets = {}
    for name in ("lookalike", "lookalike --rotations"):
        if "groups_score" in results[name]:
            f1 = results[name]["groups_score"]["overall"]["f1"]
            targets[f"{name}: F1 >= 0.95"] = f1 >= 0.95
            targets[f"{name}: F1 above every imagededup hash"] = f1 > hashes_f1
    targets["exact tier recall 1.0"] = la["exact_tier"]["recall"] == 1.0
    targets["exact tier no false pair"] = la["exact_tier"]["false_pairs"] == 0
    print(f"\nexact tier: {la['exact_tier']}")
    print("targets (groups view, default thresholds): " + ", ".join(f"{k}: {'met' if v else 'MISSED'}"
                                                                    for k, v in targets.items()))
    out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": f"{os.cpu_count()}-core VM",
           "load_avg_1m": [round(x[0], 2) for x in load], "threshold": DEFAULT_THRESHOLD, "set": meta,
           "targets": targets, "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
