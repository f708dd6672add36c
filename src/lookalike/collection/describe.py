"""What a collection is, as one dict: what ``lookalike info`` prints and the server's ``/api/stats`` serves."""

from __future__ import annotations


def describe(col) -> dict:
    """Size, pipeline, storage, search method, LSH and DBA state of the :class:`~.facade.Collection` ``col``.

    Keys, in this order: db, images, skipped (files that could not be indexed), encoder, profile (the
    named pipeline, or None for another one), views, flip_average, engine, int8_calibration ("shared":
    the int8 model built from the shipped activation ranges; "collection": calibrated on the
    collection's own images, as before the shared calibration; None on a float engine), dim, dtype, format_version,
    roots, generation, segments, search_method (what ``search`` runs by default: "exact" or "lsh"),
    lsh (None, or family, recall, indexed_segments, n_tables, n_bits, n_probes), dba (neighbours, or None)
    and rotations (the turned copies embedded per image for ``dupes``, e.g. ["rot90", "rot180"]; [] when off).
    """
    from ..encoders import LEGACY_VIEWS, profile_of

    m = col.manifest
    views = list(m.get("views", LEGACY_VIEWS))  # made before views existed: centre crop only
    flip = bool(m.get("flip_average", False))
    lsh = col.lsh_summary()
    int8 = m.get("int8_model") or {}
    return {
        "db": str(col.path), "images": len(col), "skipped": len(col.errors), "encoder": m["encoder"],
        "profile": profile_of(m["encoder"], views, flip), "views": views, "flip_average": flip,
        "engine": m.get("engine", "onnx"), "int8_calibration": int8.get("calibration", "collection") if int8 else None,
        "dim": m["dim"], "dtype": m.get("dtype", "float32"),
        "format_version": m["format_version"], "roots": m.get("roots", []), "generation": m["generation"],
        "segments": len(col.segments), "search_method": col.resolve_method("auto"),
        "lsh": None if not lsh else {k: lsh[k] for k in ("family", "recall", "indexed_segments", "n_tables",
                                                          "n_bits", "n_probes")},
        "dba": (m.get("dba") or {}).get("n"), "rotations": list(m.get("rotations") or []),
    }
