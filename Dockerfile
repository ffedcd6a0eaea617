# The same environment ./setup.sh builds, as an image. Keep this a plain mirror of setup.sh:
# it runs setup.sh itself, so the two cannot drift.
FROM python:3.11-slim-bookworm

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    CASTWORK_VENV=/opt/castwork/venv \
    CASTWORK_DATA_DIR=/var/lib/castwork \
    # No local torch wheel in the image: take the CPU build from PyTorch's own index.
    CASTWORK_TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# Debian packages (setup.sh would install these too; one layer here caches them).
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends ffmpeg espeak-ng fonts-noto-cjk fontconfig redis-server g++ \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY . /app
RUN ./setup.sh && rm -rf /root/.cache/pip

ENV PATH=/opt/castwork/venv/bin:$PATH
EXPOSE 8765 8000
CMD ["castwork", "doctor"]
