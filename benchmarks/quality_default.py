"""Which embedding should be the default? Candidates on the development set and the near-duplicate suite.

    python benchmarks/quality_default.py [--encoder efficientnet-lite0] [--originals 100]

Not a test. The same seeded Caltech-101 sample as benchmarks/pooling.py (30 images per class,
Faces_easy dropped; 3,000 images) is the collection; ``--originals`` of them (seeded) are edited
with every edit of the near-duplicate suite (:func:`lookalike.evaluate.edit_image`). One ONNX
Runtime pass (the shipped graph, two more outputs) per view and image gives the last feature map
(and block 10's, 112 channels at stride 16), pooled by average and GeM (p = 3); the candidates
combine them:

* ``crop`` (lookalike up to now), ``full`` (the whole frame squashed to S x S, no crop),
* ``crop+full`` (sum of the two unit vectors), ``crop+full raw`` (sum of the pooled features),
* the same with GeM, with + horizontal flips, and with block 10 concatenated (weight 0.5).

Reports class retrieval (P@10, mAP, leave-one-out) and the suite (group mAP, share found at the
`dupes` threshold 0.92, pair precision there, per-edit recall@10 minimum) and the forward passes
per image (the encode cost, relative to ``crop``). Never run on the Flowers-17 holdout.
Writes benchmarks/results/quality-default.json (merged per encoder).

``--search`` (issue 15, part 2) measures what `search` ranks by default and PCA-whitening instead:

    python benchmarks/quality_default.py --search --cache /tmp/qd-cache.npz

on the whole 3,000-image sample (P@10, mAP) and the 2,000-image one with its near-duplicate
suite: plain cosine, QE 5, DBA 10 + QE 5, and the default re-ranking (:func:`lookalike.expansion.rerank`),
each for average and GeM (p = 3) pooling, and PCA-whitening learned on a separate image set (4,000
seeded CIFAR-10 test images + the 467 Caltech background distractors; never the evaluated
classes). Per candidate: the near-duplicate suite's group mAP, recall@1/@10 of the original as
`search` ranks it, and the lowest threshold (0.005 steps) with pair precision >= 0.99 and group
purity >= 0.99, with the share of each edit found there. Writes benchmarks/results/quality-search.json.

``--int8`` embeds the 2,000 images and the suite with the shipped `balanced` encoder on the float
and the ``onnx-int8`` engine (the default: the shared int8 model built from the activation ranges
shipped with lookalike, calibrated on the Caltech background distractors, never on these images)
and compares P@10 / mAP (plain and default search), group mAP, the share found at the `dupes`
default and at the calibrated threshold; adds ``int8_shared`` to benchmarks/results/quality-default.json.
The embeddings are kept beside ``--cache`` (``STEM-onnx.npy``, ``STEM-onnx-int8-shared.npy``): rows
0..1999 are the images, then one block of ``--originals`` rows per edit (the order of ``edits`` in
the JSON), copies of the originals in the order of ``rows``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from pooling import HERE, sample

GEM_P = 3.0
MID_BLOCK = 10  # last block of stage 5 (112 channels, stride 16) in Lite0
MID_WEIGHT = 0.5


def _unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _edited_set(args, paths):
    """The decoded images, the seeded originals' rows, the edit names and the edited copies (edit-major:
    edit 0 of every original, then edit 1, ...)."""
    from lookalike import evaluate as ev
    from lookalike.images import decode

    ims = [decode(p).image for p in paths]
    rng = np.random.default_rng(args.seed)
    rows = np.sort(rng.choice(len(paths), args.originals, replace=False))
    edits = [ev.edit_image(ims[r], rng) for r in rows]
    names = list(edits[0])
    return ims, rows, names, [e[n] for n in names for e in edits]


def tapped_session(enc):
    """ONNX Runtime session on the shipped graph with two more outputs: the last feature map and block 10's."""
    import onnx
    import onnxruntime as ort
    from onnx import shape_inference

    from lookalike.encoders.engines import threads

    m = shape_inference.infer_shapes(onnx.load(str(enc.fp32_onnx_path())))
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in m.graph.value_info}
    fmap = next(n for n in m.graph.node if n.op_type == "GlobalAveragePool").input[0]
    from lookalike.encoders.lite_arch import check_variant, round_filters

    width = round_filters(112, check_variant(enc.name)[0])  # the stride-16 stage's output (block 10 in Lite0)
    mid = [n.output[0] for n in m.graph.node if shapes.get(n.output[0], [0, 0])[1] == width][-1]
    for name in (fmap, mid):
        m.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"]), [fmap, mid]


