# One image for every process of the coupon service: the api (default), the worker and the migrations.
# Node 24 runs the TypeScript sources directly (type stripping), so "build" means install + type-check;
# nothing is emitted. The runtime stage has production dependencies only and runs node itself, never npm.
ARG NODE_IMAGE=node:24.21.0-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY worker ./worker
RUN npx tsc --noEmit -p tsconfig.build.json

FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund \
 && npm cache clean --force
COPY tsconfig.json ./
# Copied from the build stage so the image only ships sources that passed the type-check.
COPY --from=build /app/src ./src
COPY --from=build /app/worker ./worker
# The node user of the official image, numeric so runAsNonRoot can be verified by the kubelet.
USER 1000:1000
# api 8080 (the worker listens on 8081 when run with args ["worker/main.ts"])
EXPOSE 8080 8081
ENTRYPOINT ["node"]
CMD ["src/api/main.ts"]
