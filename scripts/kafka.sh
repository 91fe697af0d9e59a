#!/usr/bin/env bash
# Local Apache Kafka broker (KRaft, one combined broker+controller) for rollguard.
#
#   scripts/kafka.sh fetch            download the broker jars with Maven (cached per version)
#   scripts/kafka.sh start [--fresh]  fetch if needed, format once, start, wait until it answers
#                                     (--fresh wipes the data dir first); idempotent
#   scripts/kafka.sh stop             SIGTERM, wait up to 30 s, then SIGKILL; idempotent
#   scripts/kafka.sh status           exit 0 if running and answering, 3 otherwise
#   scripts/kafka.sh logs [-f] [N]    last N (default 100) lines of the broker log
#
#   --secure (with start, stop, status, logs): a second, secured broker beside the plain one, on
#   KAFKA_SECURE_PORT (default KAFKA_PORT+4, i.e. 9096; controller = that port+1), data in
#   <home>/run-secure-<port>: SASL/SCRAM-SHA-512 users admin (the one super user), gate,
#   executor, approver, producer, analyst, notifier and console, created at format time with generated passwords
#   written to <run dir>/credentials.json and <run dir>/env/<user>.env (mode 0600);
#   StandardAuthorizer with allow.everyone.if.no.acl.found=false. See docs/security.md.
#
# Environment:
#   KAFKA_VERSION         broker version (default below)
#   ROLLGUARD_KAFKA_HOME  cache dir (default <repo>/.cache/kafka): jars in <home>/<version>/libs
#   KAFKA_PORT            client port (default 9092); controller port = KAFKA_PORT+1.
#                         Runtime files: <home>/run (port 9092) or <home>/run-<port> (others),
#                         so a second broker on another port does not share data.
#   KAFKA_SECURE_PORT     client port of the --secure broker (default KAFKA_PORT+4)
#   KAFKA_START_TIMEOUT   seconds to wait for readiness (default 90)
#   KAFKA_HEAP_OPTS       default "-Xms128m -Xmx512m"
#   KAFKA_JVM_OPTS        default "-XX:+UseSerialGC -XX:TieredStopAtLevel=1 ..."
#   MVN                   maven command (default mvn)
# See docs/kafka.md.
set -euo pipefail

# 4.1.2: newest line on which tests/broker/test_broker_smoke.py passes (see docs/kafka.md).
DEFAULT_KAFKA_VERSION=4.1.2
DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1
# Fixed cluster id for throwaway local data: base64url("rollguard-local!") without padding.
CLUSTER_ID=cm9sbGd1YXJkLWxvY2FsIQ

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONF_DIR="$REPO_ROOT/config/kafka"
KAFKA_VERSION="${KAFKA_VERSION:-$DEFAULT_KAFKA_VERSION}"
KAFKA_HOME_DIR="${ROLLGUARD_KAFKA_HOME:-$REPO_ROOT/.cache/kafka}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
if ! [[ "$KAFKA_PORT" =~ ^[0-9]+$ ]] || ((KAFKA_PORT < 1 || KAFKA_PORT > 65534)); then
    echo "kafka.sh: invalid KAFKA_PORT=$KAFKA_PORT" >&2
    exit 2
fi
CONTROLLER_PORT=$((KAFKA_PORT + 1))
START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
STOP_TIMEOUT=30

LIBS_DIR="$KAFKA_HOME_DIR/$KAFKA_VERSION/libs"
if [[ "$KAFKA_PORT" == 9092 ]]; then
    RUN_DIR="$KAFKA_HOME_DIR/run"
else
    RUN_DIR="$KAFKA_HOME_DIR/run-$KAFKA_PORT"
fi
DATA_DIR="$RUN_DIR/data"
LOG_FILE="$RUN_DIR/broker.log"
PID_FILE="$RUN_DIR/broker.pid"
VERSION_FILE="$RUN_DIR/data.version"

SECURE=0
SECURE_USERS=(admin gate executor approver producer analyst notifier console)
SCRAM_MECHANISM=SCRAM-SHA-512