def view_features(sess, images, size, view, flip, batch=32):
    """Per image: average- and GeM-pooled last feature map, average-pooled block MID_BLOCK -> 3 arrays."""
    from lookalike.encoders.preprocess import preprocess

    session, names = sess
    avg, gem, mid = [], [], []
    for i in range(0, len(images), batch):
        x = np.stack([preprocess(im, size, flip=flip, view=view) for im in images[i:i + batch]])
        f, m = session.run(names, {"images": x})
        avg.append(f.mean(axis=(2, 3)))
        gem.append((np.maximum(f, 1e-6) ** GEM_P).mean(axis=(2, 3)) ** (1 / GEM_P))
        mid.append(m.mean(axis=(2, 3)))
    return np.concatenate(avg), np.concatenate(gem), np.concatenate(mid)


def candidates(F):
    """F[(view, flip)] = (avg, gem, mid) -> {name: (unit vectors, forward passes per image)}."""
    c, w = F[("crop", False)], F[("full", False)]
    U = _unit
    out = {
        "crop (today)": (U(c[0]), 1),
        "full": (U(w[0]), 1),
        "crop+full": (U(U(c[0]) + U(w[0])), 2),
        "crop+full raw": (U(c[0] + w[0]), 2),
        "crop gem3": (U(c[1]), 1),
        "crop+full gem3": (U(U(c[1]) + U(w[1])), 2),
    }
    if ("crop", True) in F:
        cf, wf = F[("crop", True)], F[("full", True)]
        out.update({
        "crop+flip": (U(c[0] + cf[0]), 2),
        "full+flip": (U(w[0] + wf[0]), 2),
        "crop+full+flips": (U(U(c[0] + cf[0]) + U(w[0] + wf[0])), 4),
        "crop+full gem3+flips": (U(U(c[1] + cf[1]) + U(w[1] + wf[1])), 4),
        })
    cw_mid = U(U(c[2]) + U(w[2]))
    out["crop+full +block10"] = (U(np.hstack([out["crop+full"][0], MID_WEIGHT * cw_mid])), 2)
    return out


def calibrate(ev, db, rows, edits, nd, labels, seed, twins, precision=0.99, purity=0.99):
    """The lowest threshold of the scale with pair precision and group purity >= 0.99, and what it finds."""
    ok = [t for t, v in nd["scale"].items() if v["precision"] >= precision and nd["purity"].get(t, {}).get(
        "purity", 0) >= purity]
    t = float(min(ok)) if ok else 0.95
    at = ev.score_near_duplicates(db, rows, edits, k=10, labels=labels, seed=seed, twins=twins, threshold=t)
    print(f"  calibrated threshold {t:.2f}: found {at['found']:.3f}, precision {at['pair_precision']:.4f}; "
          + ", ".join(f"{e} {v['found']:.2f}" for e, v in at["edits"].items()), flush=True)
    return {"threshold": t, "found": at["found"], "precision": at["pair_precision"],
            "edits": {e: round(v["found"], 3) for e, v in at["edits"].items()}}


