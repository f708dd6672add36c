"""The torch-free checkpoint reader: the packaged .pth files read exactly, and nothing but tensors is accepted."""

import pickle
import struct
import zipfile

import numpy as np
import pytest

from lookalike.encoders import get_encoder
from lookalike.encoders.checkpoint import MAGIC_NUMBER, PROTOCOL_VERSION, CheckpointError, read_checkpoint


def _legacy_file(path, obj_pickle: bytes, keys: list, storages: list[bytes], numels: list[int]):
    """Write torch's legacy format by hand: magic, version, sys info, object, keys, then each storage."""
    with open(path, "wb") as f:
        for header in (MAGIC_NUMBER, PROTOCOL_VERSION, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        f.write(obj_pickle)
        pickle.dump(keys, f, protocol=2)
        for raw, n in zip(storages, numels):
            f.write(struct.pack("<q", n) + raw)
    return path


def test_packaged_weights_read_exactly_as_torch_loads_them():
    torch = pytest.importorskip("torch")
    for name in ("efficientnet-lite0", "efficientnet-lite2"):
        path = get_encoder(name).weights_path
        ours = read_checkpoint(path)
        ref = torch.load(path, map_location="cpu", weights_only=True)
        assert list(ours) == list(ref)
        for k, v in ref.items():
            assert ours[k].shape == tuple(v.shape) and np.array_equal(ours[k], v.numpy()), k


def test_zip_format_and_non_contiguous_tensors(tmp_path):
    torch = pytest.importorskip("torch")
    state = {"w": torch.arange(24, dtype=torch.float32).reshape(2, 3, 4), "t": torch.arange(12.0).reshape(3, 4).t(),
             "n": torch.tensor(7), "h": torch.ones(3, dtype=torch.float16), "i": torch.arange(5, dtype=torch.int32)}
    state["view"] = state["w"][1, :, 1:3]  # shares w's storage at an offset
    for legacy in (False, True):
        path = tmp_path / f"s{legacy}.pth"
        torch.save(state, path, _use_new_zipfile_serialization=not legacy)
        assert zipfile.is_zipfile(path) != legacy
        ours = read_checkpoint(path)
        for k, v in state.items():
            assert ours[k].dtype == v.numpy().dtype and np.array_equal(ours[k], v.numpy()), (legacy, k)
            assert ours[k].flags.c_contiguous


def test_a_pickle_that_names_code_is_refused(tmp_path):
    """A checkpoint is a pickle: one naming os.system (or any other callable) must never run it."""
    evil = b"\x80\x02cos\nsystem\nq\x00X\x05\x00\x00\x00touchq\x01\x85q\x02Rq\x03."
    path = _legacy_file(tmp_path / "evil.pth", evil, [], [], [])
    with pytest.raises(CheckpointError, match=r"asks for os\.system"):
        read_checkpoint(path)
    with zipfile.ZipFile(tmp_path / "evil.zip.pth", "w") as z:
        z.writestr("archive/data.pkl", evil)
    with pytest.raises(CheckpointError, match="refused"):
        read_checkpoint(tmp_path / "evil.zip.pth")
    builtins_eval = b"\x80\x02c__builtin__\neval\nq\x00X\x04\x00\x00\x001+1q\x01\x85q\x02Rq\x03."
    with pytest.raises(CheckpointError, match="refused"):
        read_checkpoint(_legacy_file(tmp_path / "eval.pth", builtins_eval, [], [], []))


def test_damaged_files_raise_checkpoint_error(tmp_path):
    good = get_encoder("efficientnet-lite0").weights_path.read_bytes()
    for name, data in [("truncated", good[: len(good) // 2]), ("empty", b""), ("text", b"hello, not a checkpoint"),
                       ("bad-magic", pickle.dumps(12345, protocol=2) + good[20:])]:
        path = tmp_path / f"{name}.pth"
        path.write_bytes(data)
        with pytest.raises(CheckpointError):
            read_checkpoint(path)
