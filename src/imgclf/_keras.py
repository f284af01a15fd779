"""Import Keras (and TensorFlow under it) without TensorFlow's start-up chatter.

TensorFlow's C++ runtime prints oneDNN and absl notices straight to file descriptor 2
while it loads, before any Python logging setting can apply; users of a CLI should not
see them. So the first import runs with fd 2 pointed at /dev/null (unless
``IMGCLF_DEBUG`` is set). Python-level import errors still raise normally.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _import_quietly():
    if "tensorflow" in sys.modules or os.environ.get("IMGCLF_DEBUG"):
        import keras

        return keras
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import keras
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    return keras


keras = _import_quietly()
