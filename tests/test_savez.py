"""numpy.savez through a mount, past the large-file threshold: zipfile writes each array's
entry and then seeks back to patch its local header, into bytes already streamed to the
bucket. They are still staged (the hot tier has room), so the patch lands, the changed parts
go up again, and the object np.load reads back is whole."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from conftest import make_mount, running

MIB = 1024 * 1024


def test_savez_of_arrays_past_the_threshold_loads_back_equal(tmp_path: Path) -> None:
    (tmp_path / "cold").mkdir()
    m = make_mount(tmp_path, "--bucket", f"file://{tmp_path / 'cold'}",
                   "--large-file-threshold", "32MiB", "--stream-after", "1MiB",
                   "--part-size", "5MiB")
    rng = np.random.default_rng(7)
    arrays = {f"a{i}": rng.random(MIB, dtype=np.float64) for i in range(5)}  # 8 MiB each
    with running(m):
        np.savez(m.path / "arrays.npz", **arrays)
        assert (m.warm / "arrays.npz").is_symlink()  # in the bucket, 40 MiB and more
        size = os.stat(m.path / "arrays.npz").st_size
        assert size > 40 * MIB
        assert (tmp_path / "cold" / "arrays.npz").stat().st_size == size
        with np.load(m.path / "arrays.npz") as loaded:
            assert sorted(loaded.files) == sorted(arrays)
            for name, array in arrays.items():
                np.testing.assert_array_equal(loaded[name], array)