def calibrate_fine(ev, db, rows, edits, twins, precision=0.99, purity=0.99, step=0.005, lo=0.5):
    """Lowest threshold (``step`` grid) with pair precision and group purity >= the targets; found per edit there.

    Pair precision counts every copy (90/180-degree turns aside) against every collection image
    but its original and the original's twins, as :func:`lookalike.evaluate.score_near_duplicates`.
    """
    rows = np.asarray(rows)
    related = np.zeros((len(rows), len(db)), bool)
    related[np.arange(len(rows)), rows] = True
    for i, r in enumerate(rows):
        related[i, twins.get(int(r), [])] = True
    pos, negs = {}, []
    for e, V in edits.items():
        pos[e] = np.einsum("ij,ij->i", V, db[rows])
        if e not in ev.ORIENTATION_EDITS:
            sc = V @ db.T
            sc[related] = -np.inf
            negs.append(sc[sc >= lo])
    neg = np.sort(np.concatenate(negs))
    main = np.concatenate([v for e, v in pos.items() if e not in ev.ORIENTATION_EDITS])
    names = list(edits)
    P = np.concatenate([db[rows][:, None]] + [edits[e][:, None] for e in names], axis=1).reshape(-1, db.shape[1])
    group = np.repeat(np.arange(len(rows)), len(names) + 1)
    twin_rows = [t for r in rows for t in twins.get(int(r), [])]
    others = np.setdiff1d(np.arange(len(db)), np.concatenate([rows, np.asarray(twin_rows, int)]))
    pool = np.vstack([P, db[others]])
    pool_group = np.concatenate([group, -np.ones(len(others), int)])
    for t in np.arange(lo, 0.995, step):
        tp, fp = int((main >= t).sum()), len(neg) - int(np.searchsorted(neg, t))
        if tp / max(tp + fp, 1) < precision:
            continue
        pur = ev._purity(pool, pool_group, [float(t)])[f"{t:.2f}"]
        if pur["purity"] >= purity:
            return {"threshold": round(float(t), 3), "found": round(float((main >= t).mean()), 4),
                    "precision": round(tp / max(tp + fp, 1), 5), "false_pairs": fp, "purity": round(pur["purity"], 4),
                    "edits": {e: round(float((v >= t).mean()), 3) for e, v in pos.items()}}
    return None


def whitening(X, power=0.5, shrink=0.1):
    """PCA-whitening learned on ``X`` (unit vectors): mean and projection; eigenvalues + shrink x the largest."""
    mu = X.mean(0)
    Xc = X - mu
    lam, E = np.linalg.eigh((Xc.T @ Xc / len(X)).astype(np.float64))
    lam, E = lam[::-1], E[:, ::-1]
    return mu.astype(np.float32), (E / (lam + shrink * lam[0]) ** power).T.astype(np.float32)


