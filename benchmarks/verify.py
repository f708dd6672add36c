"""Does geometric verification (SIFT + ratio test + RANSAC affine) recover the hard near-duplicates?

    python benchmarks/verify.py [--cache /tmp/qd-cache.npz] [--features /tmp/verify-features.pkl]

Not a test. Issue 15: at the `dupes` default threshold (0.88) the hard edits of the near-duplicate
suite score 0.6-0.88 against their original, inside the range of same-class photos. Here pairs in a
cosine band below the threshold are checked with local features (:mod:`lookalike.verify`) and the
pair counts when enough matches agree with one affine map.

Data: the suite of benchmarks/quality_default.py (seeded 2,000 of the Caltech-101 dev sample,
100 originals x 20 edits, seed 0), with the default (`balanced`: crop + whole frame) embeddings
from its ``--cache`` (the copies are re-made from the same seed; a few are re-embedded to check
they are the cached ones). The originals are split in two seeded halves: the rule (band, minimum
inliers) is chosen on one, everything reported on the other.

Measured per half:

* positives: every (original, copy) pair; verified when its cosine is in the band;
* hard negatives, all with cosine in the band: (a) copy vs an unrelated collection image, the
  suite's own unrelated pairs (a stratified sample: all >= 0.80, a seeded sample below), same-class
  ones counted apart; (b) copies of two different originals made by the same edit (a watermark vs
  a watermark: the overlay itself could match); (c) two unrelated collection images (what a real
  collection's `dupes` run meets; the count per 10,000 images gives the cost at scale);
* the combined rule: pair = cosine >= 0.88 OR (cosine in band AND verified): found per edit and
  pair precision (suite definition: copies vs unrelated collection images, 90/180-degree turns
  left out of both), false verifications estimated from the sample x the band's pair count;
* cost: features per image (decode excluded), match + RANSAC per pair.

Writes benchmarks/results/verify.json. ``--long-side 320 --n-features 300`` (any setting other than
the library's) measures a cheaper feature setting and adds its summary under ``variants``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

THRESHOLD = 0.88
LOWS = (0.50, 0.55, 0.60, 0.65, 0.70, 0.75, 0.80)  # candidate lower ends of the band
FLOOR = min(LOWS)
INLIERS = tuple(range(6, 61, 2))
COVERAGES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)  # minimum share of an image the inliers' convex hull covers
CORRELATIONS = (-1.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)  # minimum correlation of the aligned grey thumbnails
TOPS = (1, 2, 3, 5, 10)  # candidate band pairs limited to each image's TOP nearest neighbours
CORR_QUANTILE = 25  # the other tile statistic measured: 25th percentile instead of the median
STAT_NAMES = {2: "median", 3: f"p{CORR_QUANTILE}"}
# Collection pairs the benchmark counts as unrelated but that are one photo (looked at 2026-11-27: the
# same wrench sculpture shot, one cropped; the same emu photo, one rotated and colour-shifted).
KNOWN_DUPLICATES = {("wrench/image_0012.jpg", "wrench/image_0016.jpg"), ("emu/image_0022.jpg", "emu/image_0037.jpg")}
TARGET_PRECISION = 0.995  # chosen on the tune half with margin; the issue asks >= 0.99
MAX_OTHER = 0.002  # at most this share of the (b), (c) hard negatives verified on the tune half


def _unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", type=Path, default=Path("/tmp/qd-cache.npz"),
                    help="pooled features of benchmarks/quality_default.py (2,000 images + 2,000 copies, seed 0)")
    ap.add_argument("--features", type=Path, default=Path("/tmp/verify-features.pkl"), help="SIFT features cache")
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--originals", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split-seed", type=int, default=1)
    ap.add_argument("--negatives", type=int, default=2500, help="sampled (a) pairs below 0.80 per half")
    ap.add_argument("--pairs-b", type=int, default=1000, help="sampled (b) pairs per half")
    ap.add_argument("--pairs-c", type=int, default=1500, help="sampled (c) pairs per half")
    ap.add_argument("--long-side", type=int, default=400, help="lookalike.verify.features' long_side (a variant "
                    "other than the library's default is written under 'variants')")
    ap.add_argument("--n-features", type=int, default=600, help="keypoints per image (see --long-side)")
    ap.add_argument("--correlation", choices=("median", "p25"), default="median",
                    help="tile statistic of the photometric check for the reported rule (the other is reported too)")
    ap.add_argument("--embeddings", type=Path, help="other embeddings of the same suite (a .npy of unit vectors in "
                    "the cache's order, e.g. the int8 engine's /tmp/qd-cache-onnx-int8-shared.npy): the rule is chosen "
                    "and reported on them, and the shipped rule re-checked; written under 'embeddings' by file name")
    ap.add_argument("--no-screen", dest="screen", action="store_false",
                    help="check every pair with the full features (the library's screen=False)")
    ap.add_argument("--collection", type=Path, help="instead: time `dupes` end to end on this indexed collection "
                    "(threshold only, then verification with 1 thread and with the default threads) and add it to "
                    "the results under 'end_to_end'")
    args = ap.parse_args()
    if args.collection:
        return end_to_end(args.collection)

    import cv2

    from lookalike import evaluate as ev
    from lookalike import verify as vf
    from lookalike.images import decode
    from pooling import sample

    cv2.setNumThreads(1)
    t_start = time.time()
    paths, labels = sample()
    keep = np.sort(np.random.default_rng(args.seed).choice(len(paths), args.images, replace=False))
    paths, labels = [paths[i] for i in keep], np.asarray([labels[i] for i in keep])
    n = len(paths)
    z = np.load(args.cache)
    X = _unit(_unit(z["crop-False-0"]) + _unit(z["full-False-0"])).astype(np.float32)
    if args.embeddings:
        other = _unit(np.load(args.embeddings).astype(np.float32))
        print(f"{args.embeddings}: cosine to the cache's embeddings min {np.einsum('ij,ij->i', X, other).min():.4f}, "
              f"mean {np.einsum('ij,ij->i', X, other).mean():.4f}", flush=True)
        X = other
    names = list(ev.EDIT_NAMES)
    assert len(X) == n + args.originals * len(names), "cache is not this suite"
    db, E = X[:n], X[n:].reshape(len(names), args.originals, -1)
    rng = np.random.default_rng(args.seed)
    rows = np.sort(rng.choice(n, args.originals, replace=False))
    ims = {int(r): decode(paths[r]).image for r in rows}
    copies = [ev.edit_image(ims[int(r)], rng) for r in rows]  # the same rng sequence as quality_default.py
    print(f"{n} images, {len(rows)} originals x {len(names)} edits re-made ({time.time() - t_start:.0f} s)", flush=True)

    # the copies are the cached ones: re-embed a few with the default profile
    from lookalike.encoders import PROFILES, get_encoder

    prof = PROFILES["balanced"]
    enc = get_encoder(prof.encoder, views=prof.views)
    chk = [(e, i) for e, i in ((names.index("watermark"), 3), (names.index("thumbnail"), 7), (names.index("crop_50"), 11))]
    got = enc.embed_images([copies[i][names[e]] for e, i in chk])
    agree = float(min(np.einsum("ij,ij->i", _unit(got), np.stack([E[e, i] for e, i in chk]))))
    print(f"re-embedded copies vs cache: min cosine {agree:.4f}", flush=True)
    assert agree > (0.97 if args.embeddings else 0.99), "the cached copies are not these copies"

    twins = ev.find_twins([str(p) for p in paths], rows, _unit(z["crop-False-0"][:n]))
    split = np.random.default_rng(args.split_seed).permutation(len(rows))
    halves = {"tune": np.sort(split[: len(rows) // 2]), "test": np.sort(split[len(rows) // 2:])}

    # ---- features (cached on disk: SIFT of 2,000 images takes minutes on the shared VM)
    fkw = {"long_side": args.long_side, "n_features": args.n_features}
    variant_name = None if (args.long_side, args.n_features) == (vf.LONG_SIDE, vf.N_FEATURES) else \
        f"long_side {args.long_side}, n_features {args.n_features}"
    if variant_name:
        args.features = args.features.with_name(f"{args.features.stem}-{args.long_side}-{args.n_features}.pkl")
    feats = pickle.loads(args.features.read_bytes()) if args.features.exists() else {}
    t_feat = []

    def F(key):
        """key: ('db', row) or ('copy', edit index, original index)."""
        if key not in feats:
            im = paths[key[1]] if key[0] == "db" else copies[key[2]][names[key[1]]]
            im = decode(im).image if key[0] == "db" else im
            t0 = time.perf_counter()
            feats[key] = vf.features(im, **fkw)
            t_feat.append(time.perf_counter() - t0)
        return feats[key]

    screen_file = args.features.with_name(f"verify-screen-{vf.SCREEN_LONG_SIDE}-{vf.SCREEN_FEATURES}-from-"
                                          f"{args.long_side}.pkl")
    cheap = pickle.loads(screen_file.read_bytes()) if screen_file.exists() and args.screen else {}
    t_screen, screened = [], []

    def C(key):
        """The screening features (lookalike.verify.screen_features), as verify_pairs makes them."""
        if key not in cheap:
            im = paths[key[1]] if key[0] == "db" else copies[key[2]][names[key[1]]]
            cheap[key] = vf.screen_features(decode(im).image if key[0] == "db" else im, long_side=args.long_side)
        return cheap[key]

    t_match = []

    def M(ka, kb):
        if args.screen:
            t0 = time.perf_counter()
            passed = vf.match(C(ka), C(kb)) >= vf.SCREEN_MIN_INLIERS
            t_screen.append(time.perf_counter() - t0)
            screened.append(passed)
            if not passed:
                return (0, 0.0, -1.0, -1.0)
        fa, fb = F(ka), F(kb)
        t0 = time.perf_counter()
        m = vf.match_details(fa, fb)
        t_match.append(time.perf_counter() - t0)
        q = vf._correlation(fa, fb, m.transform, CORR_QUANTILE) if m.transform is not None else -1.0
        return (m.inliers, m.coverage, m.correlation, q)

    # ---- the band's pairs
    related = np.zeros((len(rows), n), bool)
    related[np.arange(len(rows)), rows] = True
    for i, r in enumerate(rows):
        related[i, twins.get(int(r), [])] = True
    main_edits = [j for j, e in enumerate(names) if e not in ev.ORIENTATION_EDITS]
    out = {"benchmark": "verify", "date": time.strftime("%Y-%m-%d %H:%M"),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared VM)",
           "load_average": round(os.getloadavg()[0], 2), "opencv": cv2.__version__,
           "method": {"features": "SIFT", "long_side": vf.LONG_SIDE, "n_features": vf.N_FEATURES, "ratio": vf.RATIO,
                      "ransac_px": vf.RANSAC_PX, "model": "affine (cv2.estimateAffine2D, RANSAC)",
                      "max_anisotropy": vf.MAX_ANISOTROPY,
                      "screen": {"long_side": vf.SCREEN_LONG_SIDE, "n_features": vf.SCREEN_FEATURES,
                                 "min_inliers": vf.SCREEN_MIN_INLIERS} if args.screen else None},
           "images": n, "originals": len(rows), "threshold": THRESHOLD, "halves": {}}
    sdb = db @ db.T
    np.fill_diagonal(sdb, -np.inf)
    R = np.empty(sdb.shape, np.int32)  # R[i, j]: rank of j among i's nearest collection images (1 = nearest)
    np.put_along_axis(R, np.argsort(-sdb, axis=1), np.arange(1, n + 1, dtype=np.int32)[None, :].repeat(n, 0), 1)
    per_half = {}
    for hname, idx in halves.items():
        hr = np.random.default_rng(100 + len(hname))
        t0 = time.time()
        # positives
        pos_cos = np.einsum("eid,id->ei", E[:, idx], db[rows[idx]])
        pos_inl = np.zeros(pos_cos.shape + (4,))
        pos_inl[..., 2:] = -1
        for e in range(len(names)):
            for k, i in enumerate(idx):
                if FLOOR <= pos_cos[e, k] < THRESHOLD:
                    pos_inl[e, k] = M(("copy", e, int(i)), ("db", int(rows[i])))
        print(f"[{hname}] positives verified: {int(((pos_cos >= FLOOR) & (pos_cos < THRESHOLD)).sum())} pairs "
              f"({time.time() - t0:.0f} s)", flush=True)
        # (a) copy vs unrelated collection image
        S = np.einsum("eid,nd->ein", E[:, idx], db)
        S[:, related[idx]] = -np.inf
        above = int((S[main_edits] >= THRESHOLD).sum())
        pos_rank = (1 + (S > pos_cos[..., None]).sum(-1),  # the original among the copy's neighbours
                    1 + (sdb[rows[idx]][None] > pos_cos[..., None]).sum(-1))  # the copy among the original's
        e_, i_, c_ = np.nonzero((S >= FLOOR) & (S < THRESHOLD))
        a_cos = S[e_, i_, c_]
        a_main = np.isin(e_, main_edits)
        a_same = labels[c_] == labels[rows[idx][i_]]
        hi = np.flatnonzero(a_cos >= 0.80)
        lo = np.flatnonzero(a_cos < 0.80)
        lo_s = np.sort(hr.choice(lo, min(args.negatives, len(lo)), replace=False))
        pick = np.concatenate([hi, lo_s])
        weight = np.where(a_cos[pick] >= 0.80, 1.0, len(lo) / max(len(lo_s), 1))
        a_inl = np.array([M(("copy", int(e_[p]), int(idx[i_[p]])), ("db", int(c_[p]))) for p in pick]).reshape(-1, 4)
        print(f"[{hname}] (a) {len(a_cos)} copy-unrelated pairs in [{FLOOR}, {THRESHOLD}), {len(pick)} verified "
              f"({time.time() - t0:.0f} s)", flush=True)
        # (b) copies of two different originals, same edit
        b_keys, b_cos = [], []
        for e in range(len(names)):
            V = E[e, idx]
            s = V @ V.T
            a, b = np.nonzero(np.triu((s >= FLOOR) & (s < THRESHOLD), 1))
            b_keys += [(e, int(idx[x]), int(idx[y])) for x, y in zip(a, b)]
            b_cos += list(s[a, b])
        b_cos = np.asarray(b_cos)
        b_pick = np.sort(hr.choice(len(b_keys), min(args.pairs_b, len(b_keys)), replace=False))
        b_inl = np.array([M(("copy", b_keys[p][0], b_keys[p][1]), ("copy", b_keys[p][0], b_keys[p][2]))
                          for p in b_pick]).reshape(-1, 4)
        b_edit = np.array([names[b_keys[p][0]] for p in b_pick])
        print(f"[{hname}] (b) {len(b_keys)} same-edit copy pairs in band, {len(b_pick)} verified "
              f"({time.time() - t0:.0f} s)", flush=True)
        args.features.write_bytes(pickle.dumps(feats))
        if args.screen:
            screen_file.write_bytes(pickle.dumps(cheap))
        a_ids = [(names[int(e_[p])], str(paths[rows[idx[i_[p]]]].relative_to(paths[0].parents[1])),
                  str(paths[c_[p]].relative_to(paths[0].parents[1]))) for p in pick]
        per_half[hname] = dict(a_ids=a_ids, pos_rank=pos_rank, pos_cos=pos_cos, pos_inl=pos_inl, above=above, a_cos=a_cos[pick], a_inl=a_inl,
                               a_w=weight, a_main=a_main[pick], a_same=a_same[pick], a_total=len(a_cos),
                               b_cos=b_cos[b_pick], b_inl=b_inl, b_total=len(b_keys), b_edit=b_edit)
    # (c) unrelated collection pairs (db x db), split by a seeded half of the collection images
    s = db @ db.T
    iu = np.triu_indices(n, 1)
    twin_pairs = {(min(r, t), max(r, t)) for r, ts in twins.items() for t in ts}
    cc = s[iu]
    band_all = {f"{lo:.2f}": int(((cc >= lo) & (cc < THRESHOLD)).sum()) for lo in LOWS}
    above_all = int((cc >= THRESHOLD).sum())
    scale10k = 10_000 * 9_999 / (n * (n - 1))
    sel = np.flatnonzero((cc >= FLOOR) & (cc < THRESHOLD))
    sel = np.array([p for p in sel if (int(iu[0][p]), int(iu[1][p])) not in twin_pairs])
    hr = np.random.default_rng(7)
    c_pick = hr.choice(sel, min(2 * args.pairs_c, len(sel)), replace=False)
    c_inl = np.array([M(("db", int(iu[0][p])), ("db", int(iu[1][p]))) for p in c_pick]).reshape(-1, 4)
    c_same = labels[iu[0][c_pick]] == labels[iu[1][c_pick]]
    c_cos = cc[c_pick]
    print(f"(c) {len(sel)} collection pairs in [{FLOOR}, {THRESHOLD}), {len(c_pick)} verified", flush=True)
    args.features.write_bytes(pickle.dumps(feats))
    if args.screen:
        screen_file.write_bytes(pickle.dumps(cheap))
    c_ids = [(str(paths[iu[0][p]].relative_to(paths[0].parents[1])), str(paths[iu[1][p]].relative_to(paths[0].parents[1])))
             for p in c_pick]
    c_rank = (R[iu[0][sel], iu[1][sel]], R[iu[1][sel], iu[0][sel]])
    c_half = {"tune": slice(0, len(c_pick) // 2), "test": slice(len(c_pick) // 2, None)}

    def V(x, k_min, c_min, r_min, stat=2):
        return (x[..., 0] >= k_min) & (x[..., 1] >= c_min) & (x[..., stat] >= r_min)

    def evaluate(h, low, k_min, c_min=0.0, r_min=-1.0, top=None, stat=2):
        d = per_half[h]
        pc, pi = d["pos_cos"], d["pos_inl"]
        cand = (pc >= low) & (pc < THRESHOLD)
        if top is not None:
            cand &= np.minimum(d["pos_rank"][0], d["pos_rank"][1]) <= top
        found = (pc >= THRESHOLD) | (cand & V(pi, k_min, c_min, r_min, stat))
        inband = d["a_cos"] >= low
        ver = inband & V(d["a_inl"], k_min, c_min, r_min, stat)
        fp_band = float((d["a_w"] * (ver & d["a_main"])).sum())
        tp = int(found[main_edits].sum())
        fp = d["above"] + fp_band
        cs = c_half[h]
        cb = c_cos[cs] >= low
        cv = cb & V(c_inl[cs], k_min, c_min, r_min, stat)
        bb = d["b_cos"] >= low
        bv = bb & V(d["b_inl"], k_min, c_min, r_min, stat)
        return {
            "found": {e: round(float(found[j].mean()), 3) for j, e in enumerate(names)},
            "found_main": round(tp / found[main_edits].size, 4),
            "precision": round(tp / max(tp + fp, 1e-9), 5),
            "false_pairs_est": round(fp, 1), "false_pairs_above_threshold": d["above"],
            "a_checked": int(inband.sum()), "a_verified": int(ver.sum()),
            "a_same_class_checked": int((inband & d["a_same"]).sum()),
            "a_same_class_verified": int((ver & d["a_same"]).sum()),
            "b_checked": int(bb.sum()), "b_verified": int(bv.sum()),
            "b_per_edit": {e: [int((bv & (d["b_edit"] == e)).sum()), int((bb & (d["b_edit"] == e)).sum())]
                           for e in names if (bb & (d["b_edit"] == e)).any()},
            "b_verified_edits": sorted(set(d["b_edit"][bv].tolist())),
            "c_checked": int(cb.sum()), "c_verified": int(cv.sum()),
            "c_same_class_checked": int((cb & c_same[cs]).sum()), "c_same_class_verified": int((cv & c_same[cs]).sum()),
        }

    # ---- choose the rule on the tune half
    best = None
    best_by_stat = {}
    for stat in (2, 3):
        best = None
        for low in LOWS:
            for k_min in INLIERS:
                for c_min in COVERAGES:
                    for r_min in CORRELATIONS:
                        r = evaluate("tune", low, k_min, c_min, r_min, stat=stat)
                        ok = (r["precision"] >= TARGET_PRECISION and r["b_verified"] <= MAX_OTHER * r["b_checked"]
                              and r["c_verified"] <= MAX_OTHER * r["c_checked"])
                        score = (min(v for e, v in r["found"].items() if e not in ev.ORIENTATION_EDITS),
                                 r["found_main"], low, k_min, c_min, r_min)  # ties: the cheaper band, the stricter rule
                        if ok and (best is None or score > best[0]):
                            best = (score, low, k_min, c_min, r_min)
        best_by_stat[stat] = best
    stat = {"median": 2, "p25": 3}[args.correlation]
    _, low, k_min, c_min, r_min = best_by_stat[stat]
    other = best_by_stat[5 - stat]
    variant = {"correlation": STAT_NAMES[5 - stat], "band": [other[1], THRESHOLD], "min_inliers": other[2],
               "min_coverage": other[3], "min_correlation": other[4],
               "test": evaluate("test", *other[1:], stat=5 - stat)}
    print(f"chosen on the tune half: band [{low:.2f}, {THRESHOLD}), inliers >= {k_min}, coverage >= {c_min}, "
          f"correlation ({STAT_NAMES[stat]}) >= {r_min}", flush=True)
    print(f"with the {variant['correlation']} tile correlation: {other[1:]} -> test found "
          f"{variant['test']['found_main']}, precision {variant['test']['precision']}, same-edit verified "
          f"{variant['test']['b_per_edit']}", flush=True)
    baseline = {h: evaluate(h, THRESHOLD, 10 ** 9) for h in halves}
    chosen = {h: evaluate(h, low, k_min, c_min, r_min, stat=stat) for h in halves}
    no_photometric = {h: evaluate(h, low, k_min, c_min) for h in halves}
    sweep = {f"{lo:.2f}/{k}/{c}/{r}": evaluate("test", lo, k, c, r) for lo in LOWS for k in (8, 12, 16, 20, 25, 30, 40)
             for c in (0.0, 0.2) for r in CORRELATIONS}  # median tile correlation
    # the cost at scale: check a band pair only when one image is among the other's TOP nearest collection images
    topk, topk_tune = {}, {}

    def worst(found):
        return min(v for e, v in found.items() if e not in ev.ORIENTATION_EDITS)

    for K in TOPS:
        r = evaluate("test", low, k_min, c_min, r_min, top=K, stat=stat)
        kept = (np.minimum(c_rank[0], c_rank[1]) <= K) & (cc[sel] >= low)
        topk[K] = {"found": r["found"], "found_main": r["found_main"], "worst_edit": worst(r["found"]),
                   "precision": r["precision"], "band_pairs_in_collection": int(kept.sum()),
                   "band_pairs_per_10k_images": round(int(kept.sum()) * 10_000 / n)}
        r = evaluate("tune", low, k_min, c_min, r_min, top=K, stat=stat)  # TOP_K is chosen on this half
        topk_tune[K] = {"found_main": r["found_main"], "worst_edit": worst(r["found"]), "precision": r["precision"]}

    # inlier distributions on the test half: positives in band vs the hardest negatives
    d = per_half["test"]
    pos_band = d["pos_inl"][(d["pos_cos"] >= low) & (d["pos_cos"] < THRESHOLD)][:, 0]
    neg_a = d["a_inl"][d["a_cos"] >= low][:, 0]
    neg_c = c_inl[c_half["test"]][c_cos[c_half["test"]] >= low][:, 0]
    q = (50, 90, 99, 100)
    false_verified = {}
    for h in halves:
        d = per_half[h]
        va = np.flatnonzero((d["a_cos"] >= low) & V(d["a_inl"], k_min, c_min, r_min, stat))
        cs = np.arange(len(c_pick))[c_half[h]]
        vc = cs[(c_cos[cs] >= low) & V(c_inl[cs], k_min, c_min, r_min, stat)]
        false_verified[h] = {
            "copy_vs_unrelated": [{"edit": d["a_ids"][j][0], "original": d["a_ids"][j][1], "other": d["a_ids"][j][2],
                                   "cosine": round(float(d["a_cos"][j]), 3), "inliers": int(d["a_inl"][j, 0]),
                                   "coverage": round(float(d["a_inl"][j, 1]), 3),
                                   "correlation": round(float(d["a_inl"][j, 2]), 3)} for j in va],
            "collection_pairs": [{"a": c_ids[j][0], "b": c_ids[j][1], "cosine": round(float(c_cos[j]), 3),
                                  "known_duplicate": (c_ids[j][0], c_ids[j][1]) in KNOWN_DUPLICATES,
                                  "inliers": int(c_inl[j, 0]), "coverage": round(float(c_inl[j, 1]), 3),
                                  "correlation": round(float(c_inl[j, 2]), 3)} for j in vc]}
    dist = {"positives_in_band": {f"p{p}": int(np.percentile(pos_band, p)) if len(pos_band) else None for p in q},
            "negatives_a": {f"p{p}": int(np.percentile(neg_a, p)) for p in q},
            "negatives_c": {f"p{p}": int(np.percentile(neg_c, p)) for p in q}}
    timing = []  # features of 100 seeded collection images, timed on every run (decode excluded)
    for i in np.random.default_rng(3).choice(n, 100, replace=False):
        im = decode(paths[i]).image
        t0 = time.perf_counter()
        vf.features(im, **fkw)
        timing.append(time.perf_counter() - t0)
    ms_feat = 1000 * float(np.median(timing))
    ms_match = 1000 * float(np.median(t_match))
    screen_cost = {}
    if args.screen:
        st = []
        for i in np.random.default_rng(3).choice(n, 100, replace=False):
            im = decode(paths[i]).image
            t0 = time.perf_counter()
            vf.screen_features(im, long_side=args.long_side)
            st.append(time.perf_counter() - t0)
        # the pairs of different collection images in the band that pass the screening (the rest skip the full check)
        cb_all = c_cos >= low
        c_pass = np.array([vf.match(C(("db", int(iu[0][p]))), C(("db", int(iu[1][p])))) >= vf.SCREEN_MIN_INLIERS
                           for p in c_pick])
        lost = 0  # suite copies in the band that the full check verifies but the screening drops
        for hname, idx in halves.items():
            pc = per_half[hname]["pos_cos"]
            for e, k in zip(*np.nonzero((pc >= low) & (pc < THRESHOLD))):
                ka, kb = ("copy", int(e), int(idx[k])), ("db", int(rows[idx[k]]))
                if vf.match(C(ka), C(kb)) < vf.SCREEN_MIN_INLIERS and vf.match_details(F(ka), F(kb)).ok(
                        k_min, c_min, r_min):
                    lost += 1
        screen_cost = {"ms_screen_features_per_image_median": round(1000 * float(np.median(st)), 2),
                       "ms_screen_match_per_pair_median": round(1000 * float(np.median(t_screen)), 2),
                       "collection_band_pairs_passing_screen": round(float(c_pass[cb_all].mean()), 4),
                       "suite_positives_verified_but_screened_out": lost}
    band_n = band_all[f"{low:.2f}"]
    cost = {"ms_features_per_image_median": round(ms_feat, 2) if ms_feat else None,
            "ms_match_per_pair_median": round(ms_match, 2), "ms_match_per_pair_mean": round(1000 * np.mean(t_match), 2),
            "band_pairs_in_collection": band_n, "pairs_above_threshold_in_collection": above_all,
            "band_pairs_per_10k_images": round(band_n * scale10k),
            "band_pairs_per_10k_by_low": {k: round(v * scale10k) for k, v in band_all.items()},
            "images_in_band_pairs_share": round(float(len(np.unique(np.concatenate(
                [iu[0][sel][cc[sel] >= low], iu[1][sel][cc[sel] >= low]]))) / n), 3)}
    per10k_s = cost["band_pairs_per_10k_images"] * ms_match / 1000 + (
        cost["images_in_band_pairs_share"] * 10_000 * (ms_feat or 0) / 1000)
    cost["seconds_per_10k_images_est"] = round(per10k_s)
    cost.update(screen_cost)
    out.update({"rule": {"band": [low, THRESHOLD], "min_inliers": k_min, "min_coverage": c_min,
                         "min_correlation": r_min, "correlation": STAT_NAMES[stat], "other_correlation": variant,
                         "chosen_on": "tune", "no_photometric_check": no_photometric,
                         "top_k": topk, "top_k_tune": topk_tune,
                         "target_precision_tune": TARGET_PRECISION},
                "false_verifications": false_verified, "baseline": baseline, "combined": chosen, "sweep_test": sweep, "inliers_test": dist, "cost": cost,
                "halves": {h: [int(rows[i]) for i in v] for h, v in halves.items()},
                "negatives_total": {h: {"a": per_half[h]["a_total"], "b": per_half[h]["b_total"]} for h in halves},
                "negatives_c_total": int(len(sel)), "twins": sum(len(v) for v in twins.values()),
                "seconds": round(time.time() - t_start)})

    print(f"\nTest half ({len(halves['test'])} originals x {len(names)} edits), band [{low:.2f}, {THRESHOLD}), "
          f"inliers >= {k_min}, coverage >= {c_min}, correlation ({STAT_NAMES[stat]}) >= {r_min} "
          "(chosen on the tune half)\n")
    print("| edit | found at 0.88 | found, 0.88 OR verified | " + " | ".join(f"same, top-{K} only" for K in TOPS) + " |")
    print("|---|---|---|" + "---|" * len(TOPS))
    for e in names:
        print(f"| {e} | {baseline['test']['found'][e]:.2f} | {chosen['test']['found'][e]:.2f} | "
              + " | ".join(f"{topk[K]['found'][e]:.2f}" for K in TOPS) + " |")
    b, c = baseline["test"], chosen["test"]
    print(f"| all but 90/180 | {b['found_main']:.3f} | {c['found_main']:.3f} | "
          + " | ".join(f"{topk[K]['found_main']:.3f}" for K in TOPS) + " |")
    print(f"| pair precision | {b['precision']:.4f} | {c['precision']:.4f} | "
          + " | ".join(f"{topk[K]['precision']:.4f}" for K in TOPS) + " |")
    print(f"| band pairs per 10k images | 0 | {cost['band_pairs_per_10k_images']} | "
          + " | ".join(f"{topk[K]['band_pairs_per_10k_images']}" for K in TOPS) + " |")
    print("tune half, top-K only (TOP_K is chosen here): " + ", ".join(
        f"top-{K}: worst edit {v['worst_edit']:.2f}, all but 90/180 {v['found_main']:.3f}, precision "
        f"{v['precision']:.4f}" for K, v in topk_tune.items()))
    print(f"same-edit copies verified per edit (test): {c['b_per_edit']}")
    print(f"without the photometric check (test): {json.dumps(no_photometric['test'])}")
    print(f"\nhard negatives verified (test half, cosine in band): copy vs unrelated {c['a_verified']}/{c['a_checked']} "
          f"(same class {c['a_same_class_verified']}/{c['a_same_class_checked']}), same-edit copies "
          f"{c['b_verified']}/{c['b_checked']} {c['b_verified_edits']}, collection pairs {c['c_verified']}/{c['c_checked']}"
          f" (same class {c['c_same_class_verified']}/{c['c_same_class_checked']})")
    print(f"inliers (test): {json.dumps(dist)}")
    print(f"cost: {json.dumps(cost)}")
    print("false verifications (test): " + json.dumps(false_verified["test"]))
    res = HERE / "results" / "verify.json"
    if args.embeddings:  # the same suite embedded otherwise: the rule chosen on them, and the shipped rule re-checked
        data = json.loads(res.read_text()) if res.exists() else {}
        shipped = (vf.BAND_LOW, vf.MIN_INLIERS, vf.MIN_COVERAGE, vf.MIN_CORRELATION)
        keys = ("found", "found_main", "precision", "a_verified", "a_checked", "b_verified", "b_checked",
                "c_verified", "c_checked")
        key = args.embeddings.name + (f" split {args.split_seed}" if args.split_seed != 1 else "")
        data.setdefault("embeddings", {})[key] = {
            "date": out["date"], "load_average": out["load_average"], "split_seed": args.split_seed,
            "test_originals": [str(paths[int(rows[i])].relative_to(paths[0].parents[1])) for i in halves["test"]],
            "baseline_test": {k: baseline["test"][k] for k in ("found", "found_main", "precision")},
            "chosen_on_tune": {"band": [low, THRESHOLD], "min_inliers": k_min, "min_coverage": c_min,
                               "min_correlation": r_min, "test": {k: chosen["test"][k] for k in keys},
                               "top3_test": {k: topk[3][k] for k in ("found_main", "worst_edit", "precision")}},
            "shipped_rule": {"rule": shipped, **{h: {k: v for k, v in evaluate(h, *shipped, top=vf.TOP_K).items()
                                                   if k in ("found", "found_main", "precision")} for h in halves}}}
        res.write_text(json.dumps(data, indent=1))
    elif variant_name:  # a cheaper feature setting: a summary under "variants", the main results kept
        data = json.loads(res.read_text()) if res.exists() else {}
        data.setdefault("variants", {})[variant_name] = {
            "date": out["date"], "load_average": out["load_average"], "rule": {
                k: v for k, v in out["rule"].items() if k in ("band", "min_inliers", "min_coverage", "min_correlation")},
            "test": {k: chosen["test"][k] for k in ("found", "found_main", "precision", "a_verified", "a_checked",
                                                    "b_verified", "b_checked", "c_verified", "c_checked")},
            "top_k": {K: {k: topk[K][k] for k in ("found_main", "worst_edit", "precision", "band_pairs_per_10k_images")}
                      for K in TOPS},
            "top_k_tune": topk_tune,
            "cost": {k: cost[k] for k in ("ms_features_per_image_median", "ms_match_per_pair_median")}}
        res.write_text(json.dumps(data, indent=1))
    else:
        if res.exists():
            out["variants"] = json.loads(res.read_text()).get("variants", {})
        res.write_text(json.dumps(out, indent=1))
    print("written", res, f"({time.time() - t_start:.0f} s)")


def end_to_end(db: Path) -> None:
    """Seconds of `dupes` on a real collection: the threshold alone, then verification (the library's candidate
    pairs and checks) without the screening on one thread (OpenCV's own threads left on: what `dupes --verify`
    did before the screening and the thread pool), with it on one thread and on the default thread pool, and
    `review_groups` as `lookalike dupes` runs it; per image and per 10,000 images."""
    from lookalike import Collection
    from lookalike import verify as vf
    from lookalike.dupes import DEFAULT_THRESHOLD, review_groups
    from lookalike.pairs import verified_pairs

    col = Collection.open(db)
    n = len(col)
    loads, runs, verified = [round(os.getloadavg()[0], 2)], {}, {}
    t0 = time.perf_counter()
    plain = review_groups(col, verify=False)
    runs["threshold_only"] = round(time.perf_counter() - t0, 2)
    counted = {}
    real = vf.verify_pairs
    for name, workers, screen in (("verify_no_screen_1_thread", 1, False), ("verify_1_thread", 1, True),
                                  ("verify_threads", None, True)):
        def counting(a, b, screen=screen, **kw):
            counted.update(pairs=len(a), images=len({str(x) for x in list(a) + list(b)}))
            return real(a, b, screen=screen, **kw)

        vf.verify_pairs = counting
        loads.append(round(os.getloadavg()[0], 2))
        c0, t0 = time.process_time(), time.perf_counter()
        verified[name] = len(verified_pairs(col, DEFAULT_THRESHOLD, workers=workers))
        runs[name] = round(time.perf_counter() - t0, 2)
        runs[name + "_cpu"] = round(time.process_time() - c0, 2)
    vf.verify_pairs = real
    loads.append(round(os.getloadavg()[0], 2))
    t0 = time.perf_counter()
    groups = review_groups(col)  # what `lookalike dupes` does by default
    runs["dupes_default"] = round(time.perf_counter() - t0, 2)
    loads.append(round(os.getloadavg()[0], 2))
    out = {"date": time.strftime("%Y-%m-%d %H:%M"), "collection": str(db), "images": n,
           "threads": vf._workers(None), "load_average": loads, "seconds": runs,
           "candidate_pairs": counted.get("pairs", 0), "images_in_candidate_pairs": counted.get("images", 0),
           "verified_pairs": verified, "groups_threshold_only": len(plain), "groups_default": len(groups),
           "seconds_per_10k_images": {k: round(v * 10_000 / n) for k, v in runs.items() if not k.endswith("_cpu")},
           "ms_per_image": {k: round(1000 * v / n, 1) for k, v in runs.items() if not k.endswith("_cpu")}}
    print(json.dumps(out, indent=1))
    res = HERE / "results" / "verify.json"
    data = json.loads(res.read_text()) if res.exists() else {}
    data["end_to_end"] = out
    res.write_text(json.dumps(data, indent=1))
    print("written", res)


if __name__ == "__main__":
    main()
