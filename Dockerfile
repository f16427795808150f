# One image for the api, the worker and migrate (`pretrainer api | worker | migrate`).
# The base carries no torch: the pin in pyproject.toml (torch==2.14.1) is the only torch the
# image installs. Its default wheel is CUDA-capable, so the same image serves GPU nodes and,
# with no GPU reserved, runs on CPU.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PRETRAINER_HOST=0.0.0.0 PRETRAINER_PORT=8000 PRETRAINER_DATA_DIR=/data \
    PRETRAINER_WEIGHTS_DIR=/weights

WORKDIR /srv
# Dependencies first, in their own layer (read from pyproject.toml, so they are declared once):
# a change to the code does not download torch again.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['text']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt

# Every package the console script imports: app, the Celery worker and the client CLI.
COPY app ./app
COPY worker ./worker
COPY pretrainer_client ./pretrainer_client
RUN pip install --no-deps . && pretrainer --help >/dev/null

VOLUME ["/data", "/weights"]
EXPOSE 8000
ENTRYPOINT ["pretrainer"]
CMD ["api"]
