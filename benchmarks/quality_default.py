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
    args = ap.parse_args()
    from lookalike import evaluate as ev
    from lookalike.encoders import get_encoder
    from lookalike.images import decode

    enc = get_encoder(args.encoder)
    sess, S = tapped_session(enc), enc.image_size
    paths, labels = sample()
    if args.limit:
        paths, labels = paths[:args.limit], labels[:args.limit]
    elif args.images < len(paths):
        keep = np.sort(np.random.default_rng(args.seed).choice(len(paths), args.images, replace=False))
        paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
    t0 = time.time()
    ims = [decode(p).image for p in paths]
    rng = np.random.default_rng(args.seed)
    rows = np.sort(rng.choice(len(paths), args.originals, replace=False))
    edits = [ev.edit_image(ims[r], rng) for r in rows]
    names = list(edits[0])
    edited = [e[n] for n in names for e in edits]  # edit-major: name 0 of every original, name 1, ...
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
        cr = ev.class_retrieval(db, labels, 10)
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