def search_main(args):
    """--search: the default re-ranking and PCA-whitening on the dev sample and the suite."""
    from lookalike import evaluate as ev
    from lookalike.encoders import get_encoder
    from lookalike.images import decode

    from pooling import DATA

    enc = get_encoder(args.encoder)
    sess, S = tapped_session(enc), enc.image_size
    paths, labels = sample()
    keep = np.sort(np.random.default_rng(args.seed).choice(len(paths), args.images, replace=False))
    rest = np.setdiff1d(np.arange(len(paths)), keep)
    z = np.load(args.cache)  # the 2,000 images + their edits (the candidates run writes it)
    n2 = len(keep)

    def pooled(image_paths, cache):
        if cache.exists():
            f = np.load(cache)
            return {k: f[k] for k in f.files}
        out = {}
        for i in range(0, len(image_paths), 500):
            ims = [decode(p).image for p in image_paths[i:i + 500]]
            for v in ("crop", "full"):
                a, g, _ = view_features(sess, ims, S, v, False)
                out.setdefault(f"{v}-avg", []).append(a)
                out.setdefault(f"{v}-gem", []).append(g)
            print(f"  {cache.name}: {i + len(ims)} images", flush=True)
        out = {k: np.concatenate(v) for k, v in out.items()}
        np.savez(cache, **out)
        return out

    extra = pooled([paths[i] for i in rest], args.cache.with_name(args.cache.stem + "-rest1000.npz"))
    cifar = sorted((DATA / "cifar10_test").glob("*/*.jpg"))
    cifar = [cifar[i] for i in sorted(np.random.default_rng(0).choice(len(cifar), 4000, replace=False))]
    distract = sorted((DATA / "caltech101_background_distractors").glob("*.jpg"))
    wset = pooled(cifar + distract, args.cache.with_name(args.cache.stem + "-whitening-set.npz"))
    rng = np.random.default_rng(args.seed)
    rows = np.sort(rng.choice(n2, args.originals, replace=False))
    names = list(ev._edits())
    lab2 = [labels[i] for i in keep]
    twins = ev.find_twins([str(paths[i]) for i in keep], rows, _unit(z["crop-False-0"][:n2]))
    out_rows = []
    print("| candidate | ranking | P@10 (3,000) | mAP (3,000) | P@10 (2,000) | group mAP | min recall@1 | "
          "min recall@10 | threshold | found | per edit |")
    for pool, zi in (("avg", 0), ("gem", 1)):
        def three(F):
            return _unit(_unit(F["crop"]) + _unit(F["full"]))
        full3 = {v: np.zeros((len(paths), z[f"{v}-False-{zi}"].shape[1]), np.float32) for v in ("crop", "full")}
        for v in ("crop", "full"):
            full3[v][keep] = z[f"{v}-False-{zi}"][:n2]
            full3[v][rest] = extra[f"{v}-{pool}"]
        X3 = three(full3)
        X2 = three({v: z[f"{v}-False-{zi}"] for v in ("crop", "full")})
        W = three({v: wset[f"{v}-{pool}"] for v in ("crop", "full")})
        variants = {"": (X3, X2)}
        for power, shrink in ((0.5, 0.1), (0.25, 0.01)):
            mu, P = whitening(W, power, shrink)
            variants[f" + PCA-whitening (power {power}, shrink {shrink})"] = (_unit((X3 - mu) @ P.T),
                                                                              _unit((X2 - mu) @ P.T))
        for vname, (Y3, Y2) in variants.items():
            db, E = Y2[:n2], Y2[n2:].reshape(len(names), len(rows), -1)
            edits = {e: E[i] for i, e in enumerate(names)}
            cal = calibrate_fine(ev, db, rows, edits, twins)
            rankings = {"plain": {"expand": 0}, "QE 5": {"expand": 5}, "DBA 10 + QE 5": {"expand": 5, "dba": 10},
                        "default re-ranking": {}}
            if vname:
                rankings = {k: v for k, v in rankings.items() if k in ("plain", "default re-ranking")}
            for rname, kw in rankings.items():
                c3 = ev.class_retrieval(Y3, labels, 10, **kw)
                c2 = ev.class_retrieval(db, lab2, 10, **kw)
                nd = ev.score_near_duplicates(db, rows, edits, k=10, labels=lab2, seed=args.seed, twins=twins,
                                              reranked=not kw)
                main_edits = [e for e in names if e not in ev.ORIENTATION_EDITS]
                r1 = min((nd["edits"][e]["recall_at_1"], e) for e in main_edits)
                r10 = min((nd["edits"][e]["recall_at_10"], e) for e in main_edits)
                row = {"encoder": args.encoder, "pool": pool, "candidate": f"crop+full {pool}{vname}", "ranking": rname,
                       "p10_3000": round(c3["p_at_k"], 4), "map_3000": round(c3["map"], 4),
                       "p10_2000": round(c2["p_at_k"], 4), "map_2000": round(c2["map"], 4),
                       "group_map": round(nd["group_map"], 4), "min_recall_at_1": [round(r1[0], 3), r1[1]],
                       "min_recall_at_10": [round(r10[0], 3), r10[1]],
                       "recall": {e: [round(v["recall_at_1"], 3), round(v["recall_at_10"], 3)]
                                  for e, v in nd["edits"].items()},
                       "calibrated": cal}
                out_rows.append(row)
                per = " ".join(f"{e} {v:.2f}" for e, v in cal["edits"].items()) if cal else "-"
                print(f"| crop+full {pool}{vname} | {rname} | {row['p10_3000']:.3f} | {row['map_3000']:.3f} | "
                      f"{row['p10_2000']:.3f} | {row['group_map']:.3f} | {r1[0]:.2f} ({r1[1]}) | {r10[0]:.2f} ({r10[1]}) "
                      f"| {cal['threshold'] if cal else '-'} | {cal['found'] if cal else '-'} | {per} |", flush=True)
    out = HERE / "results" / "quality-search.json"
    out.write_text(json.dumps({"benchmark": "quality-search", "date": time.strftime("%Y-%m-%d %H:%M"),
                               "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared VM)",
                               "load_average": os.getloadavg()[0], "images": [len(paths), n2],
                               "originals": len(rows), "whitening_set": {"cifar10_test": len(cifar),
                                                                         "caltech101_background_distractors":
                                                                         len(distract)},
                               "rows": out_rows}, indent=1))
    print("written", out)


