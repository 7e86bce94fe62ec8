FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY batchgen ./batchgen
# The s3 extra (s3fs) lets the image write to object storage: --out s3://bucket/prefix.
RUN pip install --no-cache-dir ".[s3]"
COPY jobs ./jobs
ENTRYPOINT ["batchgen"]
