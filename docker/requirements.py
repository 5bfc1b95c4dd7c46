"""Print what the image installs, one requirement a line: the project's dependencies and its `onnx` extra.

    python docker/requirements.py [pyproject.toml] > requirements.txt

The Dockerfile, `make wheelhouse` and docker/ci.sh all read the list from here (standard library only: the
Dockerfile runs it before anything is installed).
"""

import sys
import tomllib

IMAGE_EXTRAS = ("onnx",)  # ONNX Runtime serves the classifier in the image (RNN_RUNTIME=auto)

with open(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml", "rb") as f:
    project = tomllib.load(f)["project"]
requirements = list(project["dependencies"])
for extra in IMAGE_EXTRAS:
    requirements += project["optional-dependencies"][extra]
print("\n".join(requirements))
