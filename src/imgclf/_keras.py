"""Import Keras (and TensorFlow under it) without TensorFlow's start-up chatter.

TensorFlow's C++ runtime prints oneDNN and absl notices straight to file descriptor 2
while it loads, before any Python logging setting can apply, so the first import runs
inside ``captured_fds`` (unless ``IMGCLF_DEBUG`` is set). Import errors still raise.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from ._quiet import captured_fds  # noqa: E402

with captured_fds((2,)):
    import keras  # noqa: F401  (re-exported: `from imgclf._keras import keras`)
    import tensorflow  # noqa: F401

if not os.environ.get("IMGCLF_DEBUG"):
    # tf.function retracing notices (a last, smaller batch) are for TensorFlow developers.
    tensorflow.get_logger().setLevel("ERROR")
