# One image for the agent worker and the token server (docker-compose.yml picks the command).
FROM node:20-bookworm-slim AS web
WORKDIR /app/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN npm run build

FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir uv
WORKDIR /app
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project
# llama.cpp for this image's target CPUs: AVX2 by default (override with --build-arg LLAMA_CMAKE_ARGS=...).
# AMX stays off: some VMs advertise it and then fault on use.
ARG LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAVA_BUILD=OFF"
RUN CMAKE_ARGS="$LLAMA_CMAKE_ARGS" uv pip install --no-cache --no-deps llama-cpp-python==0.3.36
COPY agent agent
COPY token_server token_server
COPY --from=web /app/web/dist web/dist
ENV PATH="/app/.venv/bin:$PATH" PYTHONUNBUFFERED=1
RUN python -m agent.models
CMD ["python", "-m", "agent.main", "start"]
