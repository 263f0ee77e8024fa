#!/usr/bin/env bash
# Neo4j 5.26 Community for the M3KG, without Docker: start | stop | status | restart.
#
# The server is graphdb/server (embedded DBMS + Bolt + HTTP/Browser, jars from Maven Central via
# ~/.m2). `start` builds it when missing or stale, starts it in the background and waits until
# it answers; data persists under .neo4j/ (git-ignored). See docs/neo4j_server.md.
#
# Environment (all optional):
#   NEO4J_PASSWORD            password of user neo4j, 8+ chars (default r2genkg-dev); applied on every start
#   R2GENKG_NEO4J_HOME        data/logs/run directory          (default <repo>/.neo4j)
#   R2GENKG_NEO4J_HOST        listen host                      (default 127.0.0.1)
#   R2GENKG_NEO4J_BOLT_PORT   Bolt port                        (default 7687)
#   R2GENKG_NEO4J_HTTP_PORT   HTTP port, Browser at /browser/  (default 7474)
#   R2GENKG_NEO4J_HEAP        JVM heap, -Xms = -Xmx            (default 1g)
#   R2GENKG_NEO4J_PAGECACHE   Neo4j page cache                 (default 512m)
#   R2GENKG_NEO4J_TIMEOUT     seconds to wait for start / stop (default 180 / 60)
#   JAVA                      java executable, 17 or 21        (default java)
# Exit codes: 0 ok (status: running), 1 failure, 2 usage, 3 status: stopped.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
server_dir="$repo/graphdb/server"
target="$server_dir/target"
main_class=org.r2genkg.Neo4jServer

home="${R2GENKG_NEO4J_HOME:-$repo/.neo4j}"
host="${R2GENKG_NEO4J_HOST:-127.0.0.1}"
bolt_port="${R2GENKG_NEO4J_BOLT_PORT:-7687}"
http_port="${R2GENKG_NEO4J_HTTP_PORT:-7474}"
heap="${R2GENKG_NEO4J_HEAP:-1g}"
java="${JAVA:-java}"
password="${NEO4J_PASSWORD:-r2genkg-dev}"  # the server applies the same default when unset
pid_file="$home/run/neo4j.pid"
ready_file="$home/run/ready"
log_file="$home/logs/server.log"
bolt_url="bolt://$host:$bolt_port"
browser_url="http://$host:$http_port/browser/"

say() { echo "neo4j: $*"; }
die() { echo "neo4j: $*" >&2; exit 1; }

