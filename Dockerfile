# Two stages: build a wheel, then install it alone on a slim base, every dependency at its locked version.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY requirements/lock.txt requirements/lock.txt
COPY mockgen mockgen
COPY scenarios scenarios
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . && cp requirements/lock.txt /wheels/lock.txt

FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir -c /wheels/lock.txt /wheels/*.whl && rm -rf /wheels \
    && pip check \
    && mockgen validate \
    && useradd --create-home --uid 10001 mockgen
USER mockgen
ENV MOCKGEN_HOST=0.0.0.0 MOCKGEN_PORT=8000 PYTHONUNBUFFERED=1
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["mockgen", "healthcheck"]
CMD ["mockgen", "serve"]
