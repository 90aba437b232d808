"""The method: schedule, GaussianDiffusion and ValueDiffusion, conditioning and Batch, normalizers, guidance.

Takes tensors; imports no data, env, training, planning or run-folder code (tests/test_layers.py).
"""
