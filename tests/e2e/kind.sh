#!/usr/bin/env bash
# End-to-end test on a kind cluster (needs docker, kind, kubectl and curl):
#   build and load the image, install the operator, apply samples/image-cache, wait for
#   Ready, upload an image through the Service and download it twice, check the cache holds
#   it, run replica 0's pruner CronJob as a Job, turn the cache off, delete the Glance.
# KEEP_CLUSTER=1 keeps the cluster; CLUSTER names it.
set -euo pipefail

root="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "${root}"
cluster="${CLUSTER:-glance-e2e}"
namespace="openstack"
image="glance-operator:latest"
work="$(mktemp -d)"
port_forward=""
node="${cluster}-control-plane"

step() { printf '\n==> %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

cleanup() {
  local status=$?
  [[ -n "${port_forward}" ]] && kill "${port_forward}" 2>/dev/null || true
  if ((status != 0)); then
    kubectl -n "${namespace}" describe glance glance || true
    kubectl -n glance-operator-system logs deploy/glance-operator --tail=100 || true
    kubectl -n "${namespace}" get all,pvc,secret,events || true
  fi
  [[ "${KEEP_CLUSTER:-0}" == 1 ]] || kind delete cluster --name "${cluster}" || true
  rm -rf -- "${work}"
  exit "${status}"
}
trap cleanup EXIT

for tool in docker kind kubectl curl; do
  command -v "${tool}" >/dev/null || fail "${tool} is not installed"
done

step "create the cluster and load the image"
kind get clusters | grep -qx "${cluster}" || kind create cluster --name "${cluster}" --wait 120s
docker build -t "${image}" .
kind load docker-image "${image}" --name "${cluster}"

step "install the operator"
kubectl apply -k config/default
kubectl -n glance-operator-system rollout status deploy/glance-operator --timeout=180s

step "apply samples/image-cache and wait for Ready"
kubectl create namespace "${namespace}" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "${namespace}" apply -k samples/image-cache
kubectl -n "${namespace}" wait glance/glance --for=condition=Ready --timeout=300s
[[ "$(kubectl -n "${namespace}" get glance glance -o jsonpath='{.status.imageCacheMaxSize}')" == 10000000000 ]] \
  || fail "status.imageCacheMaxSize is not 10000000000"
kubectl -n "${namespace}" get secret glance-config -o jsonpath='{.data.00-config\.conf}' | base64 -d \
  | grep -qx 'image_cache_max_size = 10000000000' || fail "rendered config lacks image_cache_max_size"
for child in statefulset/glance-api service/glance-api service/glance-api-headless \
  cronjob/glance-cache-pruner-0 cronjob/glance-cache-cleaner-0 pvc/image-cache-glance-api-0 pvc/glance-storage; do
  kubectl -n "${namespace}" get "${child}" >/dev/null || fail "${child} missing"
done

step "upload an image through the Service and download it twice"
kubectl -n "${namespace}" port-forward svc/glance-api 19292:9292 >"${work}/port-forward.log" 2>&1 &
port_forward=$!
api="http://127.0.0.1:19292"
for _ in $(seq 1 30); do curl -fsS "${api}/healthcheck" >/dev/null 2>&1 && break; sleep 1; done
head -c $((8 * 1024 * 1024)) /dev/urandom >"${work}/image.raw"
id="$(curl -fsS -X POST "${api}/v2/images" -H 'Content-Type: application/json' \
  -d '{"name": "e2e", "disk_format": "raw", "container_format": "bare"}' | sed -n 's/.*"id":"\([0-9a-f-]*\)".*/\1/p')"
[[ -n "${id}" ]] || fail "image create returned no id"
curl -fsS -X PUT "${api}/v2/images/${id}/file" -H 'Content-Type: application/octet-stream' \
  --data-binary "@${work}/image.raw"
for n in 1 2; do
  curl -fsS "${api}/v2/images/${id}/file" -o "${work}/download-${n}.raw"
  cmp "${work}/image.raw" "${work}/download-${n}.raw" || fail "download ${n} differs"
done

step "the cache holds it"
curl -fsS "${api}/v2/cache" | grep -q "\"image_id\":\"${id}\"" || fail "image ${id} not cached"

step "run replica 0's pruner CronJob as a Job"
kubectl -n "${namespace}" create job prune-now --from=cronjob/glance-cache-pruner-0
kubectl -n "${namespace}" wait job/prune-now --for=condition=Complete --timeout=180s
kubectl -n "${namespace}" logs job/prune-now | grep -q "pruned the image cache" || fail "pruner log lacks its summary"

step "turn the cache off: the CronJobs and the replica's cache volume go"
kill "${port_forward}" && port_forward=""
kubectl -n "${namespace}" patch glance glance --type merge -p '{"spec": {"imageCacheSize": ""}}'
for child in cronjob/glance-cache-pruner-0 cronjob/glance-cache-cleaner-0 pvc/image-cache-glance-api-0; do
  kubectl -n "${namespace}" wait "${child}" --for=delete --timeout=180s || fail "${child} still exists"
done
kubectl -n "${namespace}" wait glance/glance --for=condition=Ready --timeout=300s

# Deletes the Glance and waits until none of its children is left.
delete_glance() {
  kubectl -n "${namespace}" delete glance glance --wait=true --timeout=180s
  local left=""
  for _ in $(seq 1 60); do
    left="$(kubectl -n "${namespace}" get statefulset,deploy,job,svc,secret,pvc,cronjob \
      -l app.kubernetes.io/instance=glance -o name)"
    [[ -z "${left}" ]] && return 0
    sleep 2
  done
  fail "left behind: ${left}"
}

step "delete the Glance: nothing is left"
delete_glance

step "scale-out: MariaDB and volumes that two replicas can share"
kubectl -n "${namespace}" apply -f tests/e2e/mariadb.yaml
kubectl -n "${namespace}" rollout status deploy/mariadb --timeout=300s
# kind's local-path class has no ReadWriteMany: static volumes on the one node stand in
# for a shared filesystem, owned by the glance user of the image.
volumes=(storage cache-0 cache-1)
for volume in "${volumes[@]}"; do
  docker exec "${node}" sh -c "mkdir -p /var/local/glance-e2e/${volume} && chown 42415:42415 /var/local/glance-e2e/${volume}"
  kubectl apply -f - <<PV
apiVersion: v1
kind: PersistentVolume
metadata: {name: glance-e2e-${volume}}
spec:
  storageClassName: e2e-static
  capacity: {storage: 20Gi}
  accessModes: [ReadWriteOnce, ReadWriteMany]
  hostPath: {path: /var/local/glance-e2e/${volume}, type: Directory}
PV
done

step "two replicas, each with its own cache volume, migrated by the db-sync Job"
kubectl -n "${namespace}" apply -f tests/e2e/glance-scale-out.yaml
kubectl -n "${namespace}" wait glance/glance --for=condition=Ready --timeout=600s
kubectl -n "${namespace}" wait job/glance-db-sync --for=condition=Complete --timeout=60s
for child in pod/glance-api-0 pod/glance-api-1 pvc/image-cache-glance-api-0 pvc/image-cache-glance-api-1 \
  cronjob/glance-cache-pruner-1 cronjob/glance-cache-cleaner-1; do
  kubectl -n "${namespace}" get "${child}" >/dev/null || fail "${child} missing"
done

step "upload once, download from each replica: each one's cache fills"
kubectl -n "${namespace}" port-forward svc/glance-api 19292:9292 >"${work}/port-forward.log" 2>&1 &
port_forward=$!
for _ in $(seq 1 30); do curl -fsS "${api}/healthcheck" >/dev/null 2>&1 && break; sleep 1; done
id="$(curl -fsS -X POST "${api}/v2/images" -H 'Content-Type: application/json' \
  -d '{"name": "e2e-scale-out", "disk_format": "raw", "container_format": "bare"}' | sed -n 's/.*"id":"\([0-9a-f-]*\)".*/\1/p')"
[[ -n "${id}" ]] || fail "image create returned no id"
curl -fsS -X PUT "${api}/v2/images/${id}/file" -H 'Content-Type: application/octet-stream' \
  --data-binary "@${work}/image.raw"
kill "${port_forward}" && port_forward=""
for replica in 0 1; do
  kubectl -n "${namespace}" port-forward "pod/glance-api-${replica}" 19293:9292 >"${work}/pod-${replica}.log" 2>&1 &
  port_forward=$!
  pod_api="http://127.0.0.1:19293"
  for _ in $(seq 1 30); do curl -fsS "${pod_api}/healthcheck" >/dev/null 2>&1 && break; sleep 1; done
  curl -fsS "${pod_api}/v2/images/${id}/file" -o "${work}/replica-${replica}.raw"
  cmp "${work}/image.raw" "${work}/replica-${replica}.raw" || fail "download from replica ${replica} differs"
  curl -fsS "${pod_api}/v2/cache" | grep -q "\"image_id\":\"${id}\"" || fail "replica ${replica} did not cache ${id}"
  nodes="$(curl -fsS "${pod_api}/v2/cache/nodes/${id}")"
  kill "${port_forward}" && port_forward=""
done
for replica in 0 1; do
  grep -q "glance-api-${replica}.glance-api-headless.${namespace}.svc" <<<"${nodes}" \
    || fail "cache nodes of ${id} lack replica ${replica}: ${nodes}"
done

step "scale to one replica: the other's CronJobs and cache volume go"
kubectl -n "${namespace}" patch glance glance --type merge -p '{"spec": {"glanceAPI": {"replicas": 1}}}'
for child in cronjob/glance-cache-pruner-1 cronjob/glance-cache-cleaner-1 pvc/image-cache-glance-api-1 pod/glance-api-1; do
  kubectl -n "${namespace}" wait "${child}" --for=delete --timeout=180s || fail "${child} still exists"
done
kubectl -n "${namespace}" get pvc/image-cache-glance-api-0 >/dev/null || fail "replica 0 lost its cache volume"

step "delete the Glance: nothing is left"
delete_glance

printf '\nkind end-to-end: all steps passed\n'
