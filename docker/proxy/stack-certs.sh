#!/bin/sh
# The stack's certificates, in the stack-certs volume (/certs), made once:
#   ca.crt / ca.key           the stack's own CA (key: root, 0600)
#   proxy.crt / proxy.key     the proxy's TLS certificate, for localhost,
#                             127.0.0.1 and every name in SWEEP_PUBLIC_HOST
#                             (remade when that list changes)
#   dask-node.crt / .key      the Dask scheduler's and workers' certificate
#   dask-client.crt / .key    for people: `sweep run` clients and workers on
#                             other machines (mutual TLS: Dask refuses a peer
#                             without a certificate from ca.crt)
# Usage: stack-certs.sh init       (the `certs` service; idempotent)
#        stack-certs.sh client     (a tar of ca.crt + dask-client.* on stdout:
#                                   docker compose run --rm -T certs client > team-certs.tar)
set -eu
umask 077
cd /certs

leaf() {  # leaf NAME SUBJECT_ALT_NAMES
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" \
        -subj "/CN=$1" -out "$1.csr" 2>/dev/null
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n' "$2" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 -sha256 \
        -extfile "$1.ext" -out "$1.crt" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
    chmod 0644 "$1.crt"
    chmod 0600 "$1.key"
}

proxy_sans() {
    sans="DNS:localhost,IP:127.0.0.1"
    for name in $(echo "${SWEEP_PUBLIC_HOST:-}" | tr ',' ' '); do
        case "$name" in
            *[!0-9.]*) sans="$sans,DNS:$name" ;;
            *) sans="$sans,IP:$name" ;;
        esac
    done
    echo "$sans"
}

case "${1:-init}" in
init)
    if [ ! -s ca.crt ] || [ ! -s ca.key ]; then
        openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 -sha256 \
            -subj "/CN=dropout-sweep stack CA" -keyout ca.key -out ca.crt 2>/dev/null
        chmod 0644 ca.crt
        rm -f proxy.crt dask-node.crt dask-client.crt
        echo "stack-certs: made the stack CA"
    fi
    sans=$(proxy_sans)
    if [ ! -s proxy.crt ] || [ "$(cat proxy.sans 2>/dev/null)" != "$sans" ]; then
        leaf proxy "$sans"
        echo "$sans" > proxy.sans && chmod 0644 proxy.sans
        echo "stack-certs: made the proxy certificate for $sans"
    fi
    [ -s dask-node.crt ] || { leaf dask-node "DNS:dask-scheduler,DNS:localhost,IP:127.0.0.1"; echo "stack-certs: made the Dask node certificate"; }
    [ -s dask-client.crt ] || { leaf dask-client "DNS:dask-client"; echo "stack-certs: made the Dask client certificate"; }
    chmod 0755 /certs
    echo "stack-certs: ready"
    ;;
client)
    tar -cf - --transform 's,^,stack-certs/,' ca.crt dask-client.crt dask-client.key
    ;;
*)
    echo "stack-certs.sh: unknown command '$1' (init or client)" >&2
    exit 2
    ;;
esac
