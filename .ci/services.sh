#!/usr/bin/env bash
# Prepares every service the tests need, idempotently: starts a service that is not listening,
# installs the Debian tools the interoperability tests use, and applies the server settings the
# connectors need. Safe to run again and again; used by .ci/run and by developers.
set -euo pipefail

log() { printf '[services] %s\n' "$*"; }

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port name
  for _ in $(seq 1 120); do listening "$1" && return 0; sleep 0.5; done
  log "$2 did not start listening on port $1"; return 1
}

ensure() { # name port start-command...
  local name=$1 port=$2; shift 2
  if listening "$port"; then log "$name is up on $port"; return 0; fi
  log "starting $name"
  bash -c "$*" || true
  wait_port "$port" "$name"
}

apt_updated=0
need_pkg() { # command package
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
  log "installing $2"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

need_pkg kcat kcat
need_pkg mosquitto_sub mosquitto-clients
need_pkg redis-cli redis-tools
need_pkg chromium chromium # browser tests (playwright-core drives Debian's build; no browser download)

ensure postgresql 5432 'pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start'
ensure mariadb 3306 'start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd'
ensure redis 6379 'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log'
ensure rabbitmq 5672 'rabbitmq-server -detached'
ensure mosquitto 1883 'mosquitto -d -c /etc/mosquitto/mosquitto.conf'
ensure nats 4222 'start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log'

# PostgreSQL logical replication (the postgres connector and its tests, which run in parallel
# and each hold a slot or two while they run).
pg_setting() { psql -h 127.0.0.1 -U postgres -d test -tAc "show $1"; }
pg_restart=0
if [ "$(pg_setting wal_level)" != logical ]; then
  psql -h 127.0.0.1 -U postgres -d test -qc "ALTER SYSTEM SET wal_level = logical"
  pg_restart=1
fi
for setting in max_replication_slots max_wal_senders; do
  if [ "$(pg_setting $setting)" -lt 40 ]; then
    psql -h 127.0.0.1 -U postgres -d test -qc "ALTER SYSTEM SET $setting = 40"
    pg_restart=1
  fi
done
if [ "$pg_restart" = 1 ]; then
  log "applying PostgreSQL settings (wal_level=logical, 40 slots and senders): restarting it"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main restart
  wait_port 5432 postgresql
fi

# RabbitMQ answers on its port before it accepts AMQP sessions; wait until it does.
for _ in $(seq 1 60); do rabbitmqctl -q await_startup >/dev/null 2>&1 && break; sleep 1; done

# MariaDB row-based binary log with GTIDs (the mysql connector and its tests). Writes the
# settings once, and restarts MariaDB only while binary logging is still off.
mariadb_binlog_cnf=/etc/mysql/mariadb.conf.d/60-evpub-binlog.cnf
if [ ! -f "$mariadb_binlog_cnf" ]; then
  mkdir -p /etc/mysql/mariadb.conf.d
  cat >"$mariadb_binlog_cnf" <<'CNF'
# evpub: row-based binary log with full row images and column metadata (mysql connector).
[mariadbd]
log_bin = mysql-bin
binlog_format = ROW
binlog_row_image = FULL
binlog_row_metadata = FULL
server_id = 1
binlog_expire_logs_seconds = 604800
CNF
fi
grep -q '^!includedir /etc/mysql/mariadb.conf.d' /etc/mysql/my.cnf ||
  printf '\n!includedir /etc/mysql/mariadb.conf.d/\n' >>/etc/mysql/my.cnf
if [ "$(mariadb -uroot -h 127.0.0.1 -N -e 'select @@log_bin')" != 1 ]; then
  log "enabling the MariaDB binary log (ROW) and restarting it"
  mariadb-admin -uroot -h 127.0.0.1 shutdown
  for _ in $(seq 1 120); do start-stop-daemon --status --exec /usr/sbin/mariadbd || break; sleep 0.5; done
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  wait_port 3306 mariadb
  for _ in $(seq 1 60); do mariadb -uroot -h 127.0.0.1 -e 'select 1' >/dev/null 2>&1 && break; sleep 0.5; done
fi
# Tests that start 'beginning' read the binary log from its oldest file: keep only the last hour
# of earlier runs, so the suite does not slow down as the machine's binlog grows.
mariadb -uroot -h 127.0.0.1 -e "FLUSH BINARY LOGS; PURGE BINARY LOGS BEFORE NOW() - INTERVAL 1 HOUR" ||
  log "could not purge old MariaDB binary logs (not fatal)"

log "all services ready"