# The jar + classpath (target/, git-ignored) are rebuilt when the pom or the Java source change.
build_key() { cat "$server_dir/pom.xml" "$server_dir"/src/main/java/org/r2genkg/*.java | sha256sum | cut -c1-16; }

build() {
    local key; key=$(build_key)
    mkdir -p "$target"
    exec 9>"$target/.build.lock"
    flock 9  # a second server started at the same time waits for this build
    if [[ -f "$target/classpath.txt" && "$(cat "$target/.build-key" 2>/dev/null)" == "$key" ]]; then
        exec 9>&-; return 0
    fi
    command -v mvn >/dev/null || die "Maven (mvn) is needed to build graphdb/server (apt-get install maven)"
    say "building graphdb/server (a first build downloads ~190 MB of jars into ~/.m2)"
    rm -f "$target/.build-key"
    mvn -B -q -f "$server_dir/pom.xml" package dependency:build-classpath \
        -Dmdep.outputFile="$target/classpath.txt" >"$target/build.log" 2>&1 \
        || { tail -30 "$target/build.log" >&2; die "build failed, full log: $target/build.log"; }
    echo "$key" >"$target/.build-key"
    exec 9>&-  # also releases the lock; the server must not inherit the descriptor
}

# pid of our server for this home, or nothing (a stale pid file or a reused pid does not count)
running_pid() {
    [[ -f "$pid_file" ]] || return 0
    local pid; pid=$(cat "$pid_file")
    if [[ -n "$pid" ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$main_class"; then
        echo "$pid"
    fi
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

http_ok() {
    if command -v curl >/dev/null; then
        [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$host:$http_port/")" == 200 ]]
    else
        python3 -c "import sys,urllib.request as u; sys.exit(u.urlopen(sys.argv[1], timeout=5).status != 200)" \
            "http://$host:$http_port/" 2>/dev/null
    fi
}

# A real Bolt login with the python driver, when the project venv has it.
bolt_login_ok() {
    local py="$repo/.venv/bin/python"
    [[ -x "$py" ]] && "$py" -c 'import neo4j' 2>/dev/null || return 0
    NEO4J_PASSWORD="$password" "$py" - "$bolt_url" <<'PY'
import os, sys
from neo4j import GraphDatabase
with GraphDatabase.driver(sys.argv[1], auth=("neo4j", os.environ["NEO4J_PASSWORD"])) as driver:
    driver.execute_query("RETURN 1")
PY
}

print_urls() {
    if [[ -n "${NEO4J_PASSWORD:-}" ]]; then
        say "Browser  $browser_url   (user neo4j, password from NEO4J_PASSWORD)"
    else
        say "Browser  $browser_url   (user neo4j, password $password: dev default)"
    fi
    say "Bolt     $bolt_url"
}

start() {
    local pid; pid=$(running_pid)
    if [[ -n "$pid" ]]; then
        say "already running (pid $pid, home $home)"; print_urls; return 0
    fi
    for port in "$bolt_port" "$http_port"; do
        if port_open "$host" "$port"; then
            die "port $host:$port is taken by another process (not our server for $home)"
        fi
    done
    (( ${#password} >= 8 )) || die "NEO4J_PASSWORD must have at least 8 characters"
    command -v "$java" >/dev/null || die "Java 17 or 21 is needed (apt-get install openjdk-17-jre-headless)"
    build

    local t0=$SECONDS timeout="${R2GENKG_NEO4J_TIMEOUT:-180}"
    mkdir -p "$home/run" "$home/logs"
    rm -f "$ready_file"
    say "starting Neo4j 5.26 (home $home, log $log_file)"
    # setsid: the server survives the shell that started it; stop is by pid.
    echo "=== $(date '+%F %T') scripts/neo4j.sh start" >>"$log_file"
    setsid "$java" @"$server_dir/jvm.args" -Xms"$heap" -Xmx"$heap" \
        -cp "$target/r2genkg-neo4j-server-0.1.0.jar:$(cat "$target/classpath.txt")" \
        "$main_class" --home "$home" --host "$host" --bolt-port "$bolt_port" --http-port "$http_port" \
        >>"$log_file" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$pid_file"

    until [[ -f "$ready_file" ]] && port_open "$host" "$bolt_port" && http_ok; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -20 "$log_file" >&2
            die "the server exited during start; see $log_file"
        fi
        if (( SECONDS - t0 >= timeout )); then
            tail -20 "$log_file" >&2
            die "not healthy after ${timeout}s (still running as pid $pid; see $log_file, stop with $0 stop)"
        fi
        sleep 0.5
    done
    bolt_login_ok || die "Bolt is up but login as neo4j failed; see $log_file"
    say "started in $((SECONDS - t0)) s (pid $pid)"
    print_urls
}

stop() {
    local pid; pid=$(running_pid)
    if [[ -z "$pid" ]]; then
        rm -f "$pid_file" "$ready_file"; say "not running"; return 0
    fi
    local t0=$SECONDS timeout="${R2GENKG_NEO4J_TIMEOUT:-60}"
    say "stopping pid $pid (SIGTERM)"
    kill -TERM "$pid"
    while kill -0 "$pid" 2>/dev/null; do
        if (( SECONDS - t0 >= timeout )); then
            say "pid $pid still running after ${timeout}s: sending SIGKILL (the store will recover on next start)"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    rm -f "$pid_file" "$ready_file"
    say "stopped in $((SECONDS - t0)) s"
}

status() {
    local pid; pid=$(running_pid)
    if [[ -n "$pid" && -f "$ready_file" ]]; then
        say "running (pid $pid, home $home)"; print_urls; return 0
    elif [[ -n "$pid" ]]; then
        say "starting or unhealthy (pid $pid, no ready marker); see $log_file"; return 3
    fi
    say "stopped (home $home)"; return 3
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    restart) stop; start ;;
    *) echo "usage: $0 start|stop|status|restart" >&2; exit 2 ;;
esac