def int8_main(args):
    """--int8: the default profile on the onnx-int8 engine (the shared model) vs float."""
    from lookalike import evaluate as ev
    from lookalike.encoders import PROFILES, get_encoder

    prof = PROFILES["balanced"]
    paths, labels = sample()
    keep = np.sort(np.random.default_rng(args.seed).choice(len(paths), args.images, replace=False))
    paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
    ims, rows, names, edited = _edited_set(args, paths)
    twins = ev.find_twins([str(p) for p in paths], rows, _fp32_db(args, len(paths)))
    out = {}
    suffix = {"onnx": "-onnx.npy", "onnx-int8": "-onnx-int8-shared.npy"}
    for engine in ("onnx", "onnx-int8"):
        cache = args.cache.with_name(args.cache.stem + suffix[engine])
        if cache.exists():
            X = np.load(cache)
        elif engine == "onnx":  # the candidates run's crop + full is the float balanced embedding
            z = np.load(args.cache)
            X = _unit(_unit(z["crop-False-0"]) + _unit(z["full-False-0"])).astype(np.float32)
            np.save(cache, X)
        else:
            enc = get_encoder(prof.encoder, engine, views=prof.views)  # int8: the shared model, no calibration here
            t0 = time.time()
            X = enc.embed_images(ims + edited)
            print(f"{engine}: {len(X)} images embedded in {time.time() - t0:.0f} s", flush=True)
            np.save(cache, X)
        n = len(ims)
        db, E = X[:n], X[n:].reshape(len(names), len(rows), -1)
        ed = {e: E[i] for i, e in enumerate(names)}
        plain = ev.class_retrieval(db, labels, 10, expand=0)
        default = ev.class_retrieval(db, labels, 10)
        nd = ev.score_near_duplicates(db, rows, ed, k=10, labels=labels, seed=args.seed, twins=twins)
        cal = calibrate_fine(ev, db, rows, ed, twins)
        out[engine] = {"p10": round(plain["p_at_k"], 4), "map": round(plain["map"], 4),
                       "p10_default_search": round(default["p_at_k"], 4), "map_default_search": round(default["map"], 4),
                       "group_map": round(nd["group_map"], 4), "found_at_default": round(nd["found"], 4),
                       "precision_at_default": round(nd["pair_precision"], 5), "threshold": nd["threshold"],
                       "calibrated": cal}
        print(engine, json.dumps(out[engine]), flush=True)
    if "onnx-int8" in out:
        a, b = (np.load(args.cache.with_name(args.cache.stem + suffix[e])) for e in ("onnx", "onnx-int8"))
        cos = np.einsum("ij,ij->i", a, b)
        out["cosine_int8_vs_float"] = {"median": round(float(np.median(cos)), 4), "min": round(float(cos.min()), 4)}
        print(out["cosine_int8_vs_float"])
    res = HERE / "results" / "quality-default.json"
    data = json.loads(res.read_text()) if res.exists() else {}
    data["int8_shared"] = {"date": time.strftime("%Y-%m-%d %H:%M"), "profile": "balanced", "images": len(paths),
                           "originals": len(rows), "calibration": "shared (caltech101_background_distractors)",
                           "load_average": round(os.getloadavg()[0], 1), **out}
    res.write_text(json.dumps(data, indent=1))