# --secure: switch every path and port above to the secured broker's.
use_secure_broker() {
    SECURE=1
    KAFKA_PORT="${KAFKA_SECURE_PORT:-$((KAFKA_PORT + 4))}"
    if ! [[ "$KAFKA_PORT" =~ ^[0-9]+$ ]] || ((KAFKA_PORT < 1 || KAFKA_PORT > 65534)); then
        echo "kafka.sh: invalid KAFKA_SECURE_PORT=$KAFKA_PORT" >&2
        exit 2
    fi
    CONTROLLER_PORT=$((KAFKA_PORT + 1))
    RUN_DIR="$KAFKA_HOME_DIR/run-secure-$KAFKA_PORT"
    DATA_DIR="$RUN_DIR/data"
    LOG_FILE="$RUN_DIR/broker.log"
    PID_FILE="$RUN_DIR/broker.pid"
    VERSION_FILE="$RUN_DIR/data.version"
}

credentials_file() { echo "$RUN_DIR/credentials.json"; }
secure_props() { echo "$RUN_DIR/server.properties"; }

log() { echo "kafka.sh: $*" >&2; }
die() {
    log "$*"
    exit 1
}

kafka_major() { echo "${KAFKA_VERSION%%.*}"; }

# The logging backend the published kafka_2.13 POM lacks (see config/kafka/pom.xml).
logging_backend() {
    if (($(kafka_major) >= 4)); then echo log4j2; else echo log4j1; fi
}

# log4j2 pinned to what kafka-server <version> itself depends on.
log4j2_version() {
    case "$KAFKA_VERSION" in
        4.0.* | 4.1.0 | 4.1.1) echo 2.24.3 ;;
        *) echo 2.25.3 ;;
    esac
}

# ---------------------------------------------------------------------------------------- fetch

have_libs() { [[ -f "$LIBS_DIR/.complete" ]]; }

cmd_fetch() {
    if have_libs; then
        log "Kafka $KAFKA_VERSION already fetched ($LIBS_DIR)"
        return 0
    fi
    local mvn="${MVN:-mvn}"
    command -v "${mvn%% *}" >/dev/null 2>&1 || die "maven ('$mvn') not found; install maven"
    local tmp="$LIBS_DIR.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    log "fetching Kafka $KAFKA_VERSION ($(logging_backend)) with Maven into $LIBS_DIR ..."
    local t0=$SECONDS
    # shellcheck disable=SC2086  # MVN may carry extra options
    # (sed: Maven 3.8 prints bare ANSI resets even with -B -q.)
    if ! $mvn -B -q -Dstyle.color=never -f "$CONF_DIR/pom.xml" "$DEPENDENCY_PLUGIN:copy-dependencies" \
        -DincludeScope=runtime -DoutputDirectory="$tmp" \
        -Dkafka.version="$KAFKA_VERSION" -Dkafka.logging="$(logging_backend)" \
        -Dlog4j2.version="$(log4j2_version)" 2>&1 | sed -e 's/\x1b\[[0-9;]*m//g' -e '/^[[:space:]]*$/d' >&2; then
        rm -rf "$tmp"
        rmdir "$KAFKA_HOME_DIR/$KAFKA_VERSION" 2>/dev/null || true
        die "maven could not fetch Kafka $KAFKA_VERSION"
    fi
    compgen -G "$tmp/kafka_2.13-$KAFKA_VERSION.jar" >/dev/null ||
        { rm -rf "$tmp"; die "kafka_2.13-$KAFKA_VERSION.jar missing after fetch"; }
    touch "$tmp/.complete"
    rm -rf "$LIBS_DIR"
    mv "$tmp" "$LIBS_DIR"
    log "fetched $(find "$LIBS_DIR" -name "*.jar" | wc -l) jars in $((SECONDS - t0)) s"
}

# ------------------------------------------------------------------------------------- process

# Pid of our broker if it is alive, else nothing. Guards against pid reuse: the process must be
# a kafka.Kafka whose command line names our data dir.
running_pid() {
    [[ -f "$PID_FILE" ]] || return 0
    local pid
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    [[ -r "/proc/$pid/cmdline" ]] || return 0
    local cmdline
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
    if [[ "$cmdline" == *kafka.Kafka* && "$cmdline" == *"log.dirs=$DATA_DIR"* ]]; then
        echo "$pid"
    fi
}

