FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY batchgen ./batchgen
RUN pip install --no-cache-dir .
COPY jobs ./jobs
ENTRYPOINT ["batchgen"]
