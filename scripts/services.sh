#!/usr/bin/env bash
# Make sure the databases the test suite needs are up: PostgreSQL and MariaDB on 127.0.0.1.
# Starts them when installed but stopped; says what is missing when they are not installed.
set -u

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
my_up() { mariadb-admin -h 127.0.0.1 -P 3306 -u root ping >/dev/null 2>&1 || mysqladmin -h 127.0.0.1 -P 3306 -u root ping >/dev/null 2>&1; }
wait_for() { for _ in $(seq 1 60); do "$1" && return 0; sleep 0.5; done; return 1; }

missing=0
# The dashboard test drives Debian's Chromium (headless) through Playwright.
if [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "services: installing Debian's chromium for the dashboard test"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null || { echo "services: apt-get install chromium failed"; missing=1; }
  else
    echo "services: /usr/bin/chromium is missing: install Debian's chromium (apt-get install chromium)."
    missing=1
  fi
fi
# The Spark engine's tests: a JDK (javac builds vigie's Parquet KMS client) and Debian's JDBC
# drivers for PostgreSQL and MariaDB (Spark reads production through them).
spark_pkgs=()
command -v javac >/dev/null 2>&1 || spark_pkgs+=(openjdk-17-jdk-headless)
[ -f /usr/share/java/postgresql.jar ] || spark_pkgs+=(libpostgresql-jdbc-java)
[ -f /usr/share/java/mariadb-java-client.jar ] || spark_pkgs+=(libmariadb-java)
if [ ${#spark_pkgs[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "services: installing ${spark_pkgs[*]} for the Spark engine"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${spark_pkgs[@]}" >/dev/null || { echo "services: apt-get install ${spark_pkgs[*]} failed"; missing=1; }
  else
    echo "services: the Spark engine needs ${spark_pkgs[*]} (Debian packages): install them."
    missing=1
  fi
fi
if ! pg_up; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "services: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start || true
    wait_for pg_up || { echo "services: PostgreSQL did not come up on 127.0.0.1:5432 (see /var/log/postgresql/)"; missing=1; }
  else
    echo "services: PostgreSQL is not installed. Install it (Debian: apt-get install postgresql) and allow trust auth on 127.0.0.1:5432 for user postgres, or point VIGIE_TEST_POSTGRES at a server."
    missing=1
  fi
fi
if ! my_up; then
  if command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ]; then
    echo "services: starting MariaDB"
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
    wait_for my_up || { echo "services: MariaDB did not come up on 127.0.0.1:3306"; missing=1; }
  else
    echo "services: MariaDB is not installed. Install it (Debian: apt-get install mariadb-server) with root allowed without password on 127.0.0.1:3306, or point VIGIE_TEST_MYSQL at a server."
    missing=1
  fi
fi
[ "$missing" = 0 ] && echo "services: PostgreSQL and MariaDB are up; JDK and JDBC drivers present"
exit "$missing"