# kill -0 is true for a zombie (the broker is our child while `start` runs): check the state too.
alive() {
    kill -0 "$1" 2>/dev/null || return 1
    local state
    state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true)"
    [[ -n "$state" && "$state" != Z ]]
}

python_bin() {
    if [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then
        echo "$REPO_ROOT/.venv/bin/python"
    else
        command -v python3 || true
    fi
}

# Does the broker answer a metadata request? Uses aiokafka's admin client (what rollguard uses)
# when importable, else a raw Metadata v4 request (stdlib only; v4 works on 3.x and 4.x).
probe() {
    local py
    py="$(python_bin)"
    [[ -n "$py" ]] || die "python3 not found (needed for the readiness probe)"
    local password=""
    if ((SECURE)); then password="$(user_password admin)"; fi
    PROBE_SASL_PASSWORD="$password" PROBE_SASL_MECHANISM="$SCRAM_MECHANISM" \
        "$py" - "127.0.0.1" "$KAFKA_PORT" <<'PY' >/dev/null 2>&1
import asyncio, os, socket, struct, sys

host, port = sys.argv[1], int(sys.argv[2])
# The secured broker: authenticate as its super user (the password is not on the command line).
SASL = {"security_protocol": "SASL_PLAINTEXT", "sasl_plain_username": "admin",
        "sasl_mechanism": os.environ["PROBE_SASL_MECHANISM"],
        "sasl_plain_password": os.environ["PROBE_SASL_PASSWORD"]} \
    if os.environ.get("PROBE_SASL_PASSWORD") else {}

def raw_metadata():
    with socket.create_connection((host, port), timeout=3) as s:
        s.settimeout(5)
        client = b"rollguard-probe"
        # header v1: api_key=3 (Metadata), api_version=4, correlation_id, client_id;
        # body v4: topics=null (-1), allow_auto_topic_creation=false
        body = struct.pack(">hhih", 3, 4, 4242, len(client)) + client + struct.pack(">ib", -1, 0)
        s.sendall(struct.pack(">i", len(body)) + body)
        buf = b""
        while len(buf) < 4:
            chunk = s.recv(4 - len(buf))
            if not chunk:
                raise SystemExit(1)
            buf += chunk
        (size,) = struct.unpack(">i", buf)
        data = b""
        while len(data) < size:
            chunk = s.recv(size - len(data))
            if not chunk:
                raise SystemExit(1)
            data += chunk
        corr, _throttle, n_brokers = struct.unpack(">iii", data[:12])
        if corr != 4242 or n_brokers < 1:
            raise SystemExit(1)

async def admin_metadata():
    from aiokafka.admin import AIOKafkaAdminClient
    admin = AIOKafkaAdminClient(bootstrap_servers=f"{host}:{port}", request_timeout_ms=5000,
                                **SASL)
    await admin.start()
    try:
        await admin.list_topics()
    finally:
        await admin.close()

try:
    import aiokafka  # noqa: F401
except ImportError:
    if SASL:
        raise SystemExit(1)  # the raw probe cannot authenticate: make install first
    raw_metadata()
else:
    asyncio.run(asyncio.wait_for(admin_metadata(), 10))
PY
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

print_log_tail() {
    if [[ -f "$LOG_FILE" ]]; then
        log "last lines of $LOG_FILE:"
        tail -n "${1:-40}" "$LOG_FILE" >&2
    fi
}

java_opts() {
    local opts=()
    # shellcheck disable=SC2206
    opts+=(${KAFKA_HEAP_OPTS:--Xms128m -Xmx512m})
    # shellcheck disable=SC2206
    opts+=(${KAFKA_JVM_OPTS:--XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true})
    if [[ "$(logging_backend)" == log4j2 ]]; then
        opts+=("-Dlog4j2.configurationFile=$CONF_DIR/log4j2.yaml")
    else
        opts+=("-Dlog4j.configuration=file:$CONF_DIR/log4j.properties")
    fi
    printf '%s\n' "${opts[@]}"
}

overrides() {
    printf '%s\n' \
        --override "log.dirs=$DATA_DIR" \
        --override "listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT" \
        --override "advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT" \
        --override "controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT"
}

format_storage() {
    if ((SECURE)); then
        format_secure_storage
        return
    fi
    # StorageTool has no --override: give it a copy of server.properties with our overrides.
    local props="$RUN_DIR/format.properties"
    {
        cat "$CONF_DIR/server.properties"
        echo
        echo "# --- scripts/kafka.sh overrides ---"
        echo "log.dirs=$DATA_DIR"
        echo "listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT"
        echo "advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT"
        echo "controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT"
    } >"$props"
    local -a jopts
    mapfile -t jopts < <(java_opts)
    # -g: ignore an already formatted dir. With static controller.quorum.voters pass neither
    # --standalone nor --initial-controllers.
    if ! java "${jopts[@]}" -cp "$LIBS_DIR/*" kafka.tools.StorageTool format \
        -t "$CLUSTER_ID" -c "$props" -g >"$RUN_DIR/format.log" 2>&1; then
        cat "$RUN_DIR/format.log" >&2
        die "StorageTool format failed"
    fi
}

# ------------------------------------------------------------------------------------ --secure

user_password() {
    local file
    file="$(credentials_file)"
    [[ -f "$file" ]] || return 0
    sed -n "s/^ *\"$1\": \"\([0-9a-f]*\)\".*/\1/p" "$file"
}

# New random passwords for every user: credentials.json (for tests and tools) and one env file
# per user with the ROLLGUARD_* settings of a client (for `set -a; . env/gate.env; set +a`).
write_credentials() {
    local file user password first=1
    file="$(credentials_file)"
    (
        umask 077
        mkdir -p "$RUN_DIR/env"
        {
            echo "{"
            echo "  \"bootstrap_servers\": \"127.0.0.1:$KAFKA_PORT\","
            echo "  \"security_protocol\": \"SASL_PLAINTEXT\","
            echo "  \"sasl_mechanism\": \"$SCRAM_MECHANISM\","
            echo "  \"users\": {"
            for user in "${SECURE_USERS[@]}"; do
                password="$(od -An -tx1 -N18 /dev/urandom | tr -d ' \n')"
                ((first)) || echo ","
                first=0
                printf '    "%s": "%s"' "$user" "$password"
                printf '%s\n' \
                    "ROLLGUARD_BOOTSTRAP_SERVERS=127.0.0.1:$KAFKA_PORT" \
                    "ROLLGUARD_SECURITY_PROTOCOL=SASL_PLAINTEXT" \
                    "ROLLGUARD_SASL_MECHANISM=$SCRAM_MECHANISM" \
                    "ROLLGUARD_SASL_USERNAME=$user" \
                    "ROLLGUARD_SASL_PASSWORD=$password" >"$RUN_DIR/env/$user.env"
            done
            echo
            echo "  }"
            echo "}"
        } >"$file.tmp"
        mv -f "$file.tmp" "$file"
    )
}

# The secured broker's configuration (passwords included, so mode 0600 and never on a command
# line): server.properties, then SASL listeners and the authorizer. Clients use SCRAM-SHA-512
# on SASL_PLAINTEXT; the controller listener uses PLAIN with the admin's static credentials,
# because SCRAM credentials live in the metadata log the controller itself serves.
write_secure_props() {
    local admin
    admin="$(user_password admin)"
    [[ -n "$admin" ]] || die "no admin password in $(credentials_file)"
    (
        umask 077
        {
            cat "$CONF_DIR/server.properties"
            echo
            echo "# --- scripts/kafka.sh --secure ---"
            echo "log.dirs=$DATA_DIR"
            echo "listeners=SASL_PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT"
            echo "advertised.listeners=SASL_PLAINTEXT://127.0.0.1:$KAFKA_PORT"
            echo "controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT"
            echo "listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT"
            echo "inter.broker.listener.name=SASL_PLAINTEXT"
            echo "controller.listener.names=CONTROLLER"
            echo "sasl.enabled.mechanisms=$SCRAM_MECHANISM"
            echo "sasl.mechanism.inter.broker.protocol=$SCRAM_MECHANISM"
            echo "sasl.mechanism.controller.protocol=PLAIN"
            echo "listener.name.sasl_plaintext.sasl.enabled.mechanisms=$SCRAM_MECHANISM"
            echo "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"$admin\";"
            echo "listener.name.controller.sasl.enabled.mechanisms=PLAIN"
            echo "listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"admin\" password=\"$admin\" user_admin=\"$admin\";"
            echo "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer"
            echo "allow.everyone.if.no.acl.found=false"
            echo "super.users=User:admin"
        } >"$(secure_props)"
    )
}

# SCRAM users exist only if they were added when the data dir was formatted: a data dir without
# its credentials file (or the reverse), or one formatted before a user was added to
# SECURE_USERS, is wiped and formatted anew with new passwords.
format_secure_storage() {
    local missing=0 user
    for user in "${SECURE_USERS[@]}"; do
        grep -q "\"$user\"" "$(credentials_file)" 2>/dev/null || missing=1
    done
    if [[ $missing = 1 || ! -f "$DATA_DIR/meta.properties" ]]; then
        rm -rf "$DATA_DIR"
        mkdir -p "$DATA_DIR"
        write_credentials
    fi
    write_secure_props
    [[ -f "$DATA_DIR/meta.properties" ]] && return 0
    local -a jopts scram=()
    mapfile -t jopts < <(java_opts)
    local user
    for user in "${SECURE_USERS[@]}"; do
        scram+=(--add-scram "$SCRAM_MECHANISM=[name=$user,password=$(user_password "$user")]")
    done
    # The passwords are on this short-lived command line only (a local, throwaway test broker).
    if ! java "${jopts[@]}" -cp "$LIBS_DIR/*" kafka.tools.StorageTool format \
        -t "$CLUSTER_ID" -c "$(secure_props)" "${scram[@]}" >"$RUN_DIR/format.log" 2>&1; then
        cat "$RUN_DIR/format.log" >&2
        die "StorageTool format failed"
    fi
}

cmd_start() {
    local fresh=0
    for arg in "$@"; do
        case "$arg" in
            --fresh) fresh=1 ;;
            *) die "start: unknown option $arg" ;;
        esac
    done
    local pid
    pid="$(running_pid)"
    if [[ -n "$pid" ]]; then
        if ((fresh)); then
            log "--fresh: stopping the running broker (pid $pid) first"
            cmd_stop
        elif probe; then
            log "already running (pid $pid) on 127.0.0.1:$KAFKA_PORT"
            return 0
        else
            log "pid $pid is running but not answering yet; waiting"
            wait_ready "$pid"
            return 0
        fi
    fi
    command -v java >/dev/null 2>&1 || die "java not found (need a JDK/JRE 17+)"
    if port_open "$KAFKA_PORT" || port_open "$CONTROLLER_PORT"; then
        die "port $KAFKA_PORT or $CONTROLLER_PORT is in use by another process; set KAFKA_PORT"
    fi
    have_libs || cmd_fetch

    mkdir -p "$RUN_DIR"
    # Throwaway data: wipe on --fresh, or when it was written by another Kafka version
    # (a newer metadata version cannot be read by an older broker).
    if ((fresh)) || { [[ -d "$DATA_DIR" ]] && [[ "$(cat "$VERSION_FILE" 2>/dev/null)" != "$KAFKA_VERSION" ]]; }; then
        log "wiping $DATA_DIR"
        rm -rf "$DATA_DIR"
    fi
    mkdir -p "$DATA_DIR"
    format_storage
    echo "$KAFKA_VERSION" >"$VERSION_FILE"

    if [[ -f "$LOG_FILE" ]]; then mv -f "$LOG_FILE" "$LOG_FILE.1"; fi
    local -a jopts ovr
    mapfile -t jopts < <(java_opts)
    mapfile -t ovr < <(overrides)
    log "starting$( ((SECURE)) && echo " secured") Kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT (controller $CONTROLLER_PORT)"
    START_T0=$(date +%s.%N)
    # setsid: own session, so the broker outlives the calling shell and its Ctrl-C. Both nohup
    # and setsid exec (no fork), so $! is the java pid.
    local config="$CONF_DIR/server.properties"
    if ((SECURE)); then
        # Everything is in the run dir's properties; log.dirs stays on the command line for
        # running_pid.
        config="$(secure_props)"
        ovr=(--override "log.dirs=$DATA_DIR")
    fi
    nohup setsid java "${jopts[@]}" -cp "$LIBS_DIR/*" kafka.Kafka \
        "$config" "${ovr[@]}" >"$LOG_FILE" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$PID_FILE"
    wait_ready "$pid"
}