def _fp32_db(args, n):
    z = np.load(args.cache)
    return _unit(z["crop-False-0"][:n])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoder", default="efficientnet-lite0")
    ap.add_argument("--originals", type=int, default=100)
    ap.add_argument("--images", type=int, default=2000, help="seeded subset of the 3,000-image sample")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, help="keep the pooled features in this .npz (a rerun only scores)")
    ap.add_argument("--no-flips", action="store_true", help="skip the mirrored passes (half the time)")
    ap.add_argument("--calibrate", default="crop (today),crop+full",
                    help="candidates whose per-edit share found is also reported at their calibrated threshold")
    ap.add_argument("--limit", type=int, default=0, help="only the first N images (a smoke run; writes nothing)")
    ap.add_argument("--search", action="store_true", help="the default re-ranking and PCA-whitening (needs --cache "
                    "from a candidates run of the same --images/--originals/--seed)")
    ap.add_argument("--int8", action="store_true", help="the default profile on the int8 engine vs float (needs "
                    "--cache from a candidates run, for the twins)")
    args = ap.parse_args()
    if args.search:
        return search_main(args)
    if args.int8:
        return int8_main(args)
    from lookalike import evaluate as ev
    from lookalike.encoders import get_encoder

    enc = get_encoder(args.encoder)
    sess, S = tapped_session(enc), enc.image_size
    paths, labels = sample()
    if args.limit:
        paths, labels = paths[:args.limit], labels[:args.limit]
    elif args.images < len(paths):
        keep = np.sort(np.random.default_rng(args.seed).choice(len(paths), args.images, replace=False))
        paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
    t0 = time.time()
    ims, rows, names, edited = _edited_set(args, paths)
    print(f"{len(paths)} images, {len(rows)} originals x {len(names)} edits ({time.time() - t0:.0f} s)", flush=True)
    F, t0 = {}, time.time()
    if args.cache and args.cache.exists():
        z = np.load(args.cache)
        F = {(v, f): tuple(z[f"{v}-{f}-{i}"] for i in range(3)) for v in ("crop", "full") for f in (False, True)
             if f"{v}-{f}-0" in z}
    for view in ("crop", "full"):
        for flip in (False,) if args.no_flips else (False, True):
            if (view, flip) not in F:
                F[(view, flip)] = view_features(sess, ims + edited, S, view, flip)
                print(view, flip, f"{time.time() - t0:.0f} s", flush=True)
    if args.cache and not args.cache.exists():
        np.savez(args.cache, **{f"{v}-{f}-{i}": a for (v, f), arrs in F.items() for i, a in enumerate(arrs)})
    n = len(ims)
    # the collection's own copies of an original (a pixel check): not unrelated pairs
    twins = ev.find_twins([str(p) for p in paths], rows, _unit(F[("crop", False)][0][:n]))
    print("twins in the collection:", twins, flush=True)
    res_rows = []
    print("| candidate | passes | P@10 | mAP | group mAP | found @0.92 | precision @0.92 | min recall@10 (edit) |")
    for name, (X, passes) in candidates(F).items():
        db, E = X[:n], X[n:].reshape(len(names), len(rows), -1)
        cr = ev.class_retrieval(db, labels, 10, expand=0)
        nd = ev.score_near_duplicates(db, rows, {e: E[i] for i, e in enumerate(names)}, k=10, labels=labels,
                                      seed=args.seed, twins=twins)
        worst = min((v["recall_at_10"], e) for e, v in nd["edits"].items() if e not in ev.ORIENTATION_EDITS)
        row = {"encoder": args.encoder, "candidate": name, "forward_passes": passes,
               "p10": round(cr["p_at_k"], 4), "map": round(cr["map"], 4), "near_dup": nd}
        if name in args.calibrate.split(","):
            row["calibrated"] = calibrate(ev, db, rows, {e: E[i] for i, e in enumerate(names)}, nd, labels,
                                          args.seed, twins)
        res_rows.append(row)
        print(f"| {name} | {passes} | {cr['p_at_k']:.3f} | {cr['map']:.3f} | {nd['group_map']:.3f} | "
              f"{nd['found']:.3f} | {nd['pair_precision']:.4f} | {worst[0]:.2f} ({worst[1]}) |", flush=True)
    if args.limit:
        return
    out = HERE / "results" / "quality-default.json"
    old = json.loads(out.read_text())["rows"] if out.exists() else []
    rows_all = [r for r in old if r["encoder"] != args.encoder] + res_rows
    prev = json.loads(out.read_text()) if out.exists() else {}
    out.write_text(json.dumps({**prev, "benchmark": "quality-default", "date": time.strftime("%Y-%m-%d"),
                               "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared VM)",
                               "images": len(paths), "originals": len(rows), "edits": names, "rows": rows_all},
                              indent=1))
    print("written", out)


if __name__ == "__main__":
    main()
