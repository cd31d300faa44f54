"""Checks dsv3's .npy writer against NumPy and writes arrays for dsv3's reader: reads in.npy
(written by dsv3), checks it is float32 [2, 3] holding 0.5 * i, and writes out_f32.npy (torch-made
float32 [3, 2] = i - 1.5) and out_i32.npy (int32 [4] = 7 * i).
  npy_roundtrip.py DIR
"""
import os
import sys

import numpy as np
import torch

d = sys.argv[1]
x = np.load(os.path.join(d, "in.npy"))
assert x.dtype == np.float32 and x.shape == (2, 3), (x.dtype, x.shape)
assert np.array_equal(x, 0.5 * np.arange(6, dtype=np.float32).reshape(2, 3)), x
np.save(os.path.join(d, "out_f32.npy"), (torch.arange(6, dtype=torch.float32) - 1.5).reshape(3, 2).numpy())
np.save(os.path.join(d, "out_i32.npy"), 7 * np.arange(4, dtype=np.int32))