wait_ready() {
    local pid="$1"
    local t0=${START_T0:-$(date +%s.%N)}
    local deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! alive "$pid"; then
            print_log_tail 60
            rm -f "$PID_FILE"
            die "broker (pid $pid) exited during start-up"
        fi
        if port_open "$KAFKA_PORT" && probe; then
            local t1
            t1=$(date +%s.%N)
            log "ready on 127.0.0.1:$KAFKA_PORT (pid $pid) after $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s"
            return 0
        fi
        sleep 0.25
    done
    print_log_tail 60
    die "broker (pid $pid) not answering after ${START_TIMEOUT}s; it is left running: scripts/kafka.sh stop"
}

cmd_stop() {
    local pid
    pid="$(running_pid)"
    if [[ -z "$pid" ]]; then
        rm -f "$PID_FILE"
        log "not running"
        return 0
    fi
    log "stopping broker (pid $pid)"
    local t0=$SECONDS
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < STOP_TIMEOUT * 5; i++)); do
        alive "$pid" || break
        sleep 0.2
    done
    if alive "$pid"; then
        log "still alive after ${STOP_TIMEOUT}s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            alive "$pid" || break
            sleep 0.1
        done
    fi
    rm -f "$PID_FILE"
    log "stopped in $((SECONDS - t0)) s"
}

