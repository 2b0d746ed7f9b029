# syntax=docker/dockerfile:1
# Allot in a container: `docker build -t allot .` (or `podman build`).
# - build stage: Swift's official image; one static executable (the Swift standard library,
#   Foundation and glibc linked in: -static-executable), stripped.
# - run stage: an empty image (scratch) with the binary, the CA bundle for an https upstream
#   and /etc/passwd naming the non-root user. No shell, no curl: Kubernetes' httpGet probes
#   need neither (cluster/deploy/kubernetes/).
# Checked here without a container engine by scripts/static-test.sh: the same build, run in
# an otherwise empty root (allot --version, allot demo --duration 3).
FROM swift:6.3-bookworm AS build
WORKDIR /src
COPY . .
RUN swift build -c release --product allot --static-swift-stdlib -Xswiftc -static-executable \
 && install -D -s .build/release/allot /out/allot \
 && mkdir -p /out/etc/ssl/certs /out/tmp && chmod 1777 /out/tmp \
 && cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/ \
 && echo 'allot:x:65532:65532:allot:/nonexistent:/sbin/nologin' > /out/etc/passwd \
 && echo 'allot:x:65532:' > /out/etc/group

FROM scratch
COPY --from=build /out/ /
USER 65532:65532
ENTRYPOINT ["/allot"]
CMD ["--help"]
