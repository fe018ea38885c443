FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY worker ./worker
COPY bench ./bench
RUN pip install --no-cache-dir .
ENV ARTIFACT_URL=/data/artifacts
CMD ["backprop", "api"]
