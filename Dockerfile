# One image for the api and the worker. The base carries CUDA-capable torch for GPU nodes;
# the same image runs CPU-only when no GPU is reserved.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PRETRAINER_HOST=0.0.0.0 PRETRAINER_PORT=8000 PRETRAINER_DATA_DIR=/data

WORKDIR /srv
COPY pyproject.toml README.md ./
COPY app ./app
COPY worker ./worker
RUN pip install --no-cache-dir '.[text]'

VOLUME ["/data"]
EXPOSE 8000
ENTRYPOINT ["pretrainer"]
CMD ["api"]
