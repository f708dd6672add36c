"""Retrieval-quality experiments on the development set (Caltech-101 sample), not a test.

    python benchmarks/quality.py

30 images per class (seeded), Faces_easy dropped; Lite0 and Lite2, with and without
horizontal-flip averaging, each plain / centred on the sample mean / centred + alpha-QE.
Never run on the Flowers-17 holdout. Writes benchmarks/results/quality-dev.json.
"""
import json
import time
from pathlib import Path

import numpy as np

from lookalike.runtime import tune_process; tune_process()
from lookalike.encoders import get_encoder
from lookalike.evaluate import class_retrieval
from lookalike.images import decode
from lookalike.search import exact_topk

from pooling import sample  # the same seeded 30-per-class Caltech-101 sample (benchmarks/pooling.py)

paths, labels = sample()
print(len(paths), 'images')
res = {}
def post(X, name):
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    r = class_retrieval(X, labels, 10, expand=0); res[name] = r
    Xc = X - X.mean(0); Xc /= np.linalg.norm(Xc, axis=1, keepdims=True)
    rc = class_retrieval(Xc, labels, 10, expand=0); res[name + ' +centre'] = rc
    S = Xc @ Xc.T; np.fill_diagonal(S, -1); idx = np.argsort(-S, 1)[:, :3]
    w = np.maximum(np.take_along_axis(S, idx, 1), 0) ** 3
    Q = Xc + (w[:, :, None] * Xc[idx]).sum(1); Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    codes = np.unique(np.asarray(labels), return_inverse=True)[1]
    _, top = exact_topk(Xc, Q, 10, exclude=np.arange(len(Xc)))
    print(f"{name:22s} P@10 {r['p_at_k']:.4f} mAP {r['map']:.4f} | +centre P@10 {rc['p_at_k']:.4f} mAP {rc['map']:.4f} | +centre+aQE3 P@10 {(codes[top]==codes[:,None]).mean():.4f}", flush=True)
for name in ('efficientnet-lite0', 'efficientnet-lite2'):
    e = get_encoder(name)
    t = time.time()
    ims = [decode(p, draft_size=e.draft_size).image for p in paths]
    X = e.embed_images(ims)
    Xf = np.concatenate([e.embed_batch(np.stack([e.preprocess(im, flip=True) for im in ims[i:i+32]])) for i in range(0, len(ims), 32)])
    print(name, 'embed time', round(time.time()-t, 1), flush=True)
    post(X, name)
    post(X + Xf, name + ' flip-avg')
(Path(__file__).resolve().parent / 'results' / 'quality-dev.json').write_text(json.dumps(res, indent=1))
