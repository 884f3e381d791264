# Source this: starts a throwaway PostgreSQL server on loopback for tests/test_workers.py,
# exports TLBENCH_TEST_POSTGRES (a URL the tests create their databases through) and
# TLBENCH_REQUIRE_POSTGRES=1 (CI fails instead of skipping those tests), and stops the
# server when the sourcing shell exits. Installs Debian's postgresql package when needed.

_tlbench_pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

if [ -z "$(_tlbench_pg_bin)" ]; then
    _sudo=""; [ "$(id -u)" = 0 ] || _sudo="sudo"
    $_sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $_sudo apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
TLBENCH_PG_BIN="$(_tlbench_pg_bin)"
TLBENCH_PG_DATA="$(mktemp -d /tmp/tlbench-pg.XXXXXX)"
_tlbench_pg_as=()
if [ "$(id -u)" = 0 ]; then  # the server refuses to run as root
    chown postgres "$TLBENCH_PG_DATA"
    _tlbench_pg_as=(runuser -u postgres --)
fi
_tlbench_pg_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"${_tlbench_pg_as[@]}" "$TLBENCH_PG_BIN/initdb" -D "$TLBENCH_PG_DATA" -U tlbench --auth=trust -E UTF8 >/dev/null
"${_tlbench_pg_as[@]}" "$TLBENCH_PG_BIN/pg_ctl" -D "$TLBENCH_PG_DATA" -l "$TLBENCH_PG_DATA/server.log" -w -s \
    -o "-c listen_addresses=127.0.0.1 -p $_tlbench_pg_port -k $TLBENCH_PG_DATA -c max_connections=200" start

tlbench_pg_stop() {
    "${_tlbench_pg_as[@]}" "$TLBENCH_PG_BIN/pg_ctl" -D "$TLBENCH_PG_DATA" -w -s -m fast stop || true
    rm -rf "$TLBENCH_PG_DATA"
}
trap tlbench_pg_stop EXIT

export TLBENCH_TEST_POSTGRES="postgresql://tlbench@127.0.0.1:$_tlbench_pg_port/postgres"
export TLBENCH_REQUIRE_POSTGRES=1
echo "PostgreSQL for the tests: $TLBENCH_TEST_POSTGRES"
