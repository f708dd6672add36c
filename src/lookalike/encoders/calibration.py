"""The shared int8 calibration: activation ranges computed once, offline, shipped with the package.

The ``onnx-int8`` engine quantises the float graph with static QDQ per-channel quantisation,
which needs each activation tensor's range. Those ranges are a model artifact, like the
weights: measured once on real photos that no benchmark evaluates (the 467 Caltech-101
background distractors, both views of each: centre crop and whole frame), written to
``int8_ranges_<encoder>.json`` beside this module, and committed. At run time the int8 model
is built from the float graph and that file (:func:`shared_int8_path`), no user image
involved, and cached: the same ranges give the same model and the same embeddings on any
machine with the same ONNX Runtime. Compute them again (a new graph, new weights)::

    python -m lookalike.encoders.calibration /path/to/caltech101_background_distractors

An encoder without a ranges file (Lite1, Lite2, an ``onnx:`` model of your own) has no shared
int8 model: its collections are float by default, and ``--engine onnx-int8`` calibrates one
on 64 of the collection's own images (:meth:`.Encoder.calibrate`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FORMAT = "lookalike-int8-ranges"
HERE = Path(__file__).resolve().parent
# The views each calibration image contributes (every profile's views: a crop and the whole frame).
VIEWS = ("crop", "full")


def ranges_path(encoder_name: str) -> Path:
    """Where the shipped activation ranges of a built-in encoder live (the file may not exist)."""
    return HERE / f"int8_ranges_{encoder_name}.json"


def has_ranges(encoder_name: str) -> bool:
    """Whether ``encoder_name`` ships int8 ranges (so new collections use the int8 engine by default)."""
    from . import REGISTRY

    return encoder_name in REGISTRY and ranges_path(encoder_name).is_file()


def load_ranges(path: Path, weights_sha256: str) -> dict[str, tuple[float, float]]:
    """The ``{tensor: (min, max)}`` of a ranges file; refuses one made for other weights."""
    doc = json.loads(Path(path).read_text())
    if doc.get("format") != FORMAT:
        raise ValueError(f"{path} is not a lookalike int8 ranges file")
    if doc.get("weights_sha256") != weights_sha256:
        raise ValueError(f"{path} holds int8 ranges for other weights (sha256 {str(doc.get('weights_sha256'))[:12]}"
                         f" vs the installed {weights_sha256[:12]}); use --engine onnx, or compute them again: "
                         "python -m lookalike.encoders.calibration")
    return {k: (float(lo), float(hi)) for k, (lo, hi) in doc["ranges"].items()}


def shared_int8_path(enc) -> Path:
    """The int8 model built from ``enc``'s float graph and its shipped ranges (built once, cached).

    Cached in :func:`.engines.cache_dir` under a name keyed by the weights' hash, the graph
    version, the ranges file's hash and the ONNX Runtime version; written atomically.
    """
    import onnxruntime

    from . import engines, file_sha256
    from .lite_onnx import GRAPH_VERSION, ONNX_OPSET

    src = ranges_path(enc.name)
    if not src.is_file():
        raise RuntimeError(f"{enc.name} ships no int8 ranges: calibrate it on your images (Encoder.calibrate) or "
                           "use the onnx engine.")
    path = engines.cache_dir() / (f"{enc.name}-{enc.weights_hash[:16]}-opset{ONNX_OPSET}-g{GRAPH_VERSION}-int8-"
                                  f"{file_sha256(src)[:12]}-ort{onnxruntime.__version__}.onnx")
    if not path.exists():
        t0 = time.perf_counter()
        log.info("building the shared int8 %s model (once; cached at %s)", enc.name, path)
        engines.quantize_int8(enc.fp32_onnx_path(), None, path, ranges=load_ranges(src, enc.weights_hash))
        log.info("built %s in %.1f s", path.name, time.perf_counter() - t0)
    return path


def compute(enc, paths: list[Path]) -> dict:
    """The ranges document of ``enc`` calibrated on the images at ``paths`` (both views of each)."""
    import onnxruntime

    from .. import images
    from . import engines
    from .lite_onnx import GRAPH_VERSION, ONNX_OPSET
    from .preprocess import preprocess

    batch, used = [], []
    for p in paths:
        try:
            im = images.decode(str(p), draft_size=enc.draft_size).image
        except images.DecodeError as err:
            log.warning("skipped %s: %s", p, err)
            continue
        batch.extend(preprocess(im, enc.image_size, view=v) for v in VIEWS)
        used.append(p)
    t0 = time.perf_counter()
    ranges = engines.activation_ranges(enc.fp32_onnx_path(), np.stack(batch))
    return {"format": FORMAT, "encoder": enc.name, "weights_sha256": enc.weights_hash,
            "graph": f"opset{ONNX_OPSET}-g{GRAPH_VERSION}", "onnxruntime": onnxruntime.__version__,
            "method": "MinMax (onnxruntime.quantization), static QDQ, uint8 activations, per-channel int8 weights",
            "views": list(VIEWS), "images": len(used), "inputs": len(batch),
            "sources": sorted({p.parent.name for p in used}), "seconds": round(time.perf_counter() - t0, 1),
            "ranges": {k: [lo, hi] for k, (lo, hi) in ranges.items()}}


def main(argv=None) -> int:
    """``python -m lookalike.encoders.calibration FOLDER... [--encoder NAME]``: write the shipped ranges."""
    from .. import images, storage
    from . import REGISTRY, get_encoder

    ap = argparse.ArgumentParser(prog="python -m lookalike.encoders.calibration", description=__doc__.split("\n")[0])
    ap.add_argument("folders", nargs="+", type=Path, help="folders of real photos no benchmark evaluates")
    ap.add_argument("--encoder", default="efficientnet-lite0", choices=sorted(REGISTRY))
    ap.add_argument("--out", type=Path, help="default: the packaged int8_ranges_<encoder>.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    enc = get_encoder(args.encoder, "onnx")
    paths = sorted(p for f in args.folders for p in images.discover(f))
    doc = compute(enc, paths)
    out = args.out or ranges_path(enc.name)
    storage.atomic_write(out, lambda f: f.write((json.dumps(doc, indent=1) + "\n").encode()))
    print(f"{len(doc['ranges'])} tensor ranges from {doc['images']} images ({doc['inputs']} inputs) in "
          f"{doc['seconds']} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
