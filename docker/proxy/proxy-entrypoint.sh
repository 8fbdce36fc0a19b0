#!/bin/sh
# Writes nginx.conf for this start and runs nginx in the foreground.
#   SWEEP_BIND_ADDRESS  where the ports are published (only for the mode below)
#   SWEEP_TLS           auto (default): TLS unless SWEEP_BIND_ADDRESS is a
#                       loopback address; on; off (only allowed on loopback)
# Beyond loopback it refuses to start with a development password: every
# secret in /run/secrets must be 12 characters or more and not a default.
set -eu

case "${SWEEP_BIND_ADDRESS:-127.0.0.1}" in
    127.*|localhost|::1|"[::1]") public=no ;;
    *) public=yes ;;
esac
fail() { echo "proxy: $*" >&2; exit 1; }

tls=${SWEEP_TLS:-auto}
case "$tls" in
    auto) [ "$public" = yes ] && tls=on || tls=off ;;
    on|off) ;;
    *) fail "SWEEP_TLS must be auto, on or off, not '$tls'" ;;
esac
if [ "$public" = yes ]; then
    [ "$tls" = on ] || fail "SWEEP_TLS=off is refused with SWEEP_BIND_ADDRESS=$SWEEP_BIND_ADDRESS: logins would cross the network in clear"
    for secret in /run/secrets/*; do
        [ -f "$secret" ] || continue
        value=$(cat "$secret")
        case "$value" in
            postgres|mlflow|optuna|admin|password|change-me*|"")
                fail "refusing to publish on $SWEEP_BIND_ADDRESS: secret $(basename "$secret") is a development password; run docker/new-env.sh (docs/team.md)" ;;
        esac
        [ "${#value}" -ge 12 ] || fail "refusing to publish on $SWEEP_BIND_ADDRESS: secret $(basename "$secret") is shorter than 12 characters"
    done
fi

cert=/certs/proxy.crt key=/certs/proxy.key
if [ -s /own/tls.crt ] && [ -s /own/tls.key ]; then
    cert=/own/tls.crt key=/own/tls.key   # the team's own certificate (SWEEP_TLS_CERT/SWEEP_TLS_KEY)
fi
if [ "$tls" = on ]; then
    [ -s "$cert" ] || fail "TLS is on but $cert is missing (the certs service makes it)"
    ssl=" ssl"
    ssl_conf="ssl_certificate $cert; ssl_certificate_key $key; ssl_protocols TLSv1.2 TLSv1.3;"
else
    ssl="" ssl_conf=""
fi
sed -e "s|@SSL@|$ssl|g" -e "s|@SSL_CONF@|$ssl_conf|g" /etc/nginx/nginx.conf.template > /etc/nginx/nginx.conf
echo "proxy: TLS $tls, published on ${SWEEP_BIND_ADDRESS:-127.0.0.1}"
exec nginx -g "daemon off;"
