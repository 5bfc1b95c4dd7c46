# rnn-nlp-service image: the API (`python -m app`, the default) and the trainer (`python -m model …`) in one.
#
#   docker build -t rnn-nlp-service .                       # online: CPU-only torch from PyTorch's CPU index
#   docker build --build-arg WHEELHOUSE=/wheels -t rnn-nlp-service .
#                                                           # offline: every wheel from docker/wheelhouse/
#                                                           # (fill it with `make wheelhouse` on a machine online)
#
# Artifacts are not baked in: mount them (read-only) at /artifacts. See docker/compose.yaml.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS builder
# empty: PyPI (+ PyTorch's CPU-only index); a path: install only from the wheels copied there
ARG WHEELHOUSE=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python3 -m venv /opt/venv
# 1. dependencies only, from pyproject.toml (with the onnx extra: docker/requirements.py): a change to the code below does not reinstall torch.
#    `docker/wheelhouse*` copies the wheelhouse's wheels when it exists and nothing when it does not.
COPY pyproject.toml docker/requirements.py docker/wheelhouse* /wheels/
RUN python3 /wheels/requirements.py /wheels/pyproject.toml > /tmp/requirements.txt \
    && /opt/venv/bin/pip install ${WHEELHOUSE:+--no-index --find-links "$WHEELHOUSE"} -r /tmp/requirements.txt \
    && /opt/venv/bin/pip install ${WHEELHOUSE:+--no-index --find-links "$WHEELHOUSE"} "setuptools>=68"
# 2. the project itself (no dependencies: they are all there; setuptools, its build backend, came in step 1)
COPY pyproject.toml README.md ./
COPY model/ model/
COPY app/ app/
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation . \
    && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +

FROM ${BASE_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    RNN_HOST=0.0.0.0 \
    RNN_PORT=8000 \
    RNN_ARTIFACTS_DIR=/artifacts \
    RNN_CACHE_DIR=/cache
# /artifacts and /cache belong to the app user, so named volumes mounted there start out writable for the trainer
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app \
    && mkdir /artifacts /cache \
    && chown app:app /artifacts /cache
COPY --from=builder /opt/venv /opt/venv
WORKDIR /srv
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["python", "-m", "app.healthcheck"]
CMD ["python", "-m", "app"]