cmd_status() {
    local pid
    pid="$(running_pid)"
    if [[ -z "$pid" ]]; then
        echo "kafka $KAFKA_VERSION: not running (127.0.0.1:$KAFKA_PORT)"
        exit 3
    fi
    if probe; then
        echo "kafka: running and answering on 127.0.0.1:$KAFKA_PORT (pid $pid, version $(cat "$VERSION_FILE" 2>/dev/null || echo '?'))$( ((SECURE)) && echo "; secured, credentials in $(credentials_file)")"
        exit 0
    fi
    echo "kafka: pid $pid running but not answering on 127.0.0.1:$KAFKA_PORT"
    exit 3
}

cmd_logs() {
    local follow=0 lines=100
    for arg in "$@"; do
        case "$arg" in
            -f | --follow) follow=1 ;;
            *[!0-9]* | '') die "logs: usage: logs [-f] [N]" ;;
            *) lines="$arg" ;;
        esac
    done
    [[ -f "$LOG_FILE" ]] || die "no log yet ($LOG_FILE)"
    if ((follow)); then
        exec tail -n "$lines" -F "$LOG_FILE"
    fi
    tail -n "$lines" "$LOG_FILE"
}

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

main() {
    local cmd="${1:-}"
    [[ $# -gt 0 ]] && shift
    local -a args=()
    local arg
    for arg in "$@"; do
        if [[ "$arg" == --secure && "$cmd" =~ ^(start|stop|status|logs)$ ]]; then
            use_secure_broker
        else
            args+=("$arg")
        fi
    done
    set -- "${args[@]}"
    case "$cmd" in
        fetch) cmd_fetch "$@" ;;
        start) cmd_start "$@" ;;
        stop) cmd_stop "$@" ;;
        status) cmd_status "$@" ;;
        logs) cmd_logs "$@" ;;
        -h | --help | help) usage ;;
        *)
            usage >&2
            exit 2
            ;;
    esac
}

main "$@"
